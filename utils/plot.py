"""Figures the notebooks share: training and learning-rate curves, image grids and pairs, embedding norms,
2-d/3-d feature scatters and 2-d projections with class legends, ROC curves and anomaly-score histograms."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch


def style() -> None:
    """One look for every notebook (seaborn's own theme)."""
    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "axes.titlesize": "medium"})


def curves(histories: pd.DataFrame | dict[str, pd.DataFrame], metrics=("train_loss", "test_loss", "test_acc"),
           title: str | None = None) -> plt.Figure:
    """Per-epoch curves, one panel per metric; pass a dict to overlay several runs."""
    if isinstance(histories, pd.DataFrame):
        histories = {"": histories}
    metrics = [m for m in metrics if any(m in h for h in histories.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for label, h in histories.items():
            if m in h:
                ax.plot(h["epoch"], h[m], marker="o", ms=3, label=label or None)
        ax.set(xlabel="epoch", title=m.replace("_", " "))
        if m.endswith("loss"):
            ax.set_yscale("log")
    if any(histories):
        axes[0, -1].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_grid(images: torch.Tensor, titles: list[str] | None = None, ncols: int = 10,
               size: float = 1.1, title: str | None = None, colors: list[str] | None = None,
               cmap: str = "gray") -> plt.Figure:
    """Show uint8 or float images (N×C×H×W) in a grid with optional per-image titles (coloured by `colors`).

    Single-channel images share one colormap `cmap` on one fixed range (0 to 1, uint8 scaled by 1/255), so
    brightness compares across the grid; "gray" shows light-on-dark data (MNIST) as white on black.
    RGB images are shown as they are, clipped to 0–1.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images to show")
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.25) * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].detach().cpu()
        img = (img.float() / 255 if img.dtype == torch.uint8 else img.float()).numpy()
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap=cmap, vmin=0, vmax=1)
        else:
            ax.imshow(img.transpose(1, 2, 0).clip(0, 1))
        if titles is not None:
            ax.set_title(titles[i], fontsize=8, color=(colors[i] if colors else "black"))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _class_legend(ax: plt.Axes, markerscale: float = 4) -> None:
    """One legend entry per labelled scatter (class), right of `ax`, markers enlarged and opaque."""
    leg = ax.legend(fontsize="x-small", markerscale=markerscale, loc="center left", bbox_to_anchor=(1, 0.5),
                    frameon=False)
    for h in leg.legend_handles:
        h.set_alpha(1)


def features(emb: torch.Tensor, y: torch.Tensor, classes: list[str], ax: plt.Axes | None = None,
             normalize: bool = False, title: str | None = None, max_points: int = 3000,
             seed: int = 0, legend: bool = True) -> plt.Axes:
    """Scatter 2-d or 3-d embeddings (at most `max_points`, a seeded subsample) coloured by class.

    `normalize` puts them on the unit circle/sphere; `legend` names the classes, one entry each, right of `ax`.
    """
    d = emb.shape[1]
    if d not in (2, 3):
        raise ValueError(f"features() draws 2-d or 3-d embeddings, got {d}-d: project them first (t-SNE, UMAP)")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:max_points]
    e, lab = emb[idx].float(), y[idx].numpy()
    if normalize:
        e = torch.nn.functional.normalize(e, dim=1)
    e = e.numpy()
    if ax is None:
        fig = plt.figure(figsize=(4, 4))
        ax = fig.add_subplot(projection="3d" if d == 3 else None)
    palette = sns.color_palette("tab10", len(classes))
    for c in range(len(classes)):
        pts = e[lab == c]
        ax.scatter(*pts.T, s=3, alpha=0.5, color=palette[c % 10], label=classes[c])
    if d == 2:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title or "")
    if legend:
        _class_legend(ax)
    return ax


# ----------------------------------------------------------------------------- projections and anomalies
def _scatter_classes(ax: plt.Axes, coords: np.ndarray, y, classes: list[str], s: float = 2) -> None:
    """Scatter `coords` coloured by class (tab10), equal aspect, no ticks."""
    coords, y = np.asarray(coords), np.asarray(y)
    palette = sns.color_palette("tab10", 10)
    for c, name in enumerate(classes):
        pts = coords[y == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=0.6, color=palette[c % 10], label=name, linewidths=0)
    ax.set(xticks=[], yticks=[])
    ax.set_aspect("equal", adjustable="datalim")


def projection_grid(panels: dict[tuple[str, str], tuple[np.ndarray, torch.Tensor]], classes: list[str],
                    size: float = 3.2, title: str | None = None) -> plt.Figure:
    """A grid of projections: `{(row label, column label): (coords, y)}`, e.g. spaces × methods.

    Rows and columns appear in the order their labels first occur; one legend for the whole figure.
    """
    if not panels:
        raise ValueError("no projections to show")
    rows = list(dict.fromkeys(r for r, _ in panels))
    cols = list(dict.fromkeys(c for _, c in panels))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(size * len(cols) + 1.2, size * len(rows)),
                             squeeze=False)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            if (r, c) not in panels:
                ax.axis("off")
                continue
            coords, y = panels[r, c]
            _scatter_classes(ax, coords, y, classes)
            if i == 0 or (rows[i - 1], c) not in panels:
                ax.set_title(c)
            if j == 0:
                ax.set_ylabel(r)
    handles, labels = next(ax for ax in axes.flat if ax.axison).get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize="small", markerscale=4, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 1.2 / fig.get_figwidth(), 1))
    return fig


def score_hist(scores: dict[str, torch.Tensor], ax: plt.Axes | None = None, bins: int = 50,
               xlabel: str = "anomaly score", title: str = "") -> plt.Figure:
    """Overlaid density histograms of several score sets (e.g. normal / Fashion / CIFAR) on shared bins."""
    if not scores:
        raise ValueError("no scores to show")
    vals = {k: torch.as_tensor(v).detach().cpu().float().numpy().ravel() for k, v in scores.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(vals.values())), bins=bins)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
    for label, v in vals.items():
        ax.hist(v, bins=edges, density=True, alpha=0.45, histtype="stepfilled", label=f"{label} (n={len(v):,})")
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize="small")
    ax.figure.tight_layout()
    return ax.figure


def pairs(queries: torch.Tensor, matches: torch.Tensor, titles: list[str] | None = None, n: int = 8,
          match_titles: list[str] | None = None, size: float = 1.1, title: str | None = None) -> plt.Figure:
    """Two image rows: the first `n` queries (e.g. anomalies) above their matches (nearest normal images).

    Queries and matches may differ in channels (an RGB anomaly above its gray neighbour).
    """
    m = min(n, len(queries), len(matches))
    if m == 0:
        raise ValueError("no image pairs to show")
    images = [queries[i] for i in range(m)] + [matches[i] for i in range(m)]
    top = list(titles[:m]) if titles is not None else [""] * m
    bottom = list(match_titles[:m]) if match_titles is not None else [""] * m
    labels = top + bottom if titles is not None or match_titles is not None else None
    return image_grid(images, labels, ncols=m, size=size, title=title)


