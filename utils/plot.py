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


def misclassified(x: torch.Tensor, y_true: torch.Tensor, probs: torch.Tensor, classes: list[str],
                  n: int = 30, ncols: int = 10) -> plt.Figure:
    """The `n` most confidently wrong test images, titled 'predicted (p) / true'."""
    pred = probs.argmax(1)
    wrong = torch.nonzero(pred != y_true).flatten()
    if len(wrong) == 0:
        raise ValueError("no misclassified images")
    conf = probs[wrong, pred[wrong]]
    wrong = wrong[conf.argsort(descending=True)][:n]
    titles = [f"{classes[pred[i]]} ({probs[i, pred[i]]:.2f}) / {classes[y_true[i]]}" for i in wrong]
    return image_grid(x[wrong], titles, ncols=ncols,
                      title=f"{int((pred != y_true).sum())} misclassified of {len(y_true):,}: predicted (p) / true")


def norm_hist(norms: torch.Tensor, correct: torch.Tensor, bins: int = 50) -> plt.Figure:
    """Embedding-norm histograms for correctly and wrongly classified samples (densities)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    df = pd.DataFrame({"‖embedding‖": norms.numpy(),
                       "prediction": np.where(correct.numpy(), "correct", "wrong")})
    sns.histplot(df, x="‖embedding‖", hue="prediction", stat="density", common_norm=False,
                 bins=bins, ax=ax, hue_order=["correct", "wrong"])
    ax.set_title("embedding norms, test set")
    fig.tight_layout()
    return fig


def norm_vs_confidence(norms: torch.Tensor, confidence: torch.Tensor, correct: torch.Tensor,
                       max_points: int = 5000, seed: int = 0) -> plt.Figure:
    """Scatter of embedding norm against the top softmax probability, wrong predictions highlighted."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(norms), generator=g)[:max_points]
    idx = torch.cat([idx, torch.nonzero(~correct).flatten()]).unique()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    c, n, p = correct[idx].numpy(), norms[idx].numpy(), confidence[idx].numpy()
    ax.scatter(n[c], p[c], s=4, alpha=0.3, label="correct")
    ax.scatter(n[~c], p[~c], s=14, color="crimson", label="wrong")
    ax.set(xlabel="‖embedding‖", ylabel="max softmax probability", title="norm vs confidence (test set)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def lr_find(df: pd.DataFrame) -> plt.Figure:
    """Loss against learning rate from `utils.train.lr_find`."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(df["lr"], df["loss"])
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss", title="learning-rate range test")
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
def _scatter_classes(ax: plt.Axes, coords: np.ndarray, y, classes: list[str], s: float = 2,
                     legend: bool = False) -> None:
    """Scatter `coords` coloured by class (tab10), equal aspect, no ticks; `legend` names the classes beside it."""
    coords, y = np.asarray(coords), np.asarray(y)
    palette = sns.color_palette("tab10", 10)
    for c, name in enumerate(classes):
        pts = coords[y == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=0.6, color=palette[c % 10], label=name, linewidths=0)
    ax.set(xticks=[], yticks=[])
    ax.set_aspect("equal", adjustable="datalim")
    if legend:
        _class_legend(ax)


def projection(coords: np.ndarray, y: torch.Tensor, classes: list[str], ax: plt.Axes | None = None,
               title: str = "", legend: bool = True) -> plt.Figure:
    """2-d coordinates (t-SNE, UMAP) as a scatter coloured by class; `legend` names the classes beside it."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    _scatter_classes(ax, coords, y, classes, legend=legend)
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


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


def roc_curves(curves: dict[str, tuple[torch.Tensor, torch.Tensor]], ax: plt.Axes | None = None,
               title: str = "ROC: anomalies vs normal test samples", log_fpr: bool = False,
               mark_fpr: float | None = None) -> plt.Figure:
    """ROC curves of `{label: (scores, is_anomaly)}` (higher score = more anomalous), AUROC in the legend.

    `log_fpr` puts the false-positive rate on a log axis, from the smallest rate the data resolve
    (1 / number of negatives, but not below 1e-4) up to 1; rates below that are drawn at the left edge.
    `mark_fpr` (e.g. 0.01) adds a dotted vertical line there, labelled "1 % FPR" in the legend.
    The dashed gray line is chance (TPR = FPR), a curve on the log axis.
    """
    from . import anomaly

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
    rocs = {label: (*anomaly.roc(scores, is_anomaly), anomaly.auroc(scores, is_anomaly),
                    int((~torch.as_tensor(is_anomaly).bool()).sum()))
            for label, (scores, is_anomaly) in curves.items()}
    n_neg = max((n for *_, n in rocs.values()), default=0)
    lo = (max(1e-4, 1 / n_neg) if n_neg else 1e-4) if log_fpr else 0.0
    for label, (fpr, tpr, auc, _) in rocs.items():
        ax.plot(np.maximum(fpr, lo), tpr, label=f"{label} (AUROC {auc:.3f})")
    chance = np.logspace(np.log10(lo), 0, 200) if log_fpr else np.array([0.0, 1.0])
    ax.plot(chance, chance, ls="--", color="gray", lw=1)
    if mark_fpr is not None:
        ax.axvline(mark_fpr, ls=":", color="black", lw=1, label=f"{mark_fpr * 100:g} % FPR")
    if log_fpr:
        ax.set_xscale("log")
    ax.set(xlabel="false-positive rate" + (" (log)" if log_fpr else ""), ylabel="true-positive rate",
           xlim=(lo, 1), ylim=(0, 1.01), title=title)
    ax.legend(fontsize="small", loc="lower right")
    ax.figure.tight_layout()
    return ax.figure


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


def reconstructions(images: torch.Tensor, recons: torch.Tensor, titles: list[str] | None = None,
                    n: int = 10, size: float = 1.15, title: str | None = None) -> plt.Figure:
    """Three rows per image: the input, an autoencoder's reconstruction, and the error map |input − output|
    (the channels' mean; one colour scale for the whole figure, so errors compare across images)."""
    m = min(n, len(images), len(recons))
    if m == 0:
        raise ValueError("no images to show")
    x = images[:m].detach().cpu().float()
    x = x / 255 if images.dtype == torch.uint8 else x
    r = recons[:m].detach().cpu().float()
    if x.shape != r.shape:
        raise ValueError(f"images {tuple(x.shape)} and reconstructions {tuple(r.shape)} differ in shape")
    err = (x - r).abs().mean(1)
    vmax = max(float(err.max()), 1e-6)
    fig, axes = plt.subplots(3, m, figsize=(size * m, size * 3 + (0.35 if title else 0)), squeeze=False)
    for j in range(m):
        for i, (img, kw) in enumerate(((x[j], {}), (r[j], {}), (err[j], {"cmap": "magma", "vmin": 0, "vmax": vmax}))):
            ax = axes[i, j]
            if i < 2:
                ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy() if img.shape[0] == 3 else img[0].numpy(),
                          cmap=None if img.shape[0] == 3 else "gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.numpy(), **kw)
            ax.set_xticks([]), ax.set_yticks([])
        if titles is not None:
            axes[0, j].set_title(str(titles[j]), fontsize=8)
    for i, label in enumerate(("input", "output", "|error|")):
        axes[i, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
