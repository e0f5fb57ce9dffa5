"""Plots build figures from real-shaped inputs and refuse empty ones."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from utils import plot  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def history(n=4, shift=0.0):
    return pd.DataFrame({"epoch": range(1, n + 1), "train_loss": [1.0 / (i + 1) + shift for i in range(n)],
                         "test_loss": [1.2 / (i + 1) for i in range(n)], "test_acc": [0.5 + 0.1 * i for i in range(n)]})


def test_curves_one_panel_per_metric_and_one_line_per_run():
    fig = plot.curves({"a": history(), "b": history(shift=0.1)})
    assert len(fig.axes) == 3
    assert all(len(ax.lines) == 2 for ax in fig.axes)
    assert fig.axes[0].get_yscale() == "log"


def test_image_grid_titles_and_layout():
    x = torch.randint(0, 255, (13, 1, 28, 28), dtype=torch.uint8)
    fig = plot.image_grid(x, [str(i) for i in range(13)], ncols=5)
    assert len(fig.axes) == 15  # 3 rows of 5
    assert [ax.get_title() for ax in fig.axes[:13]] == [str(i) for i in range(13)]
    assert len(plot.image_grid(torch.rand(2, 3, 32, 32)).axes) == 10
    with pytest.raises(ValueError):
        plot.image_grid(x[:0])


def test_misclassified_shows_the_most_confident_mistakes_first():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    y = torch.tensor([0, 1, 1, 0])
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.95, 0.05], [0.2, 0.8]])
    fig = plot.misclassified(x, y, probs, ["zero", "one"], n=10, ncols=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["zero (0.95) / one", "one (0.80) / zero", "zero (0.70) / one"]
    with pytest.raises(ValueError):
        plot.misclassified(x, probs.argmax(1), probs, ["zero", "one"])


def test_norm_plots():
    g = torch.Generator().manual_seed(0)
    norms, conf = torch.rand(200, generator=g) * 10, torch.rand(200, generator=g)
    correct = torch.rand(200, generator=g) > 0.2
    assert len(plot.norm_hist(norms, correct).axes) == 1
    fig = plot.norm_vs_confidence(norms, conf, correct, max_points=50)
    wrong_points = fig.axes[0].collections[1].get_offsets()
    assert len(wrong_points) == int((~correct).sum())  # every mistake is drawn


def test_lr_find_plot_is_log_x():
    fig = plot.lr_find(pd.DataFrame({"lr": [1e-4, 1e-3, 1e-2], "loss": [2.0, 1.0, 3.0]}))
    assert fig.axes[0].get_xscale() == "log"
