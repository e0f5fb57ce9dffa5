"""Recognising what was never seen: verification of pairs and N-way one-shot episodes.

Two questions about an embedding f, asked on classes (people, characters) absent from training:

- **verification** — are x₁ and x₂ the same class? Answer d(f(x₁), f(x₂)) < t, with the threshold t
  chosen on training pairs; reported as accuracy on balanced pairs and as ROC AUC (threshold-free);
- **N-way one-shot** — given one example of each of N new classes (the support) and a query, which
  class is it? Answer the support with the highest similarity (Lake et al.'s 20-way task on Omniglot).
  `alphabet_episodes` builds such episodes from held-out Omniglot alphabets, the way the official
  runs are built, for choosing a configuration without touching the official runs.

Similarities are "higher = more alike": cosine by default, −Euclidean, or any callable, e.g. a
Siamese network's p(same).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from .data import Episode, ImageData
from .nway import SIMILARITIES, nway_accuracy, similarity_matrix  # noqa: F401  (notebook 10's lesson cell)

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


# ----------------------------------------------------------------------------- N-way one-shot
def alphabet_episodes(data: ImageData, alphabets: Sequence[str], n_episodes: int = 40, n_way: int = 20,
                      seed: int = 0) -> list[Episode]:
    """N-way one-shot episodes from the characters of `alphabets`, built like Lake et al.'s official runs.

    `data` is Omniglot as `data.load("omniglot")` gives it (or a `select`/`resized` copy): `info`
    holds `alphabets` (names) and per-image `alphabet_*` and `drawer_*`; both splits are used, so
    every drawer of a character is available. Each episode takes `n_way` distinct characters of one
    alphabet and two different drawers who drew all of them: drawer a's drawings are the support,
    drawer b's the queries (in a shuffled order); `answer[i]` indexes query i's character in the
    support. Episode k uses `alphabets[k % len(alphabets)]`. If any of the alphabets has fewer than
    `n_way` characters, every episode instead draws its characters across all of `alphabets` (the
    names end in "mixed"). Seeded: the same arguments give the same episodes.
    """
    if not alphabets:
        raise ValueError("alphabet_episodes needs at least one alphabet")
    names = list(data.info["alphabets"])
    unknown = [a for a in alphabets if a not in names]
    if unknown:
        raise ValueError(f"alphabets {unknown} are not in the data (it has {names})")
    x = torch.cat([data.x_train, data.x_test])
    y = torch.cat([data.y_train, data.y_test])
    alpha = torch.cat([data.info["alphabet_train"], data.info["alphabet_test"]])
    drawer = torch.cat([data.info["drawer_train"], data.info["drawer_test"]])
    chars = {a: sorted(set(y[alpha == names.index(a)].tolist())) for a in alphabets}
    if all(len(c) >= n_way for c in chars.values()):
        groups = [(a, chars[a]) for a in alphabets]
    else:
        pooled = sorted(c for a in alphabets for c in chars[a])
        if len(pooled) < n_way:
            raise ValueError(f"{n_way}-way episodes need {n_way} characters; {list(alphabets)} have {len(pooled)}")
        groups = [("mixed", pooled)]
    where = {(c, d): i for i, (c, d) in enumerate(zip(y.tolist(), drawer.tolist()))}
    drawers: dict[int, set[int]] = {}
    for c, d in where:
        drawers.setdefault(c, set()).add(d)
    g = torch.Generator().manual_seed(seed)
    episodes = []
    for k in range(n_episodes):
        group, pool = groups[k % len(groups)]
        picked = [pool[i] for i in torch.randperm(len(pool), generator=g)[:n_way].tolist()]
        common = sorted(set.intersection(*(drawers[ch] for ch in picked)))
        if len(common) < 2:
            raise ValueError(f"episode {k}: the {n_way} characters picked from {group} share fewer than two drawers")
        a, b = (common[i] for i in torch.randperm(len(common), generator=g)[:2].tolist())
        order = torch.randperm(n_way, generator=g)              # query i shows support character order[i]
        support = x[[where[ch, a] for ch in picked]]
        query = x[[where[picked[j], b] for j in order.tolist()]]
        episodes.append(Episode(f"val{k + 1:02d} {group}", support, query, order.to(torch.int64)))
    return episodes


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


# ----------------------------------------------------------------------------- embedding functions
Embed = Callable[[torch.Tensor], torch.Tensor]


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Images moved by (dy, dx) pixels, zero fill (no wrap-around)."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def with_tta(embed: Embed, shifts: tuple[tuple[int, int], ...] = SHIFTS) -> Embed:
    """Test-time augmentation: the mean of the L2-normalized embeddings of shifted copies of each image."""
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([F.normalize(embed(shifted(x, dy, dx)).float(), dim=1) for dy, dx in shifts]).mean(0)
    return f


def ensemble(*embeds: Embed) -> Embed:
    """Several embeddings as one: their L2-normalized outputs side by side, so the cosine similarity of
    the result is the mean of the members' cosine similarities."""
    if not embeds:
        raise ValueError("an ensemble needs at least one embedding function")

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(e(x).float(), dim=1) for e in embeds], 1) / len(embeds) ** 0.5
    return f
