"""Retrieval metrics (utils/retrieval.py): a hand-worked example, and equal to pytorch-metric-learning's
AccuracyCalculator on random, real (digits) and separate query/reference embeddings."""
from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from notebooks.retrieval.metrics import knn_labels, retrieval_metrics

PML_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
# PML's own brute-force kNN (faiss, its default, is not needed). Its LpDistance normalizes the
# embeddings unless told otherwise; our "euclidean" is the plain distance.
PML_DISTANCES = {"cosine": CosineSimilarity, "euclidean": lambda: LpDistance(normalize_embeddings=False)}


class IndexTiesKNN(CustomKNN):
    """PML's CustomKNN with its exactly tied neighbours put in reference-index order, as ours are.

    torch.topk orders exact ties as it likes; on real embeddings float32 distances do tie (on digits
    every split tried had a few). The distances are PML's own, untouched; only tied entries move.
    """

    def __call__(self, query, k, reference, ref_includes_query=False):
        d, i = super().__call__(query, k, reference, ref_includes_query)
        by_index = torch.argsort(i, dim=1, stable=True)
        d, i = d.gather(1, by_index), i.gather(1, by_index)
        order = torch.sort(d, dim=1, descending=self.distance.is_inverted, stable=True).indices
        return d.gather(1, order), i.gather(1, order)


def pml(metric, query, query_labels, reference=None, reference_labels=None, k="max_bin_count", knn=CustomKNN):
    calc = AccuracyCalculator(include=PML_METRICS, k=k, avg_of_avgs=False, device=torch.device("cpu"),
                              knn_func=knn(PML_DISTANCES[metric]()))
    return calc.get_accuracy(query, query_labels, reference, reference_labels)


def assert_same(ours, theirs, names=PML_METRICS, tol=1e-6):
    for name in names:
        assert ours[name] == pytest.approx(theirs[name], abs=tol), name


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's bundled 8×8 digits (1797 images, 10 classes), PCA to 16-d: real, structured embeddings."""
    x, y = load_digits(return_X_y=True)
    return torch.tensor(PCA(16, random_state=0).fit_transform(x), dtype=torch.float32), torch.tensor(y)


def random_set(seed, n=300, d=8, classes=12):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)
    y[0] = 99   # a class with one member: R = 0, left out as PML does
    return x, y


def test_hand_worked_example():
    # Five points on a line, Euclidean, retrieval within the set (each point excluded from its own list):
    #   x:      0  1  3  4  9
    #   label:  a  a  b  a  b
    # query  neighbours (label, distance)   R  P@1  R-prec  AP@R                    hit within 1 / 2 / 3 / 4
    # x=0    a1 b3 a4 b9                     2   1   1/2     (1/2)(1/1)       = 1/2   1 1 1 1
    # x=1    a1 b2 a3 b8                     2   1   1/2     (1/2)(1/1)       = 1/2   1 1 1 1
    # x=3    a1 a2 a3 b6                     1   0   0       0                       0 0 0 1
    # x=4    b1 a3 a4 b5                     2   0   1/2     (1/2)(1/2)       = 1/4   0 1 1 1
    # x=9    a5 b6 a8 a9                     1   0   0       0                       0 1 1 1
    # means: P@1 = 2/5, R-precision = 1.5/5 = 0.3, MAP@R = 1.25/5 = 0.25,
    #        Recall@1 = 0.4, Recall@2 = 0.8, Recall@3 = 0.8, Recall@4 = 1.
    x, y = torch.tensor([[0.0], [1.0], [3.0], [4.0], [9.0]]), torch.tensor([0, 0, 1, 0, 1])
    out = retrieval_metrics(x, y, ks=(1, 2, 3, 4), metric="euclidean")
    expected = {"precision_at_1": 0.4, "recall_at_1": 0.4, "recall_at_2": 0.8, "recall_at_3": 0.8,
                "recall_at_4": 1.0, "r_precision": 0.3, "mean_average_precision_at_r": 0.25}
    assert out == pytest.approx(expected, abs=1e-12)
    assert list(out) == list(expected)
    assert_same(out, pml("euclidean", x, y))
    # A lone point (its class has no other member) far away: left out of the means, and last in every
    # other list, so nothing changes. All points lone: every metric is NaN, as in PML.
    lone = retrieval_metrics(torch.cat([x, torch.tensor([[100.0]])]), torch.tensor([0, 0, 1, 0, 1, 2]),
                             ks=(1, 2, 3, 4), metric="euclidean")
    assert lone == pytest.approx(expected, abs=1e-12)
    nan = retrieval_metrics(x[:3], torch.tensor([0, 1, 2]))
    assert all(math.isnan(v) for v in nan.values())
    assert all(math.isnan(v) for v in pml("cosine", x[:3], torch.tensor([0, 1, 2])).values())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_equal_to_pml_random(seed, metric):
    x, y = random_set(seed)
    assert_same(retrieval_metrics(x, y, metric=metric), pml(metric, x, y))


def assert_same_up_to_ties(ours, *data, metric):
    """Equal to PML with ties in index order (k=None: whole lists, so no tie is cut at the k-th place),
    and within 1e-4 of plain PML, whose tie order is topk's."""
    assert_same(ours, pml(metric, *data, k=None, knn=IndexTiesKNN))
    assert_same(ours, pml(metric, *data), tol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_equal_to_pml_digits(digits, metric):
    x, y = digits
    ours = retrieval_metrics(x, y, metric=metric)
    assert_same_up_to_ties(ours, x, y, metric=metric)
    assert ours["precision_at_1"] > 0.9 and 0.5 < ours["mean_average_precision_at_r"] < ours["r_precision"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_equal_to_pml_separate_sets(digits, metric):
    x, y = digits
    assert_same_up_to_ties(retrieval_metrics(x[:500], y[:500], x[500:], y[500:], metric=metric),
                           x[:500], y[:500], x[500:], y[500:], metric=metric)
    # random gallery whose classes miss some of the queries' (those queries are lone: R = 0)
    (q, yq), (r, yr) = random_set(5, n=120), random_set(6, n=200, classes=8)
    theirs = pml(metric, q, yq, r, yr, k=None)
    assert_same(retrieval_metrics(q, yq, r, yr, metric=metric), theirs)


class WithRecall(AccuracyCalculator):
    """PML offers no Recall@K for K > 1; this adds the papers' definition on top of PML's own kNN lists."""

    def calculate_recall_at_k(self, knn_labels, query_labels, not_lone_query_mask, **kwargs):
        hit = knn_labels[not_lone_query_mask] == query_labels[not_lone_query_mask, None]
        return [hit[:, :k].any(1).double().mean().item() for k in (1, 2, 4, 8)]

    def requires_knn(self):
        return super().requires_knn() + ["recall_at_k"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_recall_at_k(digits, metric):
    x, y = random_set(7)
    calc = WithRecall(include=("recall_at_k",), k=None, device=torch.device("cpu"),
                      knn_func=CustomKNN(PML_DISTANCES[metric]()))
    theirs = calc.get_accuracy(x, y)["recall_at_k"]
    ours = retrieval_metrics(x, y, metric=metric)
    assert [ours[f"recall_at_{k}"] for k in (1, 2, 4, 8)] == pytest.approx(theirs, abs=1e-12)
    for x, y in [(x, y), digits]:
        out = retrieval_metrics(x, y, ks=(1, 2, 4, 8, 16, 10_000), metric=metric)
        recalls = [out[f"recall_at_{k}"] for k in (1, 2, 4, 8, 16, 10_000)]
        assert recalls == sorted(recalls) and recalls[0] < recalls[-1] == 1.0
        assert out["recall_at_1"] == out["precision_at_1"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_perfect_clusters(metric):
    g = torch.Generator().manual_seed(0)
    centres = 10 * torch.eye(6)
    y = torch.arange(6).repeat_interleave(7)
    x = centres[y] + 0.1 * torch.randn(len(y), 6, generator=g)
    assert set(retrieval_metrics(x, y, metric=metric).values()) == {1.0}
    assert set(retrieval_metrics(x[::2], y[::2], x[1::2], y[1::2], metric=metric).values()) == {1.0}


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_blocks_and_self_exclusion(digits, metric):
    x = digits[0][:200]
    full = x @ x.T if metric == "cosine" else -torch.cdist(x, x)
    if metric == "cosine":
        full = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(x).T
    full.fill_diagonal_(-torch.inf)
    expected = torch.sort(full, dim=1, descending=True, stable=True)
    idx, score = knn_labels(x, x, 9, metric=metric, same_set=True, block=7)   # blocks that straddle the diagonal
    assert torch.equal(idx, expected.indices[:, :9])
    sign = 1 if metric == "cosine" else -1
    assert torch.allclose(score, sign * expected.values[:, :9], atol=1e-5)
    assert not (idx == torch.arange(200)[:, None]).any()
    # the same as PML's kNN, self excluded its way (k + 1 neighbours, then the query's own index dropped):
    # bit-identical scores, and the same neighbours once exact ties are put in index order
    pml_score, pml_idx = IndexTiesKNN(PML_DISTANCES[metric]())(x, 9, x, ref_includes_query=True)
    assert torch.equal(idx, pml_idx) and torch.equal(score, pml_score)
    # equal scores: the lower reference index first, whatever the block size
    dup = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    for block in (1, 2, 1024):
        assert knn_labels(dup[:1], dup, 4, metric=metric, block=block)[0].tolist() == [[0, 2, 3, 1]]


@pytest.mark.parametrize("call, message", [
    (lambda: retrieval_metrics(torch.zeros(5, 2), torch.zeros(4)), "one label per embedding"),
    (lambda: retrieval_metrics(torch.zeros(0, 2), torch.zeros(0)), "query is empty"),
    (lambda: retrieval_metrics(torch.zeros(5), torch.zeros(5)), "must be 2-D"),
    (lambda: retrieval_metrics(torch.zeros(5, 2), torch.zeros(5), metric="manhattan"), "unknown metric 'manhattan'"),
    (lambda: retrieval_metrics(torch.zeros(5, 2), torch.zeros(5), torch.zeros(3, 2)), "reference_labels together"),
    (lambda: retrieval_metrics(torch.zeros(5, 2), torch.zeros(5), torch.zeros(3, 3), torch.zeros(3)), "same dimension"),
    (lambda: retrieval_metrics(torch.zeros(5, 2), torch.zeros(5), ks=(0, 1)), "ks must be positive integers"),
    (lambda: retrieval_metrics(torch.full((5, 2), float("nan")), torch.zeros(5)), "NaN or infinite"),
    (lambda: knn_labels(torch.zeros(5, 2), torch.zeros(5, 2), 5, same_set=True), "k must be between 1 and 4"),
    (lambda: knn_labels(torch.zeros(5, 2), torch.zeros(4, 2), 2, same_set=True), "same_set=True"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
