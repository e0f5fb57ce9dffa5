"""Retrieval metrics, the yardstick of deep metric learning papers: Recall@K, P@1, R-precision, MAP@R.

Each query ranks the reference embeddings by similarity (cosine, or Euclidean distance). With
rel(i) = 1 when the i-th nearest reference has the query's label, and R = the number of references
with the query's label (the query itself not counted):

    precision_at_1   = mean over queries of rel(1)
    recall_at_K      = mean over queries of max(rel(1), ..., rel(K))    (a hit among the K nearest)
    r_precision      = mean over queries of (1/R) * sum_{i<=R} rel(i)
    mean_average_precision_at_r
                     = mean over queries of (1/R) * sum_{i<=R} P(i) * rel(i),  P(i) = (1/i) sum_{j<=i} rel(j)

recall_at_1 equals precision_at_1. Reference: Musgrave, Belongie, Lim (2020), A Metric Learning
Reality Check, ECCV, https://arxiv.org/abs/2003.08505 (R-precision and MAP@R are defined there).

Queries with R = 0 (a class with no other member among the references) are left out of every mean,
as pytorch-metric-learning's AccuracyCalculator does; if no query is left every metric is NaN.
Equal scores are ranked by reference index (lower first), so results are deterministic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from utils.rank_metrics import metrics_from_ranks

METRICS = ("cosine", "euclidean")


def _embeddings(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().float()
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n embeddings x d), got shape {tuple(x.shape)}: "
                         "reshape it, e.g. x.reshape(len(x), -1)")
    if len(x) == 0:
        raise ValueError(f"{name} is empty: pass at least one embedding")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values: check the model's output")
    return x


def _labels(y, n: int, name: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).detach().cpu()
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be 1-D with one label per embedding ({n}), "
                         f"got shape {tuple(y.shape)}")
    return y


def _top_k(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row of `s` and their columns, largest first, exact ties in column
    order (what a stable descending sort of the whole row gives), without sorting the whole row."""
    k = min(k, s.shape[1])
    top_s, top_i = s.topk(k, dim=1)
    n_kept = (s >= top_s[:, -1:]).sum(1)                            # the top k and anything tied with the k-th
    if int(n_kept.max()) > k:                                        # a tie crosses the k-th place: take the
        n = s.shape[1]                                               # lowest columns among the tied ones
        cols = torch.arange(n, device=s.device).expand_as(s)
        kept = torch.where(s >= top_s[:, -1:], cols, n)
        top_i = -(-kept).topk(int(n_kept.max()), dim=1).values       # kept columns ascending (n: padding)
        top_s = torch.where(top_i < n, s.gather(1, top_i.clamp(max=n - 1)), -torch.inf)
    by_col = torch.argsort(top_i, dim=1)                             # columns ascending, then a stable sort
    top_s, top_i = top_s.gather(1, by_col), top_i.gather(1, by_col)  # by score keeps ties in column order
    order = torch.sort(top_s, dim=1, descending=True, stable=True).indices[:, :k]
    return top_s.gather(1, order), top_i.gather(1, order)


def knn_labels(query, reference, k: int, metric: str = "cosine", same_set: bool = False,
               block: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` nearest references of every query: (indices n_q x k, scores n_q x k), nearest first.

    Scores are cosine similarities (descending) or Euclidean distances (ascending); exact ties go to the
    lower reference index. The work is done in torch in blocks of `block` queries x 16·`block`
    references, keeping a running top-k, so memory is about 16·block² floats whatever the sizes.
    `same_set=True` says that `reference` is `query` itself: each query's own index is then excluded
    from its neighbours.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {list(METRICS)}")
    q, r = _embeddings(query, "query"), _embeddings(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and reference must have the same dimension, got {q.shape[1]} and {r.shape[1]}")
    if same_set and len(q) != len(r):
        raise ValueError("same_set=True needs reference to be query itself (same length)")
    if block < 1:
        raise ValueError(f"block must be a positive number of rows, got {block}")
    available = len(r) - int(same_set)
    if not 1 <= k <= available:
        raise ValueError(f"k must be between 1 and {available} (the references available), got {k}")
    dev, r = q.device, r.to(q.device)   # the work runs where the queries are (CPU or GPU)
    if metric == "cosine":
        q, r = F.normalize(q, dim=1), F.normalize(r, dim=1)
    best_s = torch.empty(len(q), k, device=dev)
    best_i = torch.empty(len(q), k, dtype=torch.long, device=dev)
    ref_block = 16 * block
    for i in range(0, len(q), block):
        qb = q[i:i + block]
        run_s, run_i = qb.new_empty(len(qb), 0), torch.empty(len(qb), 0, dtype=torch.long, device=dev)
        for j in range(0, len(r), ref_block):
            rb = r[j:j + ref_block]
            # higher = nearer; Euclidean as torch.cdist computes it for all but tiny inputs (and as PML's
            # LpDistance does), ‖q‖² − 2q·r + ‖r‖² via a matrix product, whatever the block size
            s = qb @ rb.T if metric == "cosine" else -torch.cdist(qb, rb, compute_mode="use_mm_for_euclid_dist")
            if same_set:   # the query's own column, where it falls in this block
                rows = torch.arange(len(qb), device=dev)
                own = rows + i - j
                inside = (own >= 0) & (own < len(rb))
                s[rows[inside], own[inside]] = -torch.inf
            s, ids = _top_k(s, k)
            # The running best (lower indices) comes first and the sort is stable: ties -> lower index.
            s, order = torch.sort(torch.cat([run_s, s], 1), dim=1, descending=True, stable=True)
            run_s, run_i = s[:, :k], torch.cat([run_i, ids + j], 1).gather(1, order[:, :k])
        best_s[i:i + block], best_i[i:i + block] = run_s, run_i
    return best_i, (best_s if metric == "cosine" else -best_s)


def retrieval_metrics(query, query_labels, reference=None, reference_labels=None,
                      ks: Sequence[int] = (1, 2, 4, 8), metric: str = "cosine") -> dict[str, float]:
    """precision_at_1, recall_at_{k} for each k in `ks`, r_precision, mean_average_precision_at_r.

    `reference=None` retrieves within the query set itself, each query excluded from its own
    neighbours (the usual protocol on classes unseen in training). Otherwise `reference` and
    `reference_labels` are a separate gallery. A K larger than the references available counts
    every reference. Queries whose class has no other reference (R = 0) are left out (see above).
    """
    same_set = reference is None
    if same_set != (reference_labels is None):
        raise ValueError("pass reference and reference_labels together, or neither (retrieve within query)")
    ks = list(ks)
    if not ks or any(not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, e.g. (1, 2, 4, 8), got {ks}")
    q = _embeddings(query, "query")
    yq = _labels(query_labels, len(q), "query_labels")
    r, yr = (q, yq) if same_set else (_embeddings(reference, "reference"), None)
    if not same_set:
        yr = _labels(reference_labels, len(r), "reference_labels")
    if yq.dtype != yr.dtype and (yq.is_floating_point() or yr.is_floating_point()):
        yq, yr = yq.double(), yr.double()
    names = ["precision_at_1", *[f"recall_at_{k}" for k in ks], "r_precision", "mean_average_precision_at_r"]

    # R per query: how many references share its label, itself excluded.
    classes, counts = torch.unique(yr, return_counts=True)
    pos = torch.searchsorted(classes, yq.to(classes.dtype).contiguous()).clamp(max=len(classes) - 1)
    R = torch.where(classes[pos] == yq, counts[pos], 0) - int(same_set)
    keep = R > 0
    if not keep.any():
        return {name: float("nan") for name in names}

    k = min(max(max(ks), int(R.max())), len(r) - int(same_set))
    idx, _ = knn_labels(q, r, k, metric=metric, same_set=same_set)
    idx, yk, R = idx.cpu()[keep], yq[keep], R[keep]
    out = metrics_from_ranks((yr[idx] == yk[:, None]).double(), R, ks)   # rel(i), n x k: notebook 14's cell
    return {name: out[name] for name in names}
