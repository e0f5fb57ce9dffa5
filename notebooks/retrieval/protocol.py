"""The bookkeeping of a fair comparison on classes never seen (Musgrave, Belongie, Lim 2020).

The notebook runs the protocol itself (split the classes, tune every loss on validation classes with
the same grid, train the chosen setting for every seed, score once on the test classes); this module
holds what it needs around that loop:

- `class_split`: the images of each group of classes (train / validation / test), relabelled 0..k-1;
- `batches_per_epoch` and `trim_to_batches`: every loss gets the same number of optimizer steps;
- `mean_ci`: a mean and the half-width of its t-interval over seeds;
- `summarize`: one row per (data set, loss) with the mean and interval of each metric;
- `verdict`: what survives: which differences exceed the intervals, in sentences built from the numbers.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from utils.data import ImageData
from utils.pair_losses import PKSampler


def class_split(x: torch.Tensor, y: torch.Tensor, groups: dict[str, list[int]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{group: (images, labels)} for disjoint groups of class indices, each relabelled 0..k-1 in the
    order given. A class in two groups is an error: the point is that the test classes are never seen."""
    seen: dict[int, str] = {}
    for name, classes in groups.items():
        for c in classes:
            if c in seen:
                raise ValueError(f"class {c} is in both {seen[c]!r} and {name!r}: the groups must be disjoint")
            seen[c] = name
        if not classes:
            raise ValueError(f"group {name!r} has no classes")
    # all the images as a training split with an empty test split, so that ImageData.select picks and relabels
    whole = ImageData(x, y, x[:0], y[:0], [str(c) for c in range(int(y.max()) + 1)], "class_split")
    parts = {name: whole.select(list(classes)) for name, classes in groups.items()}
    return {name: (part.x_train, part.y_train) for name, part in parts.items()}


def batches_per_epoch(n: int, bs: int, pk: tuple[int, int] | None) -> int:
    """Optimizer steps of one epoch over n images, as `utils.train.fit` counts them: ⌈n / bs⌉ for
    random batches, `PKSampler(p, k).steps(n)` = max(1, ⌊n / (p·k)⌋) for P×K batches."""
    return PKSampler(*pk).steps(n) if pk else math.ceil(n / bs)


def trim_to_batches(x: torch.Tensor, y: torch.Tensor, bs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop n mod bs images at random (seeded, order kept) so that random batches of `bs` and P×K
    batches of the same size make the same number of steps per epoch."""
    extra = len(y) % bs
    if extra == 0:
        return x, y
    if len(y) < bs:
        raise ValueError(f"{len(y)} images cannot fill one batch of {bs}")
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(y), generator=g)[:len(y) - extra].sort().values
    return x[keep], y[keep]


def t_quantile(level: float, df: int) -> float:
    """The two-sided Student-t quantile t_{(1+level)/2, df} (scipy)."""
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, df))


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t-interval at `level`) of per-seed values: mean ± t·s/√n.

    With one value the half-width is NaN (no spread to measure); NaN values are an error."""
    v = np.asarray(list(values), dtype=float)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError("need a non-empty list of per-seed values")
    if np.isnan(v).any():
        raise ValueError(f"a per-seed value is NaN: {v.tolist()}")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), t_quantile(level, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))


def summarize(runs: pd.DataFrame, metrics: tuple[str, ...] = ("map_at_r", "recall_at_1"),
              level: float = 0.95) -> pd.DataFrame:
    """One row per (dataset, loss), in order of appearance: `<metric>` (mean over seeds), `<metric>_ci`
    (t-interval half-width), `seeds`, and the setting chosen on validation (`lr`)."""
    rows = []
    for (data, loss), g in runs.groupby(["dataset", "loss"], sort=False):
        row = {"dataset": data, "loss": loss, "seeds": len(g), "lr": g["lr"].iloc[0]}
        for m in metrics:
            row[m], row[f"{m}_ci"] = mean_ci(g[m], level)
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "loss"])


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Do the intervals mean ± half of a and b overlap?"""
    return abs(a[0] - b[0]) <= a[1] + b[1]


def verdict(table: pd.DataFrame, baselines: dict[str, dict[str, float]], metric: str = "map_at_r") -> list[str]:
    """What survives the fair comparison, as sentences computed from `table` (`summarize`'s) and the
    untrained baselines ({dataset: {name: value}}, e.g. raw pixels; deterministic, no interval).

    Two results differ "beyond the noise" when their 95 % intervals do not overlap (conservative: such
    a gap is significant, an overlap does not prove equality). Per data set: the losses tied with the
    best, those beyond each baseline, the separated pairs; then the losses tied with the best everywhere.
    """
    lines, top_everywhere = [], None
    for data in table.index.get_level_values(0).unique():
        t = table.loc[data]
        iv = {loss: (r[metric], r[f"{metric}_ci"]) for loss, r in t.iterrows()}
        best = max(iv, key=lambda k: iv[k][0])
        tied = [k for k in iv if overlaps(iv[k], iv[best])]
        pairs = [(a, b) for i, a in enumerate(iv) for b in list(iv)[i + 1:]]
        apart = sum(not overlaps(iv[a], iv[b]) for a, b in pairs)
        lines.append(f"{data}: the best mean is {best} ({iv[best][0]:.3f} ± {iv[best][1]:.3f}); "
                     f"{len(tied)} of {len(iv)} losses are within the noise of it: {', '.join(tied)}. "
                     f"{apart} of {len(pairs)} pairs of losses differ beyond the noise.")
        for name, value in baselines.get(data, {}).items():
            above = [k for k in iv if iv[k][0] - iv[k][1] > value]
            below = [k for k in iv if iv[k][0] + iv[k][1] < value]
            lines.append(f"{data}: {len(above)} of {len(iv)} losses beat {name} ({value:.3f}) beyond the noise"
                         + (f" ({', '.join(above)})" if 0 < len(above) < len(iv) else "")
                         + (f"; {len(below)} fall below it ({', '.join(below)})" if below else "") + ".")
        top_everywhere = set(tied) if top_everywhere is None else top_everywhere & set(tied)
    if top_everywhere is not None:
        order = list(table.index.get_level_values(1).unique())
        kept = [k for k in order if k in top_everywhere]
        lines.append(f"within the noise of the best on every data set: {', '.join(kept) if kept else 'no loss'}.")
    return lines
