"""Anomaly detection in embedding space: kNN distances (batched torch), LOF, normalization, AUROC.

Convention everywhere: a higher score means more anomalous; anomalies are the positive class.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .train import default_device

METRICS = ("cosine", "euclidean")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {list(METRICS)}")


def _prepare(train: torch.Tensor, metric: str, device: torch.device) -> torch.Tensor:
    train = torch.as_tensor(train).to(device, torch.float32)
    return F.normalize(train, dim=1) if metric == "cosine" else train


def _distances(train: torch.Tensor, test: torch.Tensor, metric: str) -> torch.Tensor:
    """All distances between a batch of test rows and the (prepared) train rows: b×n."""
    if metric == "cosine":  # 1 − a·b in one fused matrix product (may dip ~1e-7 below 0)
        return torch.addmm(test.new_ones(1), F.normalize(test, dim=1), train.T, alpha=-1)
    return torch.cdist(test, train)


def _batches(train: torch.Tensor, test: torch.Tensor, metric: str, bs: int,
             device: torch.device | str | None):
    """Yield (train, test batch, b×n distances) for every batch of `bs` test rows (train prepared once)."""
    _check_metric(metric)
    if bs < 1:
        raise ValueError(f"bs must be a positive batch size, got {bs}")
    dev = torch.device(device) if device is not None else default_device()
    tr = _prepare(train, metric, dev)
    test = torch.as_tensor(test)
    for i in range(0, len(test), bs):
        tb = test[i:i + bs].to(dev, torch.float32)
        yield tr, tb, _distances(tr, tb, metric)


def _smallest(tr: torch.Tensor, tb: torch.Tensor, d: torch.Tensor, k: int,
              metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` smallest distances per row of `d` and their train indices.

    cdist's fast matrix-product form loses precision near zero (a duplicate sits at ~1e-3, not 0),
    so euclidean distances of the chosen neighbours are recomputed exactly (b×d memory per column).
    """
    v, idx = d.topk(k, dim=1, largest=False)
    if metric == "cosine":
        v = v.clamp_min(0)
    else:
        v = torch.stack([(tb - tr[idx[:, j]]).norm(dim=1) for j in range(k)], dim=1)
    return v, idx


def knn_distance(train: torch.Tensor, test: torch.Tensor, k: int | None = 1, metric: str = "cosine",
                 bs: int = 2048, device: torch.device | str | None = None) -> torch.Tensor:
    """Per test row, the mean of its `k` smallest distances to the train rows (k=1: the nearest one).

    `k=None` (or "all") is the mean distance to every train row. metric "cosine" = 1 − cosine
    similarity, "euclidean" = L2. Batched over test rows (memory ≈ bs × len(train) floats);
    runs on `device` (default: CUDA when available); returns a float32 CPU tensor.
    """
    _check_metric(metric)
    n = len(train)
    if k == "all":
        k = None
    if k is not None and not (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k <= n):
        raise ValueError(f"k must be an integer in 1..{n} (the number of train rows) or None for "
                         f"the mean over all of them, got k={k!r}")
    out = []
    for tr, tb, d in _batches(train, test, metric, bs, device):
        mean = d.mean(1).clamp_min_(0) if k is None else _smallest(tr, tb, d, int(k), metric)[0].mean(1)
        out.append(mean.cpu())
    return torch.cat(out) if out else torch.empty(0)


def nearest(train: torch.Tensor, test: torch.Tensor, metric: str = "cosine", bs: int = 2048,
            device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of the nearest train row for every test row, both on the CPU."""
    if len(train) == 0:
        raise ValueError("nearest() needs at least one train row")
    dist, idx = [], []
    for tr, tb, d in _batches(train, test, metric, bs, device):
        v, i = _smallest(tr, tb, d, 1, metric)
        dist.append(v[:, 0].cpu()), idx.append(i[:, 0].cpu())
    if not dist:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(dist), torch.cat(idx)


def normalize(scores: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Divide `scores` by their mean over the normal samples (`normal` is a bool mask), so normal ≈ 1."""
    scores, normal = torch.as_tensor(scores).float(), torch.as_tensor(normal, dtype=torch.bool)
    if normal.shape != scores.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and mask {tuple(normal.shape)} differ in shape")
    if not normal.any():
        raise ValueError("normalize() needs at least one normal sample")
    return scores / scores[normal].mean()


# ----------------------------------------------------------------------------- Local Outlier Factor
def _numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def lof(train: torch.Tensor, n_neighbors: int = 20, contamination: float = 0.001,
        metric: str = "euclidean", n_jobs: int | None = -1):
    """A scikit-learn LocalOutlierFactor fitted on `train` for novelty detection (novelty=True)."""
    from sklearn.neighbors import LocalOutlierFactor

    return LocalOutlierFactor(n_neighbors=n_neighbors, contamination=contamination, metric=metric,
                              novelty=True, n_jobs=n_jobs).fit(_numpy(train))


def lof_scores(model, test: torch.Tensor) -> torch.Tensor:
    """LOF anomaly scores of `test` (−score_samples: higher = more anomalous, ≈1 for inliers)."""
    return torch.from_numpy(-model.score_samples(_numpy(test))).float()


def threshold(model, contamination: float | None = None) -> float:
    """The score_samples value below which LOF flags a point: scikit-learn's own rule (the
    `contamination` quantile of the training points' scores), for any contamination without refitting."""
    if contamination is None:
        return float(model.offset_)
    return float(np.percentile(model.negative_outlier_factor_, 100.0 * contamination))


def normal_rate(model, test: torch.Tensor, contamination: float | None = None) -> float:
    """Fraction of `test` the fitted LOF keeps as inliers (its `predict` == +1 when `contamination`
    is None; otherwise the same rule with the threshold `contamination` would have given)."""
    return float((model.score_samples(_numpy(test)) >= threshold(model, contamination)).mean())


# ----------------------------------------------------------------------------- evaluation
def pool(normal: torch.Tensor, outliers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores of a normal and an outlier test set as one vector, and its anomaly mask (outliers True)."""
    is_anomaly = torch.cat([torch.zeros(len(normal), dtype=torch.bool), torch.ones(len(outliers), dtype=torch.bool)])
    return torch.cat([normal, outliers]), is_anomaly


def auroc(scores: torch.Tensor, is_anomaly: torch.Tensor) -> float:
    """Area under the ROC curve: anomalies are positives, a higher score means more anomalous."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(_numpy(is_anomaly).astype(bool), _numpy(scores)))


def roc(scores: torch.Tensor, is_anomaly: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) of the ROC curve, for plotting."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(_numpy(is_anomaly).astype(bool), _numpy(scores))
    return fpr, tpr
