"""The fair-comparison bookkeeping (utils/protocol.py): splits by class, equal steps, t-intervals, and
the verdict sentences computed from a table."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from scipy import stats

from notebooks.retrieval import protocol as PR
from utils.pair_losses import PKSampler


def test_class_split_relabels_and_refuses_overlap():
    x = torch.arange(12).reshape(12, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 3] * 3)
    s = PR.class_split(x, y, {"train": [2, 0], "test": [3]})
    assert s["train"][1].tolist() == [1, 0, 1, 0, 1, 0] and s["train"][0].flatten().tolist() == [0, 2, 4, 6, 8, 10]
    assert s["test"][1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="both 'train' and 'val'"):
        PR.class_split(x, y, {"train": [0, 1], "val": [1]})
    with pytest.raises(ValueError, match="no classes"):
        PR.class_split(x, y, {"train": [0], "val": []})


@pytest.mark.parametrize("n", [96, 100, 130])
def test_trimmed_sets_give_every_loss_the_same_steps(n):
    x, y = torch.arange(n), torch.arange(n) % 8
    xt, yt = PR.trim_to_batches(x, y, 32, seed=1)
    assert len(yt) == n - n % 32 and torch.equal(xt, xt.sort().values) and torch.equal(y[xt], yt)
    assert PR.batches_per_epoch(len(yt), 32, None) == PR.batches_per_epoch(len(yt), 32, (8, 4)) \
        == PKSampler(8, 4).steps(len(yt)) == len(yt) // 32
    if n % 32:
        assert PR.batches_per_epoch(n, 32, None) == PR.batches_per_epoch(n, 32, (8, 4)) + 1
    with pytest.raises(ValueError, match="cannot fill one batch"):
        PR.trim_to_batches(x[:10], y[:10], 32)


def test_mean_ci_is_the_t_interval():
    v = [0.31, 0.35, 0.29]
    m, h = PR.mean_ci(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=sum(v) / 3, scale=stats.sem(v))
    assert m == pytest.approx(sum(v) / 3) and m - h == pytest.approx(lo) and m + h == pytest.approx(hi)
    assert PR.t_quantile(0.95, 2) == pytest.approx(4.3027, abs=1e-4)
    assert PR.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.0)
    assert math.isnan(PR.mean_ci([0.4])[1])
    with pytest.raises(ValueError, match="NaN"):
        PR.mean_ci([0.1, float("nan")])


def runs_frame():
    rows = []
    values = {"A": [0.50, 0.52, 0.51], "B": [0.49, 0.53, 0.50], "C": [0.20, 0.21, 0.22]}
    for data in ("d1", "d2"):
        for loss, vs in values.items():
            for seed, v in enumerate(vs):
                v = v if data == "d1" or loss != "A" else v - 0.4   # on d2, A falls to the bottom
                rows.append({"dataset": data, "loss": loss, "lr": 1e-3, "seed": seed, "map_at_r": v, "recall_at_1": v + 0.3})
    return pd.DataFrame(rows)


def test_summarize_and_verdict():
    table = PR.summarize(runs_frame())
    assert list(table.index) == [(d, l) for d in ("d1", "d2") for l in "ABC"]
    assert table.loc[("d1", "A"), "map_at_r"] == pytest.approx(0.51)
    assert table.loc[("d1", "A"), "map_at_r_ci"] == pytest.approx(PR.mean_ci([0.50, 0.52, 0.51])[1])
    assert (table.seeds == 3).all() and (table.recall_at_1 > table.map_at_r).all()
    lines = PR.verdict(table, {"d1": {"raw pixels": 0.3}})
    d1 = lines[0]
    assert d1.startswith("d1: the best mean is A (0.510") and "2 of 3 losses are within the noise of it: A, B" in d1
    assert "2 of 3 pairs of losses differ beyond the noise" in d1
    assert lines[1] == "d1: 2 of 3 losses beat raw pixels (0.300) beyond the noise (A, B); 1 fall below it (C)."
    assert lines[2].startswith("d2: the best mean is B")
    assert lines[-1] == "within the noise of the best on every data set: B."
