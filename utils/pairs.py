"""Pairs and triplets inside a batch (notebook 09's cells, `utils.pair_losses`, re-exported) and the class-balanced
P×K sampler they need (utils/README.md)."""
from __future__ import annotations

import torch

from .pair_losses import (MINERS, active_fraction, all_triplets, batch_hard, distances, hard,  # noqa: F401
                          mean_nonzero, pair_masks, semi_hard)

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def mine(name: str, dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    """The triplets that the miner `name` (one of `MINERS`) picks from a batch."""
    if name not in MINERS:
        raise ValueError(f"unknown triplet mining {name!r}: choose one of {list(MINERS)}")
    return MINERS[name](dist, labels, margin)


STAT_COLUMNS = ("active_all", "active_mined", "n_mined", "n_all")


def triplet_stats(head) -> "pd.DataFrame":
    """A triplet head's `history` as a DataFrame, one row per training step since `begin` (index `step`, from 1):
    `active_all` = the fraction of all valid triplets of the batch with a non-zero loss, `active_mined` = the
    same among the mined ones (NaN when none were mined), `n_mined`, `n_all` = their counts."""
    import pandas as pd

    rows = torch.stack(head.history) if head.history else torch.empty(0, len(STAT_COLUMNS))
    df = pd.DataFrame(rows.cpu().numpy(), columns=list(STAT_COLUMNS))
    df.index = pd.RangeIndex(1, len(df) + 1, name="step")
    return df.astype({"n_mined": "int64", "n_all": "int64"})


# ----------------------------------------------------------------------------- P×K batches
def _below(bound: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One uniform random integer in [0, bound_i) for every entry of `bound` (a LongTensor ≥ 1)."""
    u = torch.rand(bound.shape, generator=g, device=g.device, dtype=torch.float64)
    return torch.minimum((u * bound).long(), bound - 1)


class PKSampler:
    """Class-balanced batches (Hermans et al. 2017): P classes, K images of each, B = P·K; every anchor has
    K − 1 positives. `epoch(labels, g)`: `steps(len(labels))` batches of indices (utils/README.md: how drawn)."""

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
