"""Nearest-neighbour search (utils/search.py): FAISS's exact search is the collection's brute force, the
approximate indexes trade recall as documented, and the benchmark's rows measure what they say."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from notebooks.retrieval import search
from utils import models
from notebooks.retrieval.metrics import knn_labels

faiss = pytest.importorskip("faiss", reason="faiss-cpu is in requirements.txt: pip install -r requirements.txt")
ROOT = Path(__file__).resolve().parent.parent


def clustered(n=3000, d=32, centres=40, seed=0):
    """Normalized vectors around random centres: structure like embeddings, no exact ties."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, d))
    return search.normalized(x)


@pytest.mark.parametrize("data", ["random", "digits"])
def test_faiss_exact_inner_product_is_knn_labels(data):
    if data == "random":
        x = clustered(2000, 24, seed=1)
    else:   # real, structured: scikit-learn's digits, PCA to 16-d
        digits = load_digits().data
        x = search.normalized(PCA(16, random_state=0).fit_transform(digits))
    base, queries = x[200:], x[:200]
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(base)
    scores, found = index.search(queries, 10)
    ours, our_scores = knn_labels(torch.from_numpy(queries), torch.from_numpy(base), 10)
    assert np.allclose(scores, our_scores.numpy(), atol=1e-5)
    same = (found == ours.numpy())
    if data == "random":
        assert same.all()
    else:   # float32 rounding may swap two neighbours at (almost) equal similarity: only there
        swapped = ~same
        gaps = np.abs(np.diff(our_scores.numpy(), axis=1))
        near_tie = np.zeros_like(swapped)
        near_tie[:, 1:] |= gaps < 1e-5
        near_tie[:, :-1] |= gaps < 1e-5
        assert not (swapped & ~near_tie).any() and same.mean() > 0.99


def test_normalized_and_recall():
    x = search.normalized(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert np.allclose(x, [[0.6, 0.8], [0.0, 1.0]])
    truth = np.array([[0, 1, 2], [3, 4, 5]])
    assert search.recall(truth, truth) == 1.0
    assert search.recall(np.array([[2, 9, 0], [9, 9, 9]]), truth) == pytest.approx((2 / 3 + 0) / 2)
    with pytest.raises(ValueError, match="n_queries × k"):
        search.recall(truth[:, :2], truth)


def test_default_nlist():
    assert search.default_nlist(60_000) == 1024 and search.default_nlist(1_000_000) == 4096
    for n in (1_000, 5_000, 10_000, 60_000, 1_000_000):
        nlist = search.default_nlist(n)
        assert nlist & (nlist - 1) == 0 and 16 <= nlist and (nlist * 39 <= n or nlist == 16)


def test_benchmark_rows_measure_what_they_say():
    x = clustered(4000, 32, seed=2)
    base, queries = x[300:], x[:300]
    table = search.benchmark(base, queries, k=10, nprobes=(1, 4, 64), efs=(8, 128), pq_m=8, sklearn_queries=50)
    assert list(table.columns[:6]) == ["method", "setting", "build_s", "memory_mb", "queries_per_s", "recall_at_10"]
    by = {(m, s): r for m, s, r in zip(table.method, table.setting, table.recall_at_10)}
    exact = [v for (m, _), v in by.items() if m.startswith(("FAISS IndexFlatIP", "torch", "scikit-learn"))]
    assert len(exact) == 4 and all(v == 1.0 for v in exact)          # every exact method finds the truth
    pq = table[table.method == "FAISS IVF-PQ"].recall_at_10.to_numpy()
    reranked = table[table.method == "FAISS IVF-PQ + exact re-ranking"].recall_at_10.to_numpy()
    assert len(pq) == len(reranked) == 3 and (reranked >= pq).all() and reranked[-1] > pq[-1] + 0.1
    ivf = table[table.method == "FAISS IVF-Flat"].recall_at_10.tolist()
    assert ivf == sorted(ivf) and ivf[-1] > 0.99 and ivf[0] < ivf[-1]  # more cells scanned: more found
    hnsw = table[table.method == "FAISS HNSW"].recall_at_10.tolist()
    assert hnsw[-1] > 0.98 and hnsw[0] <= hnsw[-1]
    mem = table.groupby("method", sort=False).memory_mb.first()
    assert mem["FAISS IVF-PQ"] < mem["FAISS IndexFlatIP (exact)"] / 4 < mem["FAISS HNSW"]   # codes vs vectors vs graph
    assert mem["FAISS IVF-PQ + exact re-ranking"] > mem["FAISS IndexFlatIP (exact)"]        # the vectors are back
    assert mem["FAISS IndexFlatIP (exact)"] == pytest.approx(base.nbytes / 2 ** 20, rel=0.01)
    assert (table.queries_per_s > 0).all() and (table.build_s >= 0).all()
    assert set(table.n) == {len(base)} and set(table.queries) == {len(queries)}


def test_augmented_embeddings_are_seeded_and_distinct():
    torch.manual_seed(0)
    net = models.make_model("cnn", 1, 16)
    images = torch.randint(0, 255, (7, 1, 20, 20), dtype=torch.uint8)
    a = search.augmented_embeddings(net, images, 20, seed=3, bs=8)
    b = search.augmented_embeddings(net, images, 20, seed=3, bs=8)
    c = search.augmented_embeddings(net, images, 20, seed=4, bs=8)
    assert a.shape == (20, 16) and torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[7])       # image 0 twice (0 and 7), distorted differently


def test_the_script_writes_the_table_notebook_14_reads(tmp_path, monkeypatch):
    """scripts/faiss_benchmark.py end to end, with small random vectors in place of the MNIST network."""
    x = clustered(3000, 16, seed=4)
    monkeypatch.setattr(search, "mnist_vectors", lambda n, q, seed=0, log=None: (x[q:q + n], x[:q], "test vectors"))
    spec = importlib.util.spec_from_file_location("faiss_benchmark", ROOT / "scripts" / "faiss_benchmark.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "faiss.csv"
    assert script.main(["--n", "2000", "--queries", "100", "--sklearn-queries", "20", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert {"source", "faiss", "torch", "cpus", "date", "n", "queries", "recall_at_10"} <= set(table.columns)
    assert table.n.iloc[0] == 2000 and table.source.iloc[0] == "test vectors"
    assert table.recall_at_10.iloc[0] == 1.0 and table.faiss.iloc[0] == faiss.__version__
