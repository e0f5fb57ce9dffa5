"""Measurements on embeddings: how compact the classes are and how far apart."""
from __future__ import annotations

import torch


def class_spread(emb: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Intra-class spread (mean distance of a sample to its class mean), inter-class distance (mean
    distance between class means) and their ratio (scale-free: smaller = more compact, better separated)."""
    emb = emb.float()
    classes = torch.unique(y)
    means = torch.stack([emb[y == c].mean(0) for c in classes])
    lut = torch.zeros(int(classes.max()) + 1, dtype=torch.long)
    lut[classes] = torch.arange(len(classes))
    intra = (emb - means[lut[y]]).norm(dim=1).mean().item()
    dist = torch.cdist(means, means)
    inter = dist[~torch.eye(len(classes), dtype=torch.bool)].mean().item()
    return {"intra": intra, "inter": inter, "ratio": intra / inter}
