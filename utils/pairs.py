"""Pairs and triplets inside a batch: masks, distances, miners, and a class-balanced sampler.

Pair and triplet losses (contrastive, triplet, siamese: see `utils.losses`) do not classify; they
compare the embeddings of one batch with each other. Everything they need starts here:

    pos, neg = pair_masks(labels)            # B×B: same label (i ≠ j) / different label
    dist = distances(embeddings)             # B×B Euclidean distances (of L2-normalized embeddings)
    a, p, n = batch_hard(dist, labels)       # one (anchor, positive, negative) triple per anchor
    batches = PKSampler(p=32, k=4).epoch(labels, generator)   # P classes × K images per batch

The miners return index triples (a, p, n) into the batch: label[a] == label[p], a ≠ p and
label[a] != label[n]. They match pytorch-metric-learning's miners (`TripletMarginMiner`,
`BatchHardMiner`), including their inequalities, so the heads can be tested against it.
This module imports torch only.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

_TINY = 1e-12  # squared distances at or below this count as 0 (the square root's slope is infinite at 0)


# ----------------------------------------------------------------------------- pairs and distances
def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos, neg): boolean B×B masks of the ordered pairs (i, j) with the same label and i ≠ j, and
    of those with different labels. Every unordered pair appears twice, as (i, j) and (j, i)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def distances(x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """B×B Euclidean distances ‖x_i − x_j‖ between the rows of `x`.

    With `normalize` the rows are first L2-normalized (as pytorch-metric-learning's default
    `LpDistance(normalize_embeddings=True)` does), so distances lie in [0, 2] and d² = 2 − 2 cos θ.

    The squares come from one matrix product, d²_ij = ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j (B×B memory, not
    B×B×D), clamped at 0 against rounding; that rounding (~1e-7 on d² in float32) leaves two identical
    embeddings up to ~3e-4 apart, as in torch.cdist for batches over 25, which computes distances the
    same way. The square root has an infinite slope at 0, so the
    diagonal and any pair of identical embeddings would give NaN gradients; there (d² ≤ 1e-12) the
    distance is set to 0 with a zero gradient instead. Computed in float32 at least, also inside an
    autocast region (float64 inputs stay float64).
    """
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a B×D matrix, got shape {tuple(x.shape)}")
    with torch.autocast(x.device.type, enabled=False):
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        if normalize:
            x = F.normalize(x, dim=1)
        sq = (x * x).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
        eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
        d2 = d2.masked_fill(eye, 0)                       # exactly 0 on the diagonal, whatever the rounding
        positive = d2 > _TINY
        return torch.where(positive, d2.clamp_min(_TINY).sqrt(), torch.zeros_like(d2))


# ----------------------------------------------------------------------------- miners
def _empty(device: torch.device) -> Triplets:
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone()


def all_triplets(labels: torch.Tensor) -> Triplets:
    """Every valid triplet (a, p, n) of the batch: label[a] == label[p], a ≠ p, label[n] ≠ label[a].

    In lexicographic order of (a, p, n), like pytorch-metric-learning's `get_all_triplets_indices`.
    There are Σ_a (K_a − 1)(B − K_a) of them (K_a = size of a's class in the batch): O(B³).
    """
    pos, neg = pair_masks(labels)
    a, p, n = torch.where(pos[:, :, None] & neg[:, None, :])
    return a, p, n


def _triplet_margins(dist: torch.Tensor, labels: torch.Tensor) -> tuple[Triplets, torch.Tensor]:
    """All valid triplets and their margins d_an − d_ap (how much farther the negative is)."""
    a, p, n = all_triplets(labels)
    return (a, p, n), dist[a, n] - dist[a, p]


def semi_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    """Semi-hard triplets (Schroff et al. 2015): the negative is farther than the positive, but by no
    more than the margin, so the triplet loss is still positive:

        d_ap < d_an ≤ d_ap + margin      (computed as 0 < d_an − d_ap ≤ margin)

    = pytorch-metric-learning's `TripletMarginMiner(margin, type_of_triplets="semihard")`.
    """
    (a, p, n), m = _triplet_margins(dist, labels)
    keep = (m <= margin) & (m > 0)
    return a[keep], p[keep], n[keep]


def hard(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    """Hard triplets: the negative is no farther than the positive, d_an ≤ d_ap (computed as
    d_an − d_ap ≤ min(0, margin)). = pytorch-metric-learning's `TripletMarginMiner(margin,
    type_of_triplets="hard")`; note its ≤: a negative exactly as far as the positive is hard."""
    (a, p, n), m = _triplet_margins(dist, labels)
    keep = (m <= margin) & (m <= 0)
    return a[keep], p[keep], n[keep]


def batch_hard(dist: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """Batch hard (Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss"): for every anchor
    that has a positive and a negative in the batch, its farthest positive and its nearest negative.

    One triplet per such anchor (anchors in increasing order), the hardest the batch offers. Ties go
    to the lowest index (torch.max / torch.min along a row), as in pytorch-metric-learning's
    `BatchHardMiner`, which this matches.
    """
    pos, neg = pair_masks(labels)
    p = dist.masked_fill(~pos, float("-inf")).max(dim=1).indices
    n = dist.masked_fill(~neg, float("inf")).min(dim=1).indices
    a = torch.where(pos.any(1) & neg.any(1))[0]
    return a, p[a], n[a]


# name -> miner(dist, labels, margin) -> (a, p, n): one signature for all ("all" and "batch_hard"
# ignore what they do not need)
MINERS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], Triplets]] = {
    "all": lambda dist, labels, margin: all_triplets(labels),
    "semi_hard": semi_hard,
    "hard": hard,
    "batch_hard": lambda dist, labels, margin: batch_hard(dist, labels),
}


def mine(name: str, dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    """The triplets that the miner `name` (one of `MINERS`) picks from a batch."""
    if name not in MINERS:
        raise ValueError(f"unknown triplet mining {name!r}: choose one of {list(MINERS)}")
    return MINERS[name](dist, labels, margin)


@torch.no_grad()
def active_fraction(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(fraction, count): the fraction of ALL valid triplets of the batch with a positive triplet
    loss, d_ap − d_an + margin > 0, and how many valid triplets there are (0-d tensors, no GPU sync).

    Without forming the O(B³) triplets: each anchor's negative distances are sorted once, and for
    each of its positives a binary search counts the negatives nearer than d_ap + margin — O(B² log B).
    """
    pos, neg = pair_masks(labels)
    neg_sorted = dist.masked_fill(~neg, float("inf")).sort(dim=1).values        # row a: d_an ascending
    below = torch.searchsorted(neg_sorted, (dist + margin).contiguous())         # #{n: d_an < d_ap + m}
    active = (below * pos).sum()
    total = (pos.sum(1) * neg.sum(1)).sum()
    return active / total.clamp_min(1), total


# ----------------------------------------------------------------------------- P×K batches
def _below(bound: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One uniform random integer in [0, bound_i) for every entry of `bound` (a LongTensor ≥ 1)."""
    u = torch.rand(bound.shape, generator=g, device=g.device, dtype=torch.float64)
    return torch.minimum((u * bound).long(), bound - 1)


class PKSampler:
    """Class-balanced batches (Hermans et al. 2017): P classes, K images of each, B = P·K.

    Triplet and contrastive losses learn only from pairs inside a batch; a random batch of 128 from
    1,000 classes holds almost no two images of the same class, so there is nothing to pull together.
    P×K batches guarantee every anchor K − 1 positives and (P − 1)·K negatives.

    `epoch(labels, g)` returns `steps(len(labels))` batches of dataset indices. In every batch the P
    classes are distinct, drawn uniformly from the classes present (whatever their sizes), and each
    class contributes K images: K distinct ones when it has at least K (Floyd's algorithm, vectorized
    over all the batches), else K drawn with replacement. Deterministic given the generator; the
    result lies on the generator's device.
    """

    def __init__(self, p: int, k: int):
        if int(p) != p or int(k) != k or p < 1 or k < 1:
            raise ValueError(f"PKSampler needs positive integers p and k, got p={p!r}, k={k!r}")
        self.p, self.k = int(p), int(k)

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def steps(self, n: int) -> int:
        """Batches per epoch for `n` images: max(1, n // (p·k)), so an epoch shows about n images."""
        return max(1, n // self.batch_size)

    def epoch(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """LongTensor steps × (p·k) of indices into `labels`, batch by batch, K per class in a row."""
        g = generator
        labels = labels.to(g.device)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"labels must be a non-empty 1-d tensor, got shape {tuple(labels.shape)}")
        steps, p, k = self.steps(len(labels)), self.p, self.k
        by_class = torch.argsort(labels, stable=True)              # indices grouped class by class
        classes, counts = torch.unique_consecutive(labels[by_class], return_counts=True)
        if len(classes) < p:
            raise ValueError(f"{self!r} needs at least p={p} classes per batch, but the labels have only "
                             f"{len(classes)}: lower p to at most {len(classes)}")
        starts = counts.cumsum(0) - counts                         # where each class begins in by_class

        # P distinct classes per batch: the first p of a random permutation of the classes
        chosen = torch.rand(steps, len(classes), generator=g, device=g.device).argsort(dim=1)[:, :p]
        n_c = counts[chosen].reshape(-1, 1)                        # (steps·p) × 1: each slot's class size

        # K distinct positions in [0, n_c) per slot — Floyd's algorithm: for j = n−K … n−1 draw
        # t ∈ [0, j]; keep t unless already taken, then keep j. Every K-subset is equally likely.
        taken = torch.empty(len(n_c), 0, dtype=torch.long, device=g.device)
        for i in range(k):
            j = n_c - k + i
            t = _below((j + 1).clamp_min(1), g)
            t = torch.where((taken == t).any(1, keepdim=True), j, t)
            taken = torch.cat([taken, t], dim=1)
        # classes smaller than K: K positions drawn with replacement
        with_replacement = _below(n_c.expand(-1, k), g)
        pos = torch.where(n_c >= k, taken, with_replacement)

        idx = by_class[starts[chosen].reshape(-1, 1) + pos]        # (steps·p) × k dataset indices
        return idx.reshape(steps, p * k)

    def __repr__(self) -> str:
        return f"PKSampler(p={self.p}, k={self.k})"
