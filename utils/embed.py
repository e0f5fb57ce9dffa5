"""Embeddings cached on disk, and their 2-d projections (t-SNE, UMAP). The numbers that back up the pictures (kNN
accuracy, silhouette) are notebook 05's lesson cell, `utils.neighbourhoods`."""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
import torch

from . import train
from .data import atomic_save, cache_dir

PROJECTIONS = ("tsne", "umap")


# ----------------------------------------------------------------------------- cached embeddings
def embedding_path(run: train.Trained, x: torch.Tensor):
    """Where `embeddings` caches `run`'s embeddings of `x`: keyed by the run and the images' content.

    The shape and element type are hashed with the bytes, so a reshaped or re-typed copy of the same
    bytes never matches.
    """
    meta = torch.tensor([*x.shape, x.element_size(), int(x.is_floating_point())], dtype=torch.int64)
    return cache_dir() / "embeddings" / f"{run.key}-{train.data_fingerprint(x, meta)}.pt"


def embeddings(run: train.Trained, x: torch.Tensor, bs: int = 1024, cache: bool = True) -> torch.Tensor:
    """`run.model`'s embeddings of `x` (float32, CPU), cached on disk under the run's key and `x`'s hash."""
    path = embedding_path(run, x)
    if cache and path.is_file():
        return torch.load(path, weights_only=True, map_location="cpu")
    emb = train.embed(run.model, x, bs=bs)
    if cache:
        atomic_save(emb, path)  # an interrupted save never leaves a half-written cache file
    return emb


# ----------------------------------------------------------------------------- 2-d projections
def _flat(x) -> np.ndarray:
    """Rows as float vectors: uint8 images scaled to [0, 1] and flattened."""
    x = torch.as_tensor(x).detach().cpu()
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    return x.reshape(len(x), -1).numpy()


def project(x: torch.Tensor, method: str = "tsne", metric: str = "euclidean", seed: int = 0,
            **kw) -> tuple[np.ndarray, float]:
    """2-d coordinates of `x` (embeddings or raw images) by t-SNE or UMAP, and the seconds it took.

    Extra keywords go to sklearn's `TSNE` or umap-learn's `UMAP` (e.g. perplexity, n_neighbors).
    """
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}: choose one of {list(PROJECTIONS)}")
    data = _flat(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        reducer = TSNE(n_components=2, init="pca", random_state=seed, metric=metric, **kw)
    else:
        # seeded UMAP runs single-threaded anyway; numba's default pool of one thread per core would keep
        # competing with torch afterwards (training later in the same process ran ~8× slower on 2 cores).
        # Only takes effect when numba is not imported yet.
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
        with warnings.catch_warnings():  # umap imports tqdm.auto, which warns when ipywidgets is absent
            warnings.simplefilter("ignore")
            import umap  # the umap-learn package

        reducer = umap.UMAP(n_components=2, random_state=seed, metric=metric, **kw)
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": seeded UMAP is single-threaded
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        coords = reducer.fit_transform(data)
    return np.asarray(coords), time.perf_counter() - t0
