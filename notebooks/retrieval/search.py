"""Nearest-neighbour search at scale: exact and approximate indexes, measured the same way.

Retrieval with an embedding is a k-nearest-neighbour search: the gallery's embeddings are the base,
each query asks for its k most similar. On L2-normalized vectors the inner product is the cosine
similarity, so every method below searches by inner product (or, for the trees, by Euclidean distance,
which ranks normalized vectors the same way: ‖q − x‖² = 2 − 2 q·x).

    base, queries = normalized(embeddings), normalized(other_embeddings)
    table = benchmark(base, queries, k=10)    # one row per method and setting

The methods (`benchmark`'s rows):

- **torch brute force** — `notebooks.retrieval.metrics.knn_labels`, the collection's own exact search (blocks of
  queries × base, a running top-k): every query against every vector, O(n·d) per query.
- **scikit-learn** — `NearestNeighbors` with `algorithm="brute"` (exact, the same work as above) and
  `"ball_tree"` (a metric tree: exact too, fast in a few dimensions, little help in 64).
- **FAISS `IndexFlatIP`** — exact inner-product search with BLAS; the ground truth.
- **FAISS IVF** (`IndexIVFFlat`, Jégou et al. 2011): k-means cuts the base into `nlist` cells; a query
  scans only the `nprobe` cells nearest to it. Fewer vectors scanned, some true neighbours missed.
- **FAISS IVF-PQ** (`IndexIVFPQ`): the same cells, each vector compressed by product quantization to
  `m` bytes: a fraction of the memory, approximate distances. With exact re-ranking (`IndexRefineFlat`)
  its best candidates are compared again with the full vectors, which it then has to keep.
- **FAISS HNSW** (`IndexHNSWFlat`, Malkov & Yashunin 2018): a navigable small-world graph of `M` links
  per vector; a query walks it greedily with a candidate list of `efSearch`. No training, fast and
  accurate, but the graph costs memory and time to build.

Each row reports recall@k (the fraction of the exact k nearest neighbours found among the k
returned), queries per second over the whole query batch, build seconds (training, adding) and the
index's memory (FAISS: its serialized size; the others: the arrays or pickled trees they keep).
"""
from __future__ import annotations

import math
import pickle
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from notebooks.retrieval.metrics import knn_labels


def faiss_module():
    """`import faiss`, with a message that says how to get it (requirements.txt lists faiss-cpu)."""
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is in requirements.txt
        raise ImportError("FAISS is not installed: pip install faiss-cpu (it is in requirements.txt)") from e
    return faiss


def normalized(x) -> np.ndarray:
    """Rows L2-normalized, as a C-contiguous float32 NumPy array (what FAISS takes)."""
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().float().cpu()
    return np.ascontiguousarray(F.normalize(t, dim=1).numpy(), dtype=np.float32)


@torch.no_grad()
def augmented_embeddings(model: torch.nn.Module, images: torch.Tensor, n: int, seed: int = 0,
                         affine: dict | None = None, bs: int = 2048) -> torch.Tensor:
    """`n` embeddings of randomly distorted copies of `images` (n × emb_dim, float32, CPU).

    Copy i distorts image i mod len(images) by a random affine map (`utils.augment.random_affine`, notebook 10's lesson cell; its
    keyword arguments `affine`, default rotation ±10°, scale ±10 %, shear, shift ±10 %), so a million
    vectors come from a data set of tens of thousands, as new photos of known objects would: close to
    one another, never identical. Batches of `bs` are distorted and embedded one at a time, so the
    images are never held n at once.
    """
    from utils.augment import random_affine
    from utils.train import embed

    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, bs):
        idx = torch.arange(start, min(start + bs, n)) % len(images)
        out.append(embed(model, random_affine(images[idx], g, **(affine or {}))))
    return torch.cat(out) if out else torch.empty(0, getattr(model, "emb_dim", 0))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k: the share of the exact k nearest neighbours returned."""
    found, truth = np.asarray(found), np.asarray(truth)
    if found.shape != truth.shape:
        raise ValueError(f"found {found.shape} and truth {truth.shape} must both be n_queries × k")
    hits = (found[:, :, None] == truth[:, None, :]).any(2).sum(1)
    return float(hits.mean() / truth.shape[1])


def index_bytes(index) -> int:
    """Memory a FAISS index holds, measured as its serialized size (vectors, codes, lists, graph)."""
    return int(faiss_module().serialize_index(index).nbytes)


def default_nlist(n: int) -> int:
    """IVF cells for n vectors: about 4·√n (FAISS's guideline: 4√n to 16√n), a power of two, at least 16, and
    at most n / 39 (k-means wants 39 training vectors per cell, or FAISS warns)."""
    return max(16, min(2 ** round(math.log2(4 * math.sqrt(n))), 2 ** int(math.log2(max(n // 39, 1)))))


def _timed(fn: Callable):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _row(method: str, setting: str, build_s: float, memory: int, search_s: float, n_queries: int,
         found: np.ndarray, truth: np.ndarray) -> dict:
    return {"method": method, "setting": setting, "build_s": build_s, "memory_mb": memory / 2 ** 20,
            "queries_per_s": n_queries / max(search_s, 1e-9), f"recall_at_{truth.shape[1]}": recall(found, truth)}


def benchmark(base: np.ndarray, queries: np.ndarray, k: int = 10, nlist: int | None = None,
              nprobes: tuple[int, ...] = (1, 8, 32), efs: tuple[int, ...] = (16, 64, 128), hnsw_m: int = 32,
              pq_m: int = 16, refine: int = 8, sklearn_queries: int | None = None, tree: bool = True, seed: int = 0,
              log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every method of the module docstring on `base` (n × d) and `queries` (L2-normalized float32).

    Exact `IndexFlatIP` gives the ground truth; every row's recall@k is against it. IVF uses `nlist`
    cells (default `default_nlist(n)`), trained on at most 64 vectors per cell drawn from the base,
    searched with each `nprobes`; HNSW has `hnsw_m` links per vector and is searched with each `efs`;
    IVF-PQ codes each vector in `pq_m` bytes, and is run again with its `refine` × k best candidates re-ranked
    by exact inner products (`IndexRefineFlat`). `sklearn_queries` limits the (slow) scikit-learn rows to
    the first that many queries (their queries/s is measured on those); `tree=False` skips the ball tree.
    `log` (e.g. `print`) hears a line after each method.
    """
    faiss = faiss_module()
    base, queries = np.ascontiguousarray(base, np.float32), np.ascontiguousarray(queries, np.float32)
    n, d = base.shape
    nq = len(queries)
    nlist = nlist or default_nlist(n)
    say = log or (lambda s: None)
    rows = []

    flat, t_build = _timed(lambda: _flat(faiss, base))
    (_, truth), t_search = _timed(lambda: flat.search(queries, k))
    rows.append(_row("FAISS IndexFlatIP (exact)", "", t_build, index_bytes(flat), t_search, nq, truth, truth))
    say(f"exact IndexFlatIP: {nq / t_search:,.0f} queries/s")

    (found, _), t_search = _timed(lambda: knn_labels(torch.from_numpy(queries), torch.from_numpy(base), k))
    rows.append(_row("torch brute force (knn_labels)", "", 0.0, base.nbytes, t_search, nq, found.numpy(), truth))
    say(f"torch brute force: {nq / t_search:,.0f} queries/s")

    from sklearn.neighbors import NearestNeighbors

    sq = queries[:sklearn_queries] if sklearn_queries else queries
    for algo in ("brute", "ball_tree") if tree else ("brute",):
        nn, t_build = _timed(lambda: NearestNeighbors(n_neighbors=k, algorithm=algo).fit(base))
        found, t_search = _timed(lambda: nn.kneighbors(sq, return_distance=False))
        memory = base.nbytes if algo == "brute" else len(pickle.dumps(nn))
        rows.append(_row(f"scikit-learn NearestNeighbors ({algo})", "", t_build, memory, t_search, len(sq), found,
                         truth[:len(sq)]))
        say(f"scikit-learn {algo}: {len(sq) / t_search:,.0f} queries/s")

    rng = np.random.default_rng(seed)
    sample = base[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
    for name, make in (("FAISS IVF-Flat", lambda: faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist,
                                                                      faiss.METRIC_INNER_PRODUCT)),
                       ("FAISS IVF-PQ", lambda: faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, pq_m, 8,
                                                                 faiss.METRIC_INNER_PRODUCT))):
        index, t_build = _timed(lambda: _trained(make(), sample, base))
        memory = index_bytes(index)
        for nprobe in nprobes:
            index.nprobe = nprobe
            (_, found), t_search = _timed(lambda: index.search(queries, k))
            rows.append(_row(name, f"nlist={nlist}, nprobe={nprobe}", t_build, memory, t_search, nq, found, truth))
        say(f"{name}: built in {t_build:.1f} s")
    # IVF-PQ's candidates re-ranked by exact inner products: the full vectors come back (and their memory)
    refined, t_refine = _timed(lambda: faiss.IndexRefineFlat(index, faiss.swig_ptr(base)))
    refined.k_factor = refine
    for nprobe in nprobes:
        index.nprobe = nprobe
        (_, found), t_search = _timed(lambda: refined.search(queries, k))
        rows.append(_row("FAISS IVF-PQ + exact re-ranking", f"nlist={nlist}, nprobe={nprobe}, k_factor={refine}",
                         t_build + t_refine, index_bytes(refined), t_search, nq, found, truth))

    index, t_build = _timed(lambda: _hnsw(faiss, base, hnsw_m))
    memory = index_bytes(index)
    for ef in efs:
        index.hnsw.efSearch = ef
        (_, found), t_search = _timed(lambda: index.search(queries, k))
        rows.append(_row("FAISS HNSW", f"M={hnsw_m}, efSearch={ef}", t_build, memory, t_search, nq, found, truth))
    say(f"FAISS HNSW: built in {t_build:.1f} s")
    return pd.DataFrame(rows).assign(n=n, d=d, queries=nq)


def _flat(faiss, base: np.ndarray):
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index


def _trained(index, sample: np.ndarray, base: np.ndarray):
    index.train(sample)
    index.add(base)
    return index


def _hnsw(faiss, base: np.ndarray, m: int):
    index = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.add(base)
    return index


# ----------------------------------------------------------------------------- the million-vector run
FULL_CSV = "faiss_full.csv"   # results/faiss_full.csv: written by scripts/faiss_benchmark.py or notebook 14 in full mode


def mnist_vectors(n: int, n_queries: int = 1000, head: str = "cosface", epochs: int = 2, seed: int = 0,
                  log: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(base, queries, description) for the large benchmark, from a network we train ourselves.

    The small CNN (64-d) learns `head` on MNIST's 60,000 training images (`epochs`, cached like every
    trained network); the base is `n` embeddings of randomly distorted training images
    (`augmented_embeddings`: n / 60,000 distorted copies of each), the queries are the first `n_queries`
    MNIST *test* images, undistorted: new drawings, never in the base. Both L2-normalized.
    """
    from utils import data as D, train as T

    say = log or (lambda s: None)
    mnist = D.load("mnist")
    t0 = time.perf_counter()
    run = T.train(mnist, head, epochs=epochs, bs=128, lr=3e-3, augment=2, seed=seed, validate=False, progress=False)
    say(f"network: {head} on MNIST, {epochs} epochs ({'cached' if run.from_cache else f'{time.perf_counter() - t0:.0f} s'})")
    t0 = time.perf_counter()
    base = normalized(augmented_embeddings(run.model, mnist.x_train, n, seed=seed + 1))
    queries = normalized(T.embed(run.model, mnist.x_test[:n_queries]))
    say(f"embedded {n:,} distorted training images and {len(queries):,} test images in {time.perf_counter() - t0:.0f} s")
    what = (f"{n:,} embeddings of randomly distorted MNIST training images (64-d, small CNN trained with "
            f"{head} for {epochs} epochs); {len(queries):,} queries: MNIST test images")
    return base, queries, what


def provenance() -> dict:
    """Where a measurement ran: FAISS and torch versions, the threads used, the CPU count, the date, and the
    machine's load average over the last 15 minutes (about the threads used when nothing else ran; more when other
    work shared the cores)."""
    import datetime
    import os
    import platform

    faiss = faiss_module()
    return {"faiss": faiss.__version__, "torch": torch.__version__, "faiss_threads": faiss.omp_get_max_threads(),
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "date": datetime.date.today().isoformat(), "load_15min": round(os.getloadavg()[2], 2)}


def full_benchmark(n: int = 1_000_000, n_queries: int = 1000, sklearn_queries: int = 200, seed: int = 0,
                   log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The large measurement: `benchmark` on `mnist_vectors(n)`, each row tagged with what was measured
    (`source`) and where (`provenance`). Write it with `.to_csv(results / FULL_CSV, index=False)`."""
    base, queries, what = mnist_vectors(n, n_queries, seed=seed, log=log)
    table = benchmark(base, queries, k=10, sklearn_queries=sklearn_queries, seed=seed, log=log)
    return table.assign(source=what, **provenance())
