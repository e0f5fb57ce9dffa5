"""Notebook 14's retrieval kit, beside the notebook it serves: the metrics (`metrics`), nearest-neighbour
search at scale (`search`), CUB-200-2011 (`cub`) and the bookkeeping of a fair comparison (`protocol`)."""
