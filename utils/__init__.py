"""Helpers shared by the deep-metric-learning notebooks: data, models, loss heads, training, plots."""
from __future__ import annotations

__version__ = "0.1.0"

# The repository's public location: the notebooks' Colab badges and Colab set-up cells derive from it
# (scripts/colab_cells.py writes them; a test checks they agree).
GITHUB_REPO = "dml-notebooks/deep-metric-learning"
GITHUB_BRANCH = "main"
