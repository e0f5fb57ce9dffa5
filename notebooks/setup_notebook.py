"""The notebooks' set-up, imported by their first code cell: this clone's `utils` first on the import path
(never another package of that name), and one plot style for every figure."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the clone
sys.path.insert(0, str(ROOT))
if "utils" in sys.modules and Path(sys.modules["utils"].__file__).resolve().parent != ROOT / "utils":
    del sys.modules["utils"]  # a different package called `utils` was imported earlier in this kernel

import utils  # noqa: E402
from utils import plot  # noqa: E402

assert Path(utils.__file__).resolve().parent == ROOT / "utils", f"a different 'utils' was imported: {utils.__file__}"
plot.style()
