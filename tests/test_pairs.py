"""Pairs and triplets: masks, distances, miners and the P×K sampler (notebook 09's cells, `utils.pair_losses`), and the pair
heads contrastive, triplet and siamese (`utils.losses`).

The losses and miners are checked against pytorch-metric-learning: `ContrastiveLoss()`,
`TripletMarginLoss(margin)` alone (all triplets) and with `TripletMarginMiner` ("semihard", "hard")
or `BatchHardMiner`. The reference runs in float64, our heads in float32.
"""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pandas as pd

from utils import losses, pair_losses as pairs, train

from pytorch_metric_learning import losses as pml_losses, miners as pml_miners  # noqa: E402

D, MARGIN = 8, 0.2
PAIR_HEADS = ["contrastive", "triplet", "siamese", "proto"]


def _batch(seed: int, kind: str, b: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 embeddings and labels: "repeated" = 5 classes with several members each;
    "singletons" = the same plus 4 classes with a single member (anchors without a positive)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (b,), generator=g)
    if kind == "singletons":
        y[-4:] = torch.arange(10, 14)
    return x, y


CASES = [(seed, kind) for seed in range(3) for kind in ("repeated", "singletons")]
CASE_IDS = [f"{kind}-{seed}" for seed, kind in CASES]


def _pml_miner(mining: str, margin: float = MARGIN):
    return {"all": None,
            "semi_hard": pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard"),
            "hard": pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="hard"),
            "batch_hard": pml_miners.BatchHardMiner()}[mining]


def _pml_triplet(x: torch.Tensor, y: torch.Tensor, mining: str, margin: float = MARGIN) -> torch.Tensor:
    miner = _pml_miner(mining, margin)
    return pml_losses.TripletMarginLoss(margin=margin)(x, y, miner(x, y) if miner else None)


def _as_set(triples) -> set[tuple[int, int, int]]:
    return set(zip(*(t.tolist() for t in triples)))


# ----------------------------------------------------------------------------- masks and distances
def test_pair_masks_by_hand():
    pos, neg = pairs.pair_masks(torch.tensor([0, 0, 1, 0]))
    assert pos.dtype == neg.dtype == torch.bool
    assert pos.nonzero().tolist() == [[0, 1], [0, 3], [1, 0], [1, 3], [3, 0], [3, 1]]
    assert neg.nonzero().tolist() == [[0, 2], [1, 2], [2, 0], [2, 1], [2, 3], [3, 2]]
    assert not (pos & neg).any() and not pos.diagonal().any()


@pytest.mark.parametrize("normalize", [True, False])
def test_distances_equal_cdist(normalize):
    x, _ = _batch(0, "repeated")
    ref = torch.cdist(F.normalize(x, dim=1) if normalize else x, F.normalize(x, dim=1) if normalize else x)
    d = pairs.distances(x, normalize)
    assert d.dtype == torch.float64
    torch.testing.assert_close(d, ref, atol=1e-10, rtol=1e-10)
    assert torch.equal(d.diagonal(), torch.zeros(len(x), dtype=x.dtype))
    if normalize:
        assert d.max() <= 2 + 1e-12


def test_distance_gradient_is_finite_at_zero_distance():
    """The diagonal and identical embeddings (distance 0) must not give NaN gradients."""
    x = torch.randn(6, D, generator=torch.Generator().manual_seed(0))
    x[3] = x[0]
    x[4] = 3 * x[0]                              # same direction: distance 0 once normalized
    for normalize in (True, False):
        xr = x.clone().requires_grad_(True)
        d = pairs.distances(xr, normalize)
        scale = 1.0 if normalize else float(x[0].norm())
        assert d[0, 0] == 0 and d[0, 3] < 1e-3 * scale and (not normalize or d[0, 4] < 1e-3)   # Gram rounding
        d.sum().backward()
        assert torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0


def test_distances_are_float32_under_autocast():
    x = torch.randn(5, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = pairs.distances(x)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, pairs.distances(x))


def test_distances_reject_a_vector():
    with pytest.raises(ValueError, match="B×D"):
        pairs.distances(torch.randn(5))


# ----------------------------------------------------------------------------- miners
@pytest.mark.parametrize("seed,kind", CASES, ids=CASE_IDS)
def test_all_triplets_equal_pml(seed, kind):
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
    _, y = _batch(seed, kind)
    ours = pairs.all_triplets(y)
    ref = lmu.get_all_triplets_indices(y)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))          # same triplets, same order
    counts = torch.bincount(y)[y]
    assert len(ours[0]) == int(((counts - 1) * (len(y) - counts)).sum())
    a, p, n = ours
    assert (y[a] == y[p]).all() and (a != p).all() and (y[a] != y[n]).all()


@pytest.mark.parametrize("mining,pml_type", [("semi_hard", "semihard"), ("hard", "hard")])
@pytest.mark.parametrize("seed,kind", CASES, ids=CASE_IDS)
def test_margin_miners_equal_pml(mining, pml_type, seed, kind):
    x, y = _batch(seed, kind)
    for margin in (0.1, MARGIN, 0.5):
        ours = pairs.MINERS[mining](pairs.distances(x), y, margin)
        ref = pml_miners.TripletMarginMiner(margin=margin, type_of_triplets=pml_type)(x, y)
        assert _as_set(ours) == _as_set(ref) and len(ours[0]) == len(ref[0]) > 0
        a, p, n = ours
        d = pairs.distances(x)
        if mining == "semi_hard":
            assert ((d[a, n] > d[a, p]) & (d[a, n] <= d[a, p] + margin + 1e-12)).all()
        else:
            assert (d[a, n] <= d[a, p]).all()


@pytest.mark.parametrize("seed,kind", CASES, ids=CASE_IDS)
def test_batch_hard_equals_pml(seed, kind):
    x, y = _batch(seed, kind)
    ours = pairs.batch_hard(pairs.distances(x), y)
    ref = pml_miners.BatchHardMiner()(x, y)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))
    a, p, n = ours
    counts = torch.bincount(y)
    assert torch.equal(a, torch.where(counts[y] > 1)[0])              # anchors with a positive
    d = pairs.distances(x)
    pos, neg = pairs.pair_masks(y)
    assert torch.equal(d[a, p], d.masked_fill(~pos, -1).max(1).values[a])  # farthest positive
    assert torch.equal(d[a, n], d.masked_fill(~neg, 9).min(1).values[a])   # nearest negative


def test_batch_hard_breaks_ties_like_pml():
    """Duplicated embeddings give equal distances: the lowest index wins, in PML too."""
    x, y = _batch(0, "repeated", b=12)
    x[5] = x[2]
    x[7] = x[2]
    x[9] = x[1]
    ours = pairs.batch_hard(pairs.distances(x), y)
    ref = pml_miners.BatchHardMiner()(x, y)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_miners_on_a_batch_without_triplets():
    x, y = torch.randn(4, D), torch.arange(4)                        # all labels distinct
    for name in pairs.MINERS:
        a, p, n = pairs.MINERS[name](pairs.distances(x), y, MARGIN)
        assert len(a) == len(p) == len(n) == 0 and a.dtype == torch.long


def test_unknown_mining_lists_the_choices():
    with pytest.raises(ValueError, match="batch_hard"):
        losses.make("triplet", emb_dim=D, n_classes=3, mining="hardest")
    with pytest.raises(ValueError, match="semi_hard"):
        losses.make("triplet", emb_dim=D, n_classes=3, mining="semihard")


# ----------------------------------------------------------------------------- losses vs PML
PML_FORM = dict(squared=False, average="nonzero")   # the form pytorch-metric-learning implements


def _grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("seed,kind", CASES, ids=CASE_IDS)
def test_contrastive_equals_pml(seed, kind):
    x, y = _batch(seed, kind)
    head = losses.make("contrastive", emb_dim=D, n_classes=5, **PML_FORM)
    ours, g_ours = _grad(lambda e: head(e.float(), y), x)
    ref, g_ref = _grad(lambda e: pml_losses.ContrastiveLoss()(e, y), x)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_ours.double(), g_ref, atol=1e-6, rtol=1e-4)


def test_contrastive_with_other_margins_equals_pml():
    x, y = _batch(1, "repeated")
    x = x.float()
    ref = pml_losses.ContrastiveLoss(pos_margin=0.3, neg_margin=1.2)(x, y)
    head = losses.make("contrastive", emb_dim=D, n_classes=5, pos_margin=0.3, neg_margin=1.2, **PML_FORM)
    torch.testing.assert_close(head(x, y), ref)


def test_contrastive_all_terms_zero_like_pml():
    """Every class collapsed to one point, classes ≥ neg_margin apart: both averages are over no
    non-zero term, the loss is 0 (not NaN) and so is its gradient."""
    y = torch.tensor([0, 0, 1, 1, 2])
    x = torch.eye(D)[y] * torch.tensor([1.0, 2.0, 3.0, 1.0, 5.0])[:, None]   # classes are orthogonal: d = √2
    head = losses.make("contrastive", emb_dim=D, n_classes=3, **PML_FORM)
    loss, grad = _grad(lambda e: head(e, y), x)
    assert loss == 0 and torch.equal(grad, torch.zeros_like(grad))
    assert pml_losses.ContrastiveLoss()(x, y) == 0
    assert head(x.flip(0), y) > 0                                   # not 0 by construction


@pytest.mark.parametrize("mining", list(pairs.MINERS))
@pytest.mark.parametrize("seed,kind", CASES, ids=CASE_IDS)
def test_triplet_equals_pml(mining, seed, kind):
    x, y = _batch(seed, kind)
    for margin in (MARGIN, 0.5):
        head = losses.make("triplet", emb_dim=D, n_classes=5, margin=margin, mining=mining, **PML_FORM)
        ours = head(x.float(), y)
        assert ours > 0
        torch.testing.assert_close(ours.double(), _pml_triplet(x, y, mining, margin), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mining", ["all", "semi_hard", "batch_hard"])
def test_triplet_gradients_equal_pml(mining):
    x, y = _batch(2, "singletons")
    head = losses.make("triplet", emb_dim=D, n_classes=5, mining=mining, **PML_FORM)
    ours, g_ours = _grad(lambda e: head(e.float(), y), x)
    ref, g_ref = _grad(lambda e: _pml_triplet(e, y, mining), x)
    torch.testing.assert_close(ours.double(), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_ours.double(), g_ref, atol=1e-6, rtol=1e-4)
    assert g_ours.abs().sum() > 0


def test_triplet_without_triplets_is_zero_like_pml():
    x, y = torch.randn(5, D, requires_grad=True), torch.arange(5)
    for mining in pairs.MINERS:
        loss = losses.make("triplet", D, 5, mining=mining, **PML_FORM)(x, y)
        assert loss == 0 and _pml_triplet(x, y, mining) == 0
        loss.backward()
        assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- hand-computed values
# 1-d points 0, 1, 3, 6 with labels 0, 0, 1, 1 (normalize=False). Distances:
#   d01 = 1, d23 = 3 (positives); d02 = 3, d03 = 6, d12 = 2, d13 = 5 (negatives)
X_HAND, Y_HAND = torch.tensor([[0.0], [1.0], [3.0], [6.0]]), torch.tensor([0, 0, 1, 1])


@pytest.mark.parametrize("hp,expected", [
    # PML's form. positives: d = 1, 3 → mean 2;  negatives [4 − d]₊ = 1, 0, 2, 0 → mean of non-zero 1.5
    (dict(neg_margin=4.0, **PML_FORM), 2.0 + 1.5),
    # positives [d − 1.5]₊ = 0, 1.5 → 1.5 (a plain mean would give 0.75)
    (dict(pos_margin=1.5, neg_margin=4.0, **PML_FORM), 1.5 + 1.5),
    # squared hinges, non-zero means: ½·1, ½·9 → 2.5;  ½·1, ½·4 → 1.25
    (dict(neg_margin=4.0, squared=True, average="nonzero"), 2.5 + 1.25),
    # default margins, PML's form: every negative is farther than 1 → only the positives count
    (PML_FORM, 2.0),
])
def test_contrastive_by_hand(hp, expected):
    head = losses.make("contrastive", emb_dim=1, n_classes=2, normalize=False, **hp)
    assert head(X_HAND, Y_HAND).item() == pytest.approx(expected, abs=1e-6)


def _hadsell(x: torch.Tensor, y: torch.Tensor, m: float) -> torch.Tensor:
    """Hadsell, Chopra & LeCun (2006), eq. 4, with Y = 0 for similar pairs: over every pair of the batch,
    L = (1 − Y) ½ D² + Y ½ {max(0, m − D)}², averaged over the pairs (the paper sums them)."""
    terms = []
    for a in range(len(x)):
        for b in range(len(x)):
            if a != b:
                dist = torch.linalg.norm(x[a] - x[b])
                Y = float(y[a] != y[b])
                terms.append((1 - Y) * 0.5 * dist ** 2 + Y * 0.5 * torch.clamp(m - dist, min=0) ** 2)
    return torch.stack(terms).mean()


def test_contrastive_default_is_hadsell_by_hand():
    # squared, over all 12 ordered pairs: positives ½·1, ½·9 (twice each); negatives ½[4 − d]₊² = ½, 0, 2, 0
    head = losses.make("contrastive", emb_dim=1, n_classes=2, normalize=False, neg_margin=4.0)
    assert head(X_HAND, Y_HAND).item() == pytest.approx((0.5 + 4.5 + 0.5 + 2.0) * 2 / 12, abs=1e-6)
    x, y = _batch(3, "repeated")
    for m in (0.5, 1.0):
        head = losses.make("contrastive", emb_dim=D, n_classes=5, neg_margin=m)
        torch.testing.assert_close(head(x.float(), y).double(),
                                   _hadsell(torch.nn.functional.normalize(x.double(), dim=1), y, m))


def _facenet(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """FaceNet (Schroff et al. 2015), eq. 2 over every valid triplet: Σ [‖a − p‖² − ‖a − n‖² + α]₊ / N."""
    terms = [torch.clamp((x[a] - x[p]).square().sum() - (x[a] - x[n]).square().sum() + alpha, min=0)
             for a in range(len(x)) for p in range(len(x)) for n in range(len(x))
             if a != p and y[a] == y[p] and y[a] != y[n]]
    return torch.stack(terms).mean()


def test_triplet_default_is_facenet_squared_by_hand():
    x, y = _batch(4, "repeated")
    e = torch.nn.functional.normalize(x.double(), dim=1)
    head = losses.make("triplet", emb_dim=D, n_classes=5, mining="all")      # margin 0.2, squared, all
    torch.testing.assert_close(head(x.float(), y).double(), _facenet(e, y, 0.2))
    # semi-hard, on the squared distances: d²_ap < d²_an ≤ d²_ap + α, then the plain mean of those
    d2 = torch.cdist(e, e) ** 2
    semi = [(a, p, n) for a in range(len(e)) for p in range(len(e)) for n in range(len(e))
            if a != p and y[a] == y[p] and y[a] != y[n] and d2[a, p] < d2[a, n] <= d2[a, p] + 0.2]
    assert semi
    want = torch.stack([d2[a, p] - d2[a, n] + 0.2 for a, p, n in semi]).mean()
    got = losses.make("triplet", emb_dim=D, n_classes=5, mining="semi_hard")(x.float(), y)
    torch.testing.assert_close(got.double(), want)


def test_squared_and_unsquared_forms_differ():
    x, y = _batch(4, "repeated")
    a = losses.make("triplet", emb_dim=D, n_classes=5, mining="all")(x.float(), y)
    b = losses.make("triplet", emb_dim=D, n_classes=5, mining="all", squared=False)(x.float(), y)
    c = losses.make("contrastive", emb_dim=D, n_classes=5)(x.float(), y)
    d = losses.make("contrastive", emb_dim=D, n_classes=5, **PML_FORM)(x.float(), y)
    assert abs(a - b) > 1e-3 and abs(c - d) > 1e-3
    with pytest.raises(ValueError, match="average"):
        losses.make("triplet", emb_dim=D, n_classes=5, average="sum")


# margin 1, L = [d_ap − d_an + 1]₊. The 8 valid triplets (a, p, n) and their losses:
#   (0,1,2) 0  (0,1,3) 0  (1,0,2) 0  (1,0,3) 0  (2,3,0) 1  (2,3,1) 2  (3,2,0) 0  (3,2,1) 0
@pytest.mark.parametrize("mining,expected,n_mined,active_mined", [
    ("all", 1.5, 8, 0.25),                 # mean of the non-zero 1, 2
    ("hard", 1.5, 2, 1.0),                 # d_an ≤ d_ap: (2,3,0) [3 ≤ 3] and (2,3,1)
    ("semi_hard", 0.0, 1, 0.0),            # only (1,0,2): 1 < 2 ≤ 1 + 1, on the boundary: loss 0
    ("batch_hard", 2.0, 4, 0.25),          # (0,1,2) (1,0,2) (2,3,1) (3,2,1): 0, 0, 2, 0
])
def test_triplet_by_hand(mining, expected, n_mined, active_mined):
    head = losses.make("triplet", emb_dim=1, n_classes=2, margin=1.0, mining=mining, normalize=False, **PML_FORM)
    head.begin(1)
    assert head(X_HAND, Y_HAND).item() == pytest.approx(expected, abs=1e-6)
    row = triplet_stats(head).iloc[0]
    assert row["n_mined"] == n_mined and row["n_all"] == 8
    assert row["active_mined"] == pytest.approx(active_mined) and row["active_all"] == pytest.approx(0.25)


def test_triplet_by_hand_matches_pml_on_unnormalized_distances():
    from pytorch_metric_learning.distances import LpDistance
    ref = pml_losses.TripletMarginLoss(margin=1.0, distance=LpDistance(normalize_embeddings=False))
    head = losses.make("triplet", emb_dim=1, n_classes=2, margin=1.0, mining="all", normalize=False, **PML_FORM)
    torch.testing.assert_close(head(X_HAND, Y_HAND), ref(X_HAND, Y_HAND))


# ----------------------------------------------------------------------------- siamese
def test_siamese_probability_by_hand_symmetric_and_broadcast():
    """Koch et al.: p = σ(Σ_j α_j |σ(x1_j) − σ(x2_j)| + b), sigmoid features then weighted L1."""
    head = losses.make("siamese", emb_dim=2, n_classes=3)
    with torch.no_grad():
        head.alpha.weight.copy_(torch.tensor([[-1.0, -2.0]]))
        head.alpha.bias.fill_(0.5)
    h1, h2 = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    s = torch.sigmoid
    l1 = (s(torch.tensor(0.0)) - s(torch.tensor(1.0))).abs()
    expected = torch.sigmoid(torch.stack([-1.0 * l1 - 2.0 * l1 + 0.5, torch.tensor(0.5)]))
    torch.testing.assert_close(head.same_probability(h1, h2), expected)
    torch.testing.assert_close(head.same_probability(h2, h1), expected)
    x = torch.randn(5, 2)
    table = head.same_probability(x[:, None], x[None, :])
    assert table.shape == (5, 5) and ((table > 0) & (table < 1)).all()
    torch.testing.assert_close(table, table.T)


def test_siamese_loss_is_bce_over_balanced_pairs():
    """Hand formula: every same-class pair i < j, as many different-class pairs, mean BCE over them."""
    torch.manual_seed(0)
    head = losses.make("siamese", emb_dim=D, n_classes=3)
    x, y = torch.randn(10, D), torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    i, j, same = head.balanced_pairs(y)
    n_pos = sum(int(y[a] == y[b]) for a in range(10) for b in range(a + 1, 10))
    assert int(same.sum()) == n_pos == int((1 - same).sum()) and bool((i < j).all())
    assert torch.equal(same, (y[i] == y[j]).float())
    assert len({(int(a), int(b)) for a, b in zip(i, j)}) == len(i)              # no pair twice
    torch.manual_seed(1)
    loss = head(x, y)
    torch.manual_seed(1)
    i, j, same = head.balanced_pairs(y)                                         # the draw the loss used
    bce = [-torch.log(head.same_probability(x[a], x[b]) if t else 1 - head.same_probability(x[a], x[b]))
           for a, b, t in zip(i, j, same)]
    torch.testing.assert_close(loss, torch.stack(bce).mean())
    torch.manual_seed(2)
    assert not torch.equal(head.balanced_pairs(y)[1], j)                         # a fresh draw of negatives
    # no positive pair in the batch: one random negative pair
    _, _, s0 = head.balanced_pairs(torch.arange(10))
    assert s0.tolist() == [0.0]


def test_siamese_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    head = losses.make("siamese", emb_dim=D, n_classes=3)
    x, y = torch.randn(12, D), torch.arange(12) % 3
    head(x, y).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert {n for n, _ in head.named_parameters()} == {"alpha.weight", "alpha.bias"}


def test_siamese_gradient_is_the_same_every_time():
    """Notebook 10's batch (32 characters × 4, 128-d) on two threads: the embedding gradient is bit for bit the same
    on every backward pass. With `x[i]` it was not (its CPU backward adds rows in parallel, in a varying order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, 2))
    try:
        torch.manual_seed(0)
        head = losses.make("siamese", emb_dim=128, n_classes=32)
        x0, y = torch.randn(128, 128), torch.arange(128) % 32
        grads = []
        for _ in range(8):
            torch.manual_seed(1)                         # the same balanced pairs every time
            x = x0.clone().requires_grad_(True)
            head(x, y).backward()
            grads.append(x.grad)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(g, grads[0]) for g in grads[1:])


def test_siamese_one_shot_after_training():
    """After training on separable data, each query's most probable support is of its own class."""
    x, y = _toy()
    model, head = _train(losses.make("siamese", emb_dim=4, n_classes=2), x, y, steps=60)
    with torch.no_grad():
        e = model(x)
        support = torch.stack([e[y == c][0] for c in (0, 1)])
        pick = head.same_probability(e[:, None], support[None]).argmax(1)
    assert (pick == y).float().mean() > 0.95


# ----------------------------------------------------------------------------- every pair head
def _toy(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two overlapping Gaussian classes in 8-d, linearly separable enough to learn."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    means = torch.randn(2, D, generator=g)
    return means[y] + 0.8 * torch.randn(n, D, generator=g), y


def _train(head: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 40,
           lr: float = 0.05, emb_dim: int = 4) -> tuple[nn.Module, nn.Module]:
    """`steps` of Adam on a linear embedding D -> `emb_dim` (the head's) and the head."""
    torch.manual_seed(0)
    model = nn.Linear(D, emb_dim)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=lr)
    if hasattr(head, "begin"):
        head.begin(steps)
    head.train()
    for _ in range(steps):
        loss = head(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if hasattr(head, "step"):
            head.step()
    return model, head


def test_registry_keeps_classification_and_pair_heads_apart():
    assert set(PAIR_HEADS) == set(losses.PAIR_NAMES)
    assert not set(losses.PAIR_NAMES) & set(losses.NAMES)
    assert all(losses.has_logits(losses.make(n, D, 3)) for n in losses.NAMES)
    assert not any(losses.has_logits(losses.make(n, D, 3)) for n in losses.PAIR_NAMES)
    with pytest.raises(ValueError) as e:
        losses.make("quadruplet", emb_dim=D, n_classes=3)
    assert all(n in str(e.value) for n in PAIR_HEADS)


@pytest.mark.parametrize("name", PAIR_HEADS)
def test_pair_head_builds_and_has_no_logits(name):
    head = losses.make(name, emb_dim=8, n_classes=3)
    assert isinstance(head, nn.Module) and head.name == name and not losses.has_logits(head)
    assert not hasattr(head, "weight") and not hasattr(head, "logits")
    x, y = torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    loss = head(x, y)
    assert loss.ndim == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("name", PAIR_HEADS)
def test_pair_heads_refuse_mixup(name):
    """A pair loss has no loss per sample: `fit` says so instead of mixing nothing."""
    head = losses.make(name, emb_dim=8, n_classes=3)
    x, y = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    with pytest.raises(ValueError, match="mixup"):
        train.fit(net, head, x, y, epochs=1, bs=8, mixup=0.4, progress=False, device="cpu")


@pytest.mark.parametrize("name", PAIR_HEADS)
def test_pair_heads_are_float32_and_finite_under_autocast(name):
    head = losses.make(name, emb_dim=8, n_classes=3)
    x, y = torch.randn(8, 8), torch.arange(8) % 2
    x[1] = x[0]                                   # a zero distance
    x = x.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = head(x, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("name,hp", [("contrastive", {}), ("contrastive", {"squared": True}),
                                     ("siamese", {})]
                         + [("triplet", {"mining": m}) for m in pairs.MINERS])
def test_a_few_steps_reduce_the_loss(name, hp):
    x, y = _toy()
    head = losses.make(name, emb_dim=4, n_classes=2, **hp)
    torch.manual_seed(0)
    before = head(nn.Linear(D, 4)(x), y).item()
    model, head = _train(head, x, y, steps=30)
    after = head(model(x), y).item()
    assert after < 0.7 * before, (before, after)


# ----------------------------------------------------------------------------- active-triplet stats
def _active_all_brute_force(d: torch.Tensor, y: torch.Tensor, margin: float) -> float:
    a, p, n = pairs.all_triplets(y)
    return (d[a, p] - d[a, n] + margin > 0).float().mean().item()


@pytest.mark.parametrize("seed,kind", CASES, ids=CASE_IDS)
def test_active_fraction_equals_brute_force(seed, kind):
    x, y = _batch(seed, kind)
    d = pairs.distances(x)
    for margin in (0.05, MARGIN, 1.0):
        frac, total = pairs.active_fraction(d, y, margin)
        assert total.item() == len(pairs.all_triplets(y)[0])
        assert frac.item() == pytest.approx(_active_all_brute_force(d, y, margin), abs=1e-12)
    assert pairs.active_fraction(d, torch.arange(len(y)), MARGIN)[0] == 0     # no triplets: 0, not NaN


def triplet_stats(head) -> pd.DataFrame:
    """A triplet head's `history`, one row per training step from 1, as notebook 09 tabulates it."""
    h = torch.stack(head.history).numpy() if head.history else torch.empty(0, 4).numpy()
    return pd.DataFrame(h, columns=["active_all", "active_mined", "n_mined", "n_all"],
                        index=pd.RangeIndex(1, len(h) + 1, name="step"))


def test_triplet_stats_shapes_ranges_and_reset():
    x, y = _toy()
    head = losses.make("triplet", emb_dim=4, n_classes=2, mining="batch_hard", squared=False)
    assert len(triplet_stats(head)) == 0 and list(triplet_stats(head).columns) == ["active_all", "active_mined", "n_mined", "n_all"]
    _, head = _train(head, x, y, steps=7)
    s = triplet_stats(head)
    assert len(s) == 7 and list(s.index) == list(range(1, 8)) and s.index.name == "step"
    assert s["active_all"].between(0, 1).all() and s["active_mined"].between(0, 1).all()
    assert (s["n_mined"] == 64).all() and (s["n_all"] == 64 * 31 * 32).all()      # batch hard: one per anchor
    assert all(isinstance(t, torch.Tensor) for t in head.history)
    head.eval()
    head(x, y)                                                        # eval forwards are not recorded
    assert len(triplet_stats(head)) == 7
    head.begin(10)
    assert len(triplet_stats(head)) == 0


def test_triplet_stats_match_the_batch():
    x, y = _batch(0, "singletons")
    head = losses.make("triplet", emb_dim=D, n_classes=5, mining="all").train()
    head.begin(1)
    loss = head(x.float(), y)
    row = triplet_stats(head).iloc[0]
    d = pairs.distances(x.float()) ** 2                 # FaceNet's squared distances, as the loss compares them
    assert row["active_all"] == pytest.approx(_active_all_brute_force(d, y, MARGIN), abs=1e-6)
    assert row["active_all"] == pytest.approx(row["active_mined"], abs=1e-6)        # "all" mines everything
    assert row["n_mined"] == row["n_all"] == len(pairs.all_triplets(y)[0])
    assert loss > 0


def test_fewer_triplets_are_active_as_training_goes_on():
    """Most triplets become easy: the fraction of all triplets with a non-zero loss falls."""
    x, y = _toy()
    _, head = _train(losses.make("triplet", emb_dim=4, n_classes=2), x, y, steps=40)
    active = triplet_stats(head)["active_all"]
    assert active.iloc[:3].mean() > 0.2
    assert active.iloc[-3:].mean() < 0.5 * active.iloc[:3].mean()
    assert not math.isnan(triplet_stats(head)["active_mined"].iloc[0])


# ----------------------------------------------------------------------------- P×K sampler
def _labels(seed: int = 0, n: int = 500, classes: int = 20) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def test_pk_batches_hold_p_classes_of_k_images():
    y = _labels()
    s = pairs.PKSampler(p=6, k=4)
    batches = s.epoch(y, torch.Generator().manual_seed(0))
    assert batches.shape == (s.steps(len(y)), 24) == (500 // 24, 24) and batches.dtype == torch.long
    assert ((batches >= 0) & (batches < len(y))).all()
    for b in batches:
        groups = y[b].reshape(6, 4)
        assert (groups == groups[:, :1]).all()                         # K in a row of one class
        assert len(set(groups[:, 0].tolist())) == 6                    # P distinct classes
        assert len(set(b.tolist())) == 24                              # every class here has ≥ K images
        assert Counter(y[b].tolist()) == {c: 4 for c in groups[:, 0].tolist()}


def test_pk_is_deterministic_under_a_seed():
    y, s = _labels(), pairs.PKSampler(p=5, k=3)
    a = s.epoch(y, torch.Generator().manual_seed(3))
    b = s.epoch(y, torch.Generator().manual_seed(3))
    c = s.epoch(y, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(3)
    assert not torch.equal(s.epoch(y, g), s.epoch(y, g))               # the next epoch differs


def test_pk_small_class_is_drawn_with_replacement():
    y = torch.tensor([0] * 10 + [1] * 2 + [2] * 7 + [3])
    s = pairs.PKSampler(p=4, k=3)
    for seed in range(20):
        (b,) = s.epoch(y, torch.Generator().manual_seed(seed))
        groups = y[b].reshape(4, 3)
        assert sorted(groups[:, 0].tolist()) == [0, 1, 2, 3] and (groups == groups[:, :1]).all()
        for c, members in zip(groups[:, 0].tolist(), b.reshape(4, 3)):
            if c in (0, 2):
                assert len(set(members.tolist())) == 3                # without replacement
            else:
                assert set(members.tolist()) <= set(torch.where(y == c)[0].tolist())
    (b,) = s.epoch(y, torch.Generator().manual_seed(0))
    assert len(set(b[y[b] == 3].tolist())) == 1                        # the 1-image class, 3 times


def test_pk_draws_every_k_subset_equally_often():
    """Floyd's algorithm: 3 of 5 images, each of the 10 subsets about 1/10 of the time."""
    y, s, g = torch.zeros(5, dtype=torch.long), pairs.PKSampler(p=1, k=3), torch.Generator().manual_seed(0)
    counts = Counter(tuple(sorted(s.epoch(y, g)[0].tolist())) for _ in range(5000))
    assert len(counts) == 10 and all(400 < v < 600 for v in counts.values())


def test_pk_too_few_classes_says_to_lower_p():
    with pytest.raises(ValueError, match="lower p"):
        pairs.PKSampler(p=8, k=2).epoch(torch.arange(40) % 5, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        pairs.PKSampler(p=0, k=2)


def test_pk_steps_and_repr():
    s = pairs.PKSampler(p=32, k=4)
    assert repr(s) == "PKSampler(p=32, k=4)"
    assert s.steps(60_000) == 468 and s.steps(10) == 1 and s.steps(128) == 1
    assert len(pairs.PKSampler(2, 2).epoch(torch.tensor([0, 1, 1]), torch.Generator().manual_seed(0))) == 1


def test_pk_is_fast_on_100k_labels():
    import time
    y = torch.randint(0, 1000, (100_000,), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    batches = pairs.PKSampler(p=32, k=4).epoch(y, torch.Generator().manual_seed(0))
    assert time.perf_counter() - t0 < 2.0
    assert batches.shape == (781, 128)
    groups = y[batches].reshape(781, 32, 4)
    assert (groups == groups[..., :1]).all()


# ----------------------------------------------------------------------------- prototypical head
def test_prototypical_loss_by_hand():
    """Two classes, two images each: the first of each is the support (the prototype), the second the query."""
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 0, 1])
    head = losses.make("proto", emb_dim=2, n_classes=2)
    # queries: x2 (class 0) at distances 1, 2 from the prototypes 0 and 3; x3 (class 1) at 2, 1
    d2 = torch.tensor([[1.0, 4.0], [4.0, 1.0]])
    expected = F.cross_entropy(-d2, torch.tensor([0, 1]))
    torch.testing.assert_close(head(x, y), expected)
    assert not losses.has_logits(head)


def test_prototypical_loss_trains_and_ignores_classes_without_a_query():
    torch.manual_seed(0)
    x = torch.randn(24, 2)
    y = torch.arange(24) % 4
    net = torch.nn.Linear(2, 4)
    head = losses.make("proto", emb_dim=4, n_classes=4)
    feats = torch.randn(24, 2) + 3 * F.one_hot(y % 2, 2).float()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    first = head(net(feats), y % 2).item()
    for _ in range(30):
        loss = head(net(feats), y % 2)
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < 0.5 * first
    single = torch.tensor([0, 0, 1])                    # class 1 has one image: support only, no query
    assert torch.isfinite(head(torch.randn(3, 4), single))
