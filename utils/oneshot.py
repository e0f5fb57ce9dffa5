"""Recognising what was never seen: verification of pairs and N-way one-shot episodes (utils/README.md)."""
from __future__ import annotations

from typing import Callable

import pandas as pd
import torch

from .nway import (SIMILARITIES, alphabet_episodes, ensemble, nway_accuracy, shifted, similarity_matrix,  # noqa: F401
                   with_tta)  # notebook 10's lesson cells
from .verification import balanced_pairs, best_threshold, pair_similarity, verification  # noqa: F401  (notebook 09's)

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # rows (N×d, N×d) -> N


def head_similarity(head) -> str | Similarity:
    """The similarity a trained head implies: a Siamese head's p(same) (computed where the head lives,
    returned on the CPU); cosine for every other head."""
    if not hasattr(head, "same_probability"):
        return "cosine"
    device = next(head.parameters()).device
    head.eval()
    return lambda a, b: head.same_probability(a.to(device), b.to(device)).float().cpu()


def oneshot(embed: Callable[[torch.Tensor], torch.Tensor], episodes: list,
            similarity: str | Similarity = "cosine") -> pd.DataFrame:
    """Accuracy of every episode (an `Episode`: support, query, answer) with `embed(images)`;
    one row per episode. `embed` may average views (test-time augmentation) or models (ensembles)."""
    rows = []
    for ep in episodes:
        rows.append({"run": ep.name, "acc": nway_accuracy(embed(ep.support), embed(ep.query), ep.answer,
                                                          similarity)})
    return pd.DataFrame(rows)


def summary(runs: pd.DataFrame) -> dict[str, float]:
    """Mean accuracy over episodes, its standard deviation, and the worst and best episode."""
    return {"mean": float(runs.acc.mean()), "std": float(runs.acc.std(ddof=1)) if len(runs) > 1 else 0.0,
            "min": float(runs.acc.min()), "max": float(runs.acc.max())}


