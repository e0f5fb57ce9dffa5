"""Anomaly scores: kNN distances in embedding space (batched torch); normalization, AUROC. (LOF and the
autoencoders' reconstruction errors are the lesson cells of notebooks 06 and 11: `utils.scores`, `utils.autoencoders`.)

Convention everywhere: a higher score means more anomalous; anomalies are the positive class.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .train import default_device

METRICS = ("cosine", "euclidean")

# Train rows per block: the score block of one test batch is bs × TRAIN_CHUNK floats (8 MB at
# bs=2048) whatever the sizes; on 2 CPU cores such cache-sized blocks made k=1 ~25% faster than 4096.
TRAIN_CHUNK = 1024


class _Train(NamedTuple):
    """The train set prepared once: its rows and what turns a dot product into a score to maximize."""

    rows: torch.Tensor          # n×d float32; unit rows for cosine
    bias: torch.Tensor | None   # euclidean: −‖t‖²/2, so argmax (x·t − ‖t‖²/2) = argmin ‖x − t‖


def _test_batches(test: torch.Tensor, metric: str, bs: int, device: torch.device):
    """Yield every batch of `bs` test rows on `device` as float32 (unit rows for cosine)."""
    test = torch.as_tensor(test)
    for i in range(0, len(test), bs):
        tb = test[i:i + bs].to(device, torch.float32)
        yield F.normalize(tb, dim=1) if metric == "cosine" else tb


def _setup(train: torch.Tensor, test: torch.Tensor, metric: str, bs: int,
           device: torch.device | str | None) -> tuple[_Train, torch.Tensor]:
    """Check the arguments; return the prepared train set and a block buffer (bs × TRAIN_CHUNK floats)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {list(METRICS)}")
    if bs < 1:
        raise ValueError(f"bs must be a positive batch size, got {bs}")
    dev = torch.device(device) if device is not None else default_device()
    rows = torch.as_tensor(train).to(dev, torch.float32)
    tr = _Train(F.normalize(rows, dim=1), None) if metric == "cosine" else _Train(rows, rows.pow(2).sum(1).mul_(-0.5))
    buf = torch.empty(min(bs, len(test)) * min(TRAIN_CHUNK, len(tr.rows)), device=dev)
    return tr, buf


def _blocks(tb: torch.Tensor, tr: _Train, buf: torch.Tensor):
    """Yield (j, scores) for every chunk of train rows from j: b×c scores x·t (+ bias), higher = nearer.

    Each block is written into (a contiguous view of) `buf`, so no chunk allocates a new matrix.
    """
    for j in range(0, len(tr.rows), TRAIN_CHUNK):
        chunk = tr.rows[j:j + TRAIN_CHUNK]
        out = buf[:len(tb) * len(chunk)].view(len(tb), len(chunk))
        if tr.bias is None:
            yield j, torch.mm(tb, chunk.T, out=out)
        else:
            yield j, torch.addmm(tr.bias[j:j + TRAIN_CHUNK], tb, chunk.T, out=out)


def _best(tb: torch.Tensor, tr: _Train, buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(highest score, its train index) of every test row: a running row-wise max over the chunks."""
    best, idx = None, None
    for j, s in _blocks(tb, tr, buf):
        v, i = s.max(1)
        if best is None:
            best, idx = v, i
        else:
            better = v > best
            best, idx = torch.where(better, v, best), torch.where(better, i + j, idx)
    return best, idx


def _top(tb: torch.Tensor, tr: _Train, buf: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` highest scores of every test row and their train indices (b×k): a running topk merge."""
    best, idx = None, None
    for j, s in _blocks(tb, tr, buf):
        v, i = s.topk(min(k, s.shape[1]), dim=1)
        if best is not None:
            v, i = torch.cat([best, v], 1), torch.cat([idx, i + j], 1)
            v, pick = v.topk(min(k, v.shape[1]), dim=1)
            i = i.gather(1, pick)
        best, idx = v, i
    return best, idx


def _distance(tb: torch.Tensor, tr: _Train, score: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """Distances of the chosen neighbours (`score` and `idx` are b or b×k).

    cosine: 1 − similarity, clamped at 0 (a unit row's dot product with itself may round above 1).
    euclidean: the expansion ‖x‖² + ‖t‖² − 2x·t loses precision near zero (a duplicate sits at ~1e-3,
    not 0), so the distance to each chosen neighbour is recomputed exactly (b×d memory per column).
    """
    if tr.bias is None:
        return (1 - score).clamp_min_(0)
    if idx.dim() == 1:
        return (tb - tr.rows[idx]).norm(dim=1)
    return torch.stack([(tb - tr.rows[idx[:, j]]).norm(dim=1) for j in range(idx.shape[1])], dim=1)


def _mean_distance(tb: torch.Tensor, tr: _Train, buf: torch.Tensor) -> torch.Tensor:
    """Mean distance of every test row to all train rows."""
    if tr.bias is None:  # mean of 1 − x·t over unit t = 1 − x·(mean t): no n-wide matrix at all
        mean_row = tr.rows.sum(0, dtype=torch.float64).div_(len(tr.rows)).float()
        return (1 - tb @ mean_row).clamp_min_(0)
    sq = tb.pow(2).sum(1, keepdim=True)
    total = torch.zeros(len(tb), device=tb.device)
    for _, s in _blocks(tb, tr, buf):  # ‖x − t‖² = ‖x‖² − 2 (x·t − ‖t‖²/2)
        total += s.mul_(-2).add_(sq).clamp_min_(0).sqrt_().sum(1)
    return total / len(tr.rows)


@torch.no_grad()  # scores, not a loss; the out= matmuls refuse inputs that require grad
def knn_distance(train: torch.Tensor, test: torch.Tensor, k: int | None = 1, metric: str = "cosine",
                 bs: int = 2048, device: torch.device | str | None = None) -> torch.Tensor:
    """Per test row, the mean of its `k` smallest distances to the train rows (k=1: the nearest one).

    `k=None` is the mean distance to every train row. metric "cosine" = 1 − cosine
    similarity, "euclidean" = L2. Blocked over `bs` test rows × `TRAIN_CHUNK` train rows (extra
    memory ≈ bs × TRAIN_CHUNK floats); k=1 is a running row-wise max of the similarity, k>1 a running
    topk. Runs on `device` (default: CUDA when available); returns a float32 CPU tensor.
    """
    n = len(train)
    if k is not None and not (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k <= n):
        raise ValueError(f"k must be an integer in 1..{n} (the number of train rows) or None for "
                         f"the mean over all of them, got k={k!r}")
    tr, buf = _setup(train, test, metric, bs, device)
    out = []
    for tb in _test_batches(test, metric, bs, buf.device):
        if k is None:
            mean = _mean_distance(tb, tr, buf)
        elif k == 1:
            mean = _distance(tb, tr, *_best(tb, tr, buf))
        else:
            mean = _distance(tb, tr, *_top(tb, tr, buf, int(k))).mean(1)
        out.append(mean.cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def nearest(train: torch.Tensor, test: torch.Tensor, metric: str = "cosine", bs: int = 2048,
            device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of the nearest train row for every test row, both on the CPU."""
    if len(train) == 0:
        raise ValueError("nearest() needs at least one train row")
    tr, buf = _setup(train, test, metric, bs, device)
    dist, idx = [], []
    for tb in _test_batches(test, metric, bs, buf.device):
        score, i = _best(tb, tr, buf)
        dist.append(_distance(tb, tr, score, i).cpu()), idx.append(i.cpu())
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


# ----------------------------------------------------------------------------- evaluation
def pool(normal: torch.Tensor, outliers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores of a normal and an outlier test set as one vector, and its anomaly mask (outliers True)."""
    is_anomaly = torch.cat([torch.zeros(len(normal), dtype=torch.bool), torch.ones(len(outliers), dtype=torch.bool)])
    return torch.cat([normal, outliers]), is_anomaly


def auroc(scores: torch.Tensor, is_anomaly: torch.Tensor) -> float:
    """Area under the ROC curve: anomalies are positives, a higher score means more anomalous."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(_numpy(is_anomaly).astype(bool), _numpy(scores)))


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
