"""`python -m app`: serve the draw-a-digit page (see `python -m app --help`)."""
import sys

from app.webapp import main

sys.exit(main())
