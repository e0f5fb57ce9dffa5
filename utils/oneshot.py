"""Recognising what was never seen: verification of pairs and N-way one-shot episodes.

Two questions about an embedding f, asked on classes (people, characters) absent from training:

- **verification** — are x₁ and x₂ the same class? Answer d(f(x₁), f(x₂)) < t, with the threshold t
  chosen on training pairs; reported as accuracy on balanced pairs and as ROC AUC (threshold-free);
- **N-way one-shot** — given one example of each of N new classes (the support) and a query, which
  class is it? Answer the support with the highest similarity (Lake et al.'s 20-way task on Omniglot).
  Notebook 10's cells (`utils.nway`) build such episodes from held-out alphabets (`alphabet_episodes`), and
  average shifted copies or several networks (`with_tta`, `ensemble`).

Similarities are "higher = more alike": cosine by default, −Euclidean, or any callable, e.g. a
Siamese network's p(same).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from .nway import (SIMILARITIES, alphabet_episodes, ensemble, nway_accuracy, shifted, similarity_matrix,  # noqa: F401
                   with_tta)  # notebook 10's lesson cells

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # rows (N×d, N×d) -> N


def similarity_fn(similarity: str | Similarity) -> Similarity:
    """A similarity by name (`SIMILARITIES`) or the callable itself (rows (N×d, N×d) -> N, higher =
    more alike: e.g. a Siamese head's `same_probability`)."""
    if callable(similarity):
        return similarity
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}: choose one of {sorted(SIMILARITIES)} or pass a "
                         f"function of two N×d tensors returning N similarities, higher = more alike")
    return SIMILARITIES[similarity]


def head_similarity(head) -> str | Similarity:
    """The similarity a trained head implies: a Siamese head's p(same) (computed where the head lives,
    returned on the CPU); cosine for every other head."""
    if not hasattr(head, "same_probability"):
        return "cosine"
    device = next(head.parameters()).device
    head.eval()
    return lambda a, b: head.same_probability(a.to(device), b.to(device)).float().cpu()


# ----------------------------------------------------------------------------- verification
def balanced_pairs(y: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every same-class pair i < j, and as many different-class pairs drawn at random (seeded, without
    repetition): (i, j, same). Balanced, so accuracy 0.5 is chance."""
    y = torch.as_tensor(y).cpu()
    i, j = torch.triu_indices(len(y), len(y), offset=1)
    same = y[i] == y[j]
    if same.all() or not same.any():
        raise ValueError("pairs need at least two classes and one class with two or more images")
    neg = torch.nonzero(~same).flatten()
    g = torch.Generator().manual_seed(seed)
    neg = neg[torch.randperm(len(neg), generator=g)[:int(same.sum())]]
    keep = torch.cat([torch.nonzero(same).flatten(), neg]).sort().values
    return i[keep], j[keep], same[keep]


def pair_similarity(emb: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                    similarity: str | Similarity = "cosine") -> torch.Tensor:
    """The similarity of each pair (emb[i], emb[j])."""
    with torch.no_grad():
        return similarity_fn(similarity)(emb[i], emb[j]).float().cpu()


def best_threshold(sim: torch.Tensor, same: torch.Tensor) -> tuple[float, float]:
    """(threshold, accuracy): the cut that best separates same (sim ≥ t) from different pairs."""
    s = sim.double().numpy()
    order = np.argsort(-s)
    s, pos = s[order], same.numpy()[order].astype(float)
    # predict "same" for the top k pairs: correct = same among them + different among the rest
    correct = np.concatenate([[0], np.cumsum(pos)]) + (len(pos) - pos.sum()) - np.concatenate([[0], np.cumsum(1 - pos)])
    k = int(np.argmax(correct))
    if k == 0:
        t = s[0] + 1e-6
    elif k == len(s):
        t = s[-1] - 1e-6
    else:
        t = (s[k - 1] + s[k]) / 2
    return float(t), float(correct[k] / len(pos))


def verification(emb_fit: torch.Tensor, y_fit: torch.Tensor, emb_test: torch.Tensor, y_test: torch.Tensor,
                 similarity: str | Similarity = "cosine", seed: int = 0) -> dict[str, float]:
    """Pair verification on `emb_test`: balanced pairs, the threshold chosen on `emb_fit`'s pairs.

    Returns the test accuracy at that threshold, the test ROC AUC, the threshold, its accuracy on
    the pairs it was chosen on, and the number of test pairs.
    """
    i, j, same = balanced_pairs(y_fit, seed)
    t, acc_fit = best_threshold(pair_similarity(emb_fit, i, j, similarity), same)
    i, j, same = balanced_pairs(y_test, seed)
    sim = pair_similarity(emb_test, i, j, similarity)
    return {"acc": float(((sim >= t) == same).float().mean()), "auc": float(roc_auc_score(same, sim)),
            "threshold": t, "acc_fit": acc_fit, "pairs": len(same)}


def oneshot(embed: Callable[[torch.Tensor], torch.Tensor], episodes: list,
            similarity: str | Similarity = "cosine") -> pd.DataFrame:
    """Accuracy of every episode (`data.Episode`: support, query, answer) with `embed(images)`;
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


