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


def test_image_grid_one_colormap_and_range_for_all_gray_images():
    dark, bright = torch.full((1, 8, 8), 0.1), torch.full((1, 8, 8), 0.9)
    fig = plot.image_grid(torch.stack([dark, bright]), ncols=2)
    (a,), (b,) = fig.axes[0].images, fig.axes[1].images
    assert a.get_cmap().name == b.get_cmap().name == "gray"     # white digits on black, for every image
    assert a.get_clim() == b.get_clim() == (0, 1)               # so the dark image stays darker
    fig = plot.image_grid(torch.stack([dark, bright]).mul(255).to(torch.uint8), ncols=2, cmap="gray_r")
    assert {ax.images[0].get_cmap().name for ax in fig.axes} == {"gray_r"}
    assert fig.axes[0].images[0].get_array().max() < 0.5 < fig.axes[1].images[0].get_array().min()


def roc_inputs(n_normal=500, n_anomalies=50):
    g = torch.Generator().manual_seed(0)
    lab = torch.arange(n_normal + n_anomalies) >= n_normal
    return torch.rand(len(lab), generator=g) + lab.float(), lab


def blob_features(d, n_per=30):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(n_per)
    return torch.randn(len(y), d, generator=g) * 0.1 + torch.eye(3)[y][:, :d] * 3, y


@pytest.mark.parametrize("d", [2, 3])
def test_features_legend_names_each_class_once(d):
    emb, y = blob_features(d)
    ax = plot.features(emb, y, ["zero", "one", "two"], normalize=d == 3)
    leg = ax.get_legend()
    assert [t.get_text() for t in leg.get_texts()] == ["zero", "one", "two"]
    assert all(h.get_alpha() == 1 for h in leg.legend_handles)           # opaque markers
    assert leg.markerscale >= 3                                           # enlarged from s=3
    assert plot.features(emb, y, ["zero", "one", "two"], legend=False).get_legend() is None


def test_scatter_classes_and_the_grid_s_one_legend():
    emb, y = blob_features(2)
    fig, ax0 = plt.subplots()
    plot._scatter_classes(ax0, emb.numpy(), y, ["a", "b", "c"])
    assert ax0.get_legend() is None and len(ax0.collections) == 3        # no legend per panel: grids share one
    fig = plot.projection_grid({("UMAP", "one"): (emb.numpy(), y)}, ["a", "b", "c"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
