"""Anomaly detection in embedding space: kNN distances against scikit-learn, LOF, AUROC, the embedding
cache, 2-d projections, the numbers behind them, and their plots (all tiny, offline, CPU)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.metrics.pairwise import pairwise_distances  # noqa: E402
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors  # noqa: E402

from utils import anomaly, embed, losses, models, neighbourhoods, plot, scores, train  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def points(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def blobs(n_per: int = 40, n_classes: int = 3, d: int = 8, seed: int = 0):
    """Well separated Gaussian blobs: centres 10 apart on the axes, unit noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(n_per)
    centres = 10 * torch.eye(n_classes, d)
    return centres[y] + 0.5 * torch.randn(len(y), d, generator=g), y


# ----------------------------------------------------------------------------- knn_distance, nearest
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 5])
def test_knn_distance_matches_sklearn(metric, k):
    tr, te = points(300), points(70, seed=1)
    ref, _ = NearestNeighbors(n_neighbors=k, metric=metric).fit(tr.numpy()).kneighbors(te.numpy())
    got = anomaly.knn_distance(tr, te, k=k, metric=metric)
    assert got.shape == (70,) and got.dtype == torch.float32 and got.device.type == "cpu"
    np.testing.assert_allclose(got.numpy(), ref.mean(1), rtol=1e-4, atol=1e-5)
    batched = anomaly.knn_distance(tr, te, k=k, metric=metric, bs=16)
    np.testing.assert_allclose(batched.numpy(), got.numpy(), rtol=1e-6, atol=1e-6)


def test_k_none_is_the_mean_over_all_train_rows():
    tr, te = points(50), points(20, seed=1)
    for metric in ("cosine", "euclidean"):
        ref = pairwise_distances(te.numpy(), tr.numpy(), metric=metric).mean(1)
        np.testing.assert_allclose(anomaly.knn_distance(tr, te, k=None, metric=metric, bs=7).numpy(),
                                   ref, rtol=1e-4, atol=1e-5)
    assert torch.allclose(anomaly.knn_distance(tr, te, k=50), anomaly.knn_distance(tr, te, k=None), atol=1e-6)


def test_a_training_row_is_at_distance_zero():
    tr = points(40)
    assert anomaly.knn_distance(tr, tr[:5], k=1, metric="euclidean").abs().max() < 1e-6
    assert anomaly.knn_distance(tr, tr[:5], k=1).abs().max() < 1e-5
    assert anomaly.nearest(tr, tr[:5], metric="euclidean")[0].abs().max() < 1e-6


def test_bad_metric_and_k_raise_helpful_errors():
    tr, te = points(10), points(3)
    with pytest.raises(ValueError, match="unknown metric 'manhattan'.*cosine.*euclidean"):
        anomaly.knn_distance(tr, te, metric="manhattan")
    with pytest.raises(ValueError, match="unknown metric"):
        anomaly.nearest(tr, te, metric="l1")
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.10"):
        anomaly.knn_distance(tr, te, k=11)
    with pytest.raises(ValueError, match="k must be"):
        anomaly.knn_distance(tr, te, k=0)


def test_nearest_indices_and_distances():
    tr = points(100)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(3))[:25]
    te = tr[perm] * 3 + 0.01 * points(25, seed=2)     # scaled copies: the same direction (cosine)
    dist, idx = anomaly.nearest(tr, te, bs=8)
    assert torch.equal(idx, perm) and dist.max() < 1e-3
    dist, idx = anomaly.nearest(tr, te, metric="euclidean")
    ref_d, ref_i = NearestNeighbors(n_neighbors=1).fit(tr.numpy()).kneighbors(te.numpy())
    assert torch.equal(idx, torch.from_numpy(ref_i[:, 0]))
    np.testing.assert_allclose(dist.numpy(), ref_d[:, 0], rtol=1e-4)


def near_copies(tr: torch.Tensor, rows: list[int], seed: int = 5) -> torch.Tensor:
    """Test rows just off the given train rows (their nearest neighbours by either metric)."""
    return tr[rows] + 1e-3 * points(len(rows), d=tr.shape[1], seed=seed)


def brute(tr: torch.Tensor, te: torch.Tensor, k: int | None, metric: str):
    """scikit-learn's brute-force (distances, indices) of the k (None: all) nearest train rows."""
    nn_ = NearestNeighbors(n_neighbors=k or len(tr), algorithm="brute", metric=metric).fit(tr.numpy())
    return nn_.kneighbors(te.numpy())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 3, None])
@pytest.mark.parametrize("chunk", [7, anomaly.TRAIN_CHUNK])
def test_blocked_knn_equals_sklearn_brute_force(metric, k, chunk, monkeypatch):
    """50 train rows in chunks of 7 (the last holds one row, fewer than k): the running max / topk
    merges across chunks and the index offsets of later chunks must give sklearn's answer."""
    monkeypatch.setattr(anomaly, "TRAIN_CHUNK", chunk)
    tr = points(50)
    te = torch.cat([points(30, seed=1), near_copies(tr, [49, 0, 20, 48, 6, 7])])
    ref_d, ref_i = brute(tr, te, k, metric)
    for bs in (8, 2048):
        got = anomaly.knn_distance(tr, te, k=k, metric=metric, bs=bs)
        np.testing.assert_allclose(got.numpy(), ref_d.mean(1), rtol=1e-4, atol=1e-5)
    if k == 1:
        dist, idx = anomaly.nearest(tr, te, metric=metric, bs=8)
        assert torch.equal(idx, torch.from_numpy(ref_i[:, 0]))
        assert idx[30:].tolist() == [49, 0, 20, 48, 6, 7]
        np.testing.assert_allclose(dist.numpy(), ref_d[:, 0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 3, None])
def test_score_blocks_stay_within_bs_by_train_chunk(metric, k, monkeypatch):
    """No matrix product is wider than TRAIN_CHUNK train rows or taller than bs test rows."""
    monkeypatch.setattr(anomaly, "TRAIN_CHUNK", 7)
    shapes = []
    for name in ("mm", "addmm"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, real=real, **kw: shapes.append(tuple(
            (out := real(*a, **kw)).shape)) or out)
    tr, te = points(50), points(20, seed=1)
    np.testing.assert_allclose(anomaly.knn_distance(tr, te, k=k, metric=metric, bs=8).numpy(),
                               brute(tr, te, k, metric)[0].mean(1), rtol=1e-4, atol=1e-5)
    if k is None and metric == "cosine":   # the mean of 1 − x·t is 1 − x·(mean t): no blocks at all
        assert shapes == []
    else:
        assert len(shapes) == 3 * 8 and all(b <= 8 and c <= 7 for b, c in shapes)
        assert max(c for _, c in shapes) == 7 and min(c for _, c in shapes) == 1   # 7 × 7 + 1


def test_duplicates_are_at_exactly_zero(monkeypatch):
    monkeypatch.setattr(anomaly, "TRAIN_CHUNK", 7)
    tr = points(50)
    tr[30] = tr[5]                                               # a duplicate inside the train set
    te = tr[[5, 0, 13, 49]] * 1.0
    zeros = torch.zeros(4)
    assert torch.equal(anomaly.knn_distance(tr, te, k=1, metric="euclidean", bs=3), zeros)
    assert torch.equal(anomaly.knn_distance(tr, te[:1], k=2, metric="euclidean"), zeros[:1])
    dist, idx = anomaly.nearest(tr, te, metric="euclidean", bs=3)
    assert torch.equal(dist, zeros) and idx[1:].tolist() == [0, 13, 49] and idx[0].item() in (5, 30)
    cos = anomaly.knn_distance(points(200), points(200), k=1)   # 1 − x·x rounds to ±1 ulp: clamped at 0
    assert cos.min() == 0 and cos.max() < 1e-6
    ref_d, _ = brute(tr, te, 3, "euclidean")
    np.testing.assert_allclose(anomaly.knn_distance(tr, te, k=3, metric="euclidean").numpy(), ref_d.mean(1),
                               rtol=1e-5)


def test_k1_is_a_running_max_without_topk(monkeypatch):
    """k=1 (and nearest) reduce with a row-wise max; topk, the slower reduction, is for k > 1 only."""
    monkeypatch.setattr(anomaly, "TRAIN_CHUNK", 7)
    tr, te = points(50), points(20, seed=1)
    refs = {m: brute(tr, te, 1, m) for m in ("cosine", "euclidean")}

    def no_topk(*args, **kwargs):
        raise AssertionError("topk called for k=1")

    monkeypatch.setattr(torch, "topk", no_topk)
    monkeypatch.setattr(torch.Tensor, "topk", no_topk)
    for metric, (ref_d, ref_i) in refs.items():
        np.testing.assert_allclose(anomaly.knn_distance(tr, te, k=1, metric=metric, bs=8).numpy(), ref_d[:, 0],
                                   rtol=1e-4, atol=1e-5)
        dist, idx = anomaly.nearest(tr, te, metric=metric, bs=8)
        assert torch.equal(idx, torch.from_numpy(ref_i[:, 0]))
    with pytest.raises(AssertionError, match="topk called"):     # the patch does catch a topk
        anomaly.knn_distance(tr, te, k=3)


def test_empty_test_sets_and_inputs_that_require_grad():
    tr, te = points(30).requires_grad_(), points(5, seed=1).requires_grad_()
    assert anomaly.knn_distance(tr, te[:0]).shape == (0,)
    dist, idx = anomaly.nearest(tr, te[:0])
    assert dist.shape == (0,) and idx.dtype == torch.long
    for metric in ("cosine", "euclidean"):
        got = anomaly.knn_distance(tr, te, k=2, metric=metric)
        assert not got.requires_grad
        np.testing.assert_allclose(got.numpy(), brute(tr.detach(), te.detach(), 2, metric)[0].mean(1), rtol=1e-4)


def test_normalize_puts_the_normal_mean_at_one():
    scores = torch.rand(50, generator=torch.Generator().manual_seed(0)) + 0.5
    normal = torch.arange(50) < 30
    out = anomaly.normalize(scores, normal)
    assert out[normal].mean().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(out * scores[normal].mean(), scores)
    with pytest.raises(ValueError, match="normal sample"):
        anomaly.normalize(scores, torch.zeros(50, dtype=torch.bool))


# ----------------------------------------------------------------------------- LOF, AUROC
def test_lof_matches_a_directly_built_local_outlier_factor():
    tr, te = points(200, d=4), torch.cat([points(30, d=4, seed=1), 6 + points(10, d=4, seed=2)])
    model = scores.lof(tr, n_neighbors=10, contamination=0.01)
    ref = LocalOutlierFactor(n_neighbors=10, contamination=0.01, novelty=True).fit(tr.numpy())
    np.testing.assert_allclose(scores.lof_scores(model, te).numpy(), -ref.score_samples(te.numpy()), rtol=1e-5)
    assert scores.lof_scores(model, te)[30:].min() > scores.lof_scores(model, te)[:30].max()


def test_auroc_matches_sklearn_and_separates_perfectly():
    g = torch.Generator().manual_seed(0)
    scores, labels = torch.rand(100, generator=g), torch.rand(100, generator=g) > 0.7
    assert anomaly.auroc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()))
    is_anomaly = torch.tensor([0, 0, 0, 1, 1], dtype=torch.bool)
    assert anomaly.auroc(torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9]), is_anomaly) == 1.0
    assert anomaly.auroc(-torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9]), is_anomaly) == 0.0


# ----------------------------------------------------------------------------- embedding cache
def tiny_run(key: str = "k0", seed: int = 0) -> train.Trained:
    torch.manual_seed(seed)
    net = models.SmallCNN(in_channels=1, emb_dim=8, width=4)
    return train.Trained(net, losses.make("softmax", emb_dim=8, n_classes=10), pd.DataFrame(), key, {})


def images(n: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_embeddings_are_cached_and_the_second_call_loads(isolated_env, monkeypatch):
    run, x = tiny_run(), images()
    calls = []
    real = train.embed
    monkeypatch.setattr(train, "embed", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    first = embed.embeddings(run, x, bs=5)
    assert len(calls) == 1 and first.shape == (12, 8) and first.dtype == torch.float32
    files = list((isolated_env / "embeddings").glob("*.pt"))
    assert [f.name for f in files] == [embed.embedding_path(run, x).name] and files[0].name.startswith("k0-")
    second = embed.embeddings(run, x)
    assert len(calls) == 1 and torch.equal(first, second)
    assert torch.allclose(first, real(run.model, x), atol=1e-6)
    assert not list((isolated_env / "embeddings").glob("*.tmp"))


def test_another_run_or_other_images_never_reuse_a_stale_file(isolated_env):
    x = images()
    a = embed.embeddings(tiny_run("k0", seed=0), x)
    b = embed.embeddings(tiny_run("k1", seed=1), x)             # other key (other weights)
    assert not torch.allclose(a, b)
    assert torch.allclose(b, train.embed(tiny_run("k1", seed=1).model, x), atol=1e-6)
    x2 = x.clone()
    x2[0, 0, 14, 14] ^= 1
    c = embed.embeddings(tiny_run("k0", seed=0), x2)             # one pixel changed
    assert torch.allclose(c[1:], a[1:], atol=1e-6) and not torch.equal(c[0], a[0])
    reshaped = x.reshape(6, 1, 56, 28)                           # the same bytes, another shape
    assert embed.embeddings(tiny_run("k0", seed=0), reshaped).shape == (6, 8)
    assert len(list((isolated_env / "embeddings").glob("*.pt"))) == 4


def test_embeddings_of_a_trained_run_follow_its_key(small_digits, isolated_env):
    d = small_digits.per_class(n_train=5, n_test=2, seed=0)
    kw = dict(arch_kw={"width": 4}, emb_dim=8, epochs=1, bs=32, progress=False)
    r0, r1 = train.train(d, "softmax", **kw), train.train(d, "softmax", seed=1, **kw)
    e0, e1 = embed.embeddings(r0, d.x_test), embed.embeddings(r1, d.x_test)
    assert embed.embedding_path(r0, d.x_test) != embed.embedding_path(r1, d.x_test)
    assert not torch.allclose(e0, e1)
    assert torch.equal(embed.embeddings(train.train(d, "softmax", **kw), d.x_test), e0)   # from cache
    assert len(list((isolated_env / "embeddings").glob("*.pt"))) == 2


def test_cache_false_never_writes(isolated_env):
    e = embed.embeddings(tiny_run(), images(), cache=False)
    assert e.shape == (12, 8) and not (isolated_env / "embeddings").exists()


# ----------------------------------------------------------------------------- projections and numbers
PROJECT_CHECK = """
import numpy as np, torch
from utils import embed
def check(method, full=True, **kw):
    x = torch.randn(150, 10, generator=torch.Generator().manual_seed(0))
    coords, seconds = embed.project(x, method, **kw)
    assert coords.shape == (150, 2) and np.isfinite(coords).all() and seconds > 0
    if full:
        raw = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)      # raw uint8 images
        img, _ = embed.project(raw, method, metric="cosine", **kw)
        assert img.shape == (40, 2) and np.isfinite(img).all()
        assert np.allclose(embed.project(x, method, **kw)[0], coords)      # seeded
"""


def test_project_tsne_gives_finite_2d_coordinates():
    exec(PROJECT_CHECK + "check('tsne', perplexity=5, max_iter=250)", {})


def test_project_umap_gives_finite_2d_coordinates():
    """In a child process with numba's JIT off: compiling umap's kernels costs ~20 s per process,
    interpreting them on 150 points ~1 s (the wrapper under test is the same either way)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONWARNINGS="ignore")
    code = PROJECT_CHECK + "check('umap', full=False, metric='cosine', n_neighbors=5, n_epochs=20)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_project_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="unknown projection 'pca'.*tsne.*umap"):
        embed.project(points(10), "pca")


def test_knn_accuracy_and_silhouette_on_separable_blobs():
    (xtr, ytr), (xte, yte) = blobs(seed=0), blobs(n_per=20, seed=1)
    assert neighbourhoods.knn_accuracy(xtr, ytr, xte, yte, k=5) == 1.0
    assert neighbourhoods.silhouette(xtr, ytr, metric="euclidean") > 0.8
    assert neighbourhoods.silhouette(xtr, ytr, n=30, seed=1) > 0.8          # subsampled
    shuffled = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(0))]
    assert neighbourhoods.silhouette(xtr, shuffled) < 0.1


# ----------------------------------------------------------------------------- plots
def test_projection_plots():
    x, y = blobs()
    coords = x[:, :2].numpy()
    panels = {("raw", "t-SNE"): (coords, y), ("raw", "UMAP"): (coords, y), ("emb", "t-SNE"): (coords, y)}
    fig = plot.projection_grid(panels, ["a", "b", "c"], title="spaces × methods")
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes[:2]] == ["t-SNE", "UMAP"] and fig.axes[2].get_ylabel() == "emb"
    assert not fig.axes[3].axison                                 # the missing (emb, UMAP) cell


def test_pairs_two_rows_query_above_match():
    q, m = torch.rand(5, 3, 28, 28), images(5)                    # RGB anomalies above gray neighbours
    fig = plot.pairs(q, m, titles=[f"q{i}" for i in range(5)], n=3)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["q0", "q1", "q2"]
    with pytest.raises(ValueError):
        plot.pairs(q[:0], m)


def test_pool_makes_one_scored_set_with_outliers_positive():
    normal, outliers = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.25, 0.9])
    scores, is_anomaly = anomaly.pool(normal, outliers)
    assert scores.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.25, 0.9])
    assert is_anomaly.tolist() == [False, False, False, True, True]
    assert anomaly.auroc(scores, is_anomaly) == pytest.approx(roc_auc_score([0, 0, 0, 1, 1], scores.numpy()))


# ----------------------------------------------------------------------------- notebook 06's lesson cell
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 7])
def test_the_lesson_knn_score_is_the_blocked_knn_distance(metric, k):
    """`utils.scores.knn_score` (notebook 06's cell, written as the formula) equals `knn_distance` (the blocked engine
    the tables use) on more rows than one block: cosine exactly, Euclidean to float32 rounding."""
    from utils.scores import knn_score

    g = torch.Generator().manual_seed(k)
    train, test = torch.randn(2500, 12, generator=g), torch.randn(1300, 12, generator=g)
    ours, engine = knn_score(train, test, k, metric), anomaly.knn_distance(train, test, k, metric)
    assert torch.allclose(ours, engine, atol=5e-6, rtol=0)
    if metric == "cosine":
        assert torch.equal(ours, engine)


def test_the_lesson_lof_score_is_scikit_learns():
    """`utils.scores.lof_score` (Breunig et al.'s formula, notebook 06) equals scikit-learn's LocalOutlierFactor, and
    is ≈ 1 inside a cluster, large just outside a dense one."""
    from utils.scores import lof_score

    g = torch.Generator().manual_seed(0)
    train = torch.cat([0.1 * torch.randn(200, 2, generator=g), torch.tensor([6.0, 0]) + 2 * torch.randn(40, 2, generator=g)])
    test = torch.cat([torch.randn(50, 2, generator=g), torch.tensor([[0.6, 0.0], [6.0, 0.5]])])
    ours = lof_score(train, test, n_neighbors=20)
    assert torch.allclose(ours, scores.lof_scores(scores.lof(train, n_neighbors=20), test), rtol=1e-4, atol=1e-5)
    assert ours[-2] > 2 and 0.7 < ours[-1] < 1.5
