"""Verification of pairs and N-way one-shot episodes: pairs, thresholds, accuracies, TTA, ensembles."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from utils import nway, verification

O = SimpleNamespace(**{**vars(nway), **vars(verification)})   # notebook 10's and 09's lesson cells, as one


def clusters(n_classes: int = 4, per: int = 5, dim: int = 6, noise: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_classes, dim, generator=g), dim=1)
    y = torch.arange(n_classes).repeat_interleave(per)
    return centres[y] + noise * torch.randn(len(y), dim, generator=g), y


def test_balanced_pairs_are_all_matches_and_as_many_distinct_non_matches():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    i, j, same = O.balanced_pairs(y, seed=1)
    assert same.sum() == 4 and (~same).sum() == 4            # 3 + 1 matching pairs
    assert torch.equal(same, y[i] == y[j]) and bool((i < j).all())
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)
    assert torch.equal(O.balanced_pairs(y, seed=1)[0], i)   # seeded
    with pytest.raises(ValueError, match="two classes"):
        O.balanced_pairs(torch.tensor([0, 0, 0]))


def test_best_threshold_by_hand():
    sim, same = torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([True, False, True, False])
    t, acc = O.best_threshold(sim, same)
    assert acc == 0.75 and 0.8 < t < 0.9                     # "same" for the top pair only: 3 of 4 right
    t, acc = O.best_threshold(torch.tensor([0.9, 0.7, 0.4, 0.2]), torch.tensor([True, True, False, False]))
    assert acc == 1.0 and 0.4 < t < 0.7


def test_verification_separates_clusters_and_fails_on_noise():
    e, y = clusters()
    good = O.verification(e, y, e, y)
    assert good["acc"] == 1.0 and good["auc"] == 1.0 and good["pairs"] == 2 * 4 * 10
    noise = torch.randn_like(e)
    bad = O.verification(e, y, noise, y)
    assert bad["auc"] < 0.8 and bad["acc"] < 0.8


def test_pair_similarity_matches_sklearn_auc_input():
    e, y = clusters(seed=3, noise=0.8)
    i, j, same = O.balanced_pairs(y)
    s = O.pair_similarity(e, i, j)
    assert torch.allclose(s, F.cosine_similarity(e[i], e[j]))
    r = O.verification(e, y, e, y)
    assert r["auc"] == pytest.approx(roc_auc_score(same, s))
    assert torch.allclose(O.pair_similarity(e, i, j, "euclidean"), -(e[i] - e[j]).norm(dim=1))


def test_similarity_matrix_and_unknown_name():
    a, b = torch.randn(3, 4), torch.randn(5, 4)
    m = O.similarity_matrix(a, b)
    assert m.shape == (3, 5) and torch.allclose(m, F.normalize(a, dim=1) @ F.normalize(b, dim=1).T, atol=1e-6)
    assert torch.allclose(O.similarity_matrix(a, b, "euclidean"), -torch.cdist(a, b), atol=1e-5)
    with pytest.raises(ValueError, match="unknown similarity"):
        O.similarity_matrix(a, b, "manhattan")


def test_nway_accuracy_and_oneshot_table():
    e, y = clusters(n_classes=5, per=2)
    support, query = e[0::2], e[1::2]
    assert O.nway_accuracy(support, query, torch.arange(5)) == 1.0
    assert O.nway_accuracy(support, query, torch.tensor([1, 0, 2, 3, 4])) == pytest.approx(0.6)
    eps = [SimpleNamespace(name=f"run{k}", support=support, query=query, answer=torch.arange(5)) for k in range(3)]
    assert O.oneshot(lambda x: x, eps) == {"run0": 1.0, "run1": 1.0, "run2": 1.0}
    s = O.summary({"a": 0.9, "b": 1.0})
    assert s["mean"] == pytest.approx(0.95) and s["min"] == 0.9 and s["max"] == 1.0 and s["std"] > 0


def test_a_callable_similarity_is_used_row_by_row():
    e, y = clusters(n_classes=3, per=2)
    calls = []

    def sim(a, b):
        calls.append(len(a))
        return -(a - b).abs().sum(1)
    assert O.nway_accuracy(e[0::2], e[1::2], torch.arange(3), sim) == 1.0
    assert calls == [9]


def test_head_similarity_uses_a_siamese_head_and_cosine_otherwise():
    assert O.head_similarity(torch.nn.Linear(2, 2)) == "cosine"

    class Koch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def same_probability(self, a, b):
            return torch.sigmoid(-self.w * (a - b).abs().sum(1))
    f = O.head_similarity(Koch())
    a = torch.randn(4, 3)
    assert torch.allclose(f(a, a), torch.full((4,), 0.5))


def test_shifted_moves_without_wrapping():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 3] = 1
    assert O.shifted(x, 1, 0)[0, 0, 1, 3] == 1
    assert O.shifted(x, 0, 1).sum() == 0                      # pushed out of the image, not wrapped
    assert torch.equal(O.shifted(x, 0, 0), x)


def test_tta_and_ensemble_are_normalized_means():
    x = torch.rand(3, 1, 5, 5)
    flat = lambda z: z.flatten(1)  # noqa: E731
    single = O.with_tta(flat, shifts=((0, 0),))(x)
    assert torch.allclose(single, F.normalize(x.flatten(1), dim=1))
    both = O.ensemble(flat, lambda z: 2 * z.flatten(1))(x)
    assert both.shape == (3, 50) and torch.allclose(both.norm(dim=1), torch.ones(3))
    a, b = O.ensemble(flat, lambda z: z.flatten(1) ** 2)(x[:1]), O.ensemble(flat, lambda z: z.flatten(1) ** 2)(x[1:2])
    c1 = F.cosine_similarity(x[:1].flatten(1), x[1:2].flatten(1))
    c2 = F.cosine_similarity(x[:1].flatten(1) ** 2, x[1:2].flatten(1) ** 2)
    assert torch.allclose((a * b).sum(1), (c1 + c2) / 2)
    with pytest.raises(ValueError):
        O.ensemble()


def toy_omniglot(sizes: dict[str, int], drawers: int = 5):
    """An ImageData laid out like load("omniglot"): pixel (0, 0) holds the character, (0, 1) the drawer."""
    from utils.data import ImageData

    xs, ys, alpha, drawer = [], [], [], []
    label = 0
    for a, n in enumerate(sizes.values()):
        for _ in range(n):
            for d in range(1, drawers + 1):
                x = torch.zeros(1, 4, 4, dtype=torch.uint8)
                x[0, 0, 0], x[0, 0, 1] = label, d
                xs.append(x), ys.append(label), alpha.append(a), drawer.append(d)
            label += 1
    x, y, alpha, drawer = torch.stack(xs), torch.tensor(ys), torch.tensor(alpha), torch.tensor(drawer)
    test = drawer > drawers - 2                                  # the last two drawers: the test split
    info = {"alphabets": list(sizes), "alphabet_train": alpha[~test], "alphabet_test": alpha[test],
            "drawer_train": drawer[~test], "drawer_test": drawer[test]}
    return ImageData(x[~test], y[~test], x[test], y[test], [str(c) for c in range(label)], "toy", "toy", [], info)


def test_alphabet_episodes_are_built_like_the_official_runs():
    data = toy_omniglot({"A": 6, "B": 7, "C": 6})
    alphabet_of = torch.tensor([0] * 6 + [1] * 7 + [2] * 6)                         # of each character
    eps = O.alphabet_episodes(data, ["A", "C"], n_episodes=6, n_way=5, seed=1)
    assert [e.name.split()[1] for e in eps] == ["A", "C"] * 3
    for e in eps:
        s_char, s_drawer = e.support[:, 0, 0, 0].long(), e.support[:, 0, 0, 1]
        q_char, q_drawer = e.query[:, 0, 0, 0].long(), e.query[:, 0, 0, 1]
        assert len(set(s_char.tolist())) == 5 and sorted(q_char.tolist()) == sorted(s_char.tolist())
        assert len(set(s_drawer.tolist())) == 1 and len(set(q_drawer.tolist())) == 1      # one drawer each ...
        assert s_drawer[0] != q_drawer[0]                                               # ... two different ones
        assert torch.equal(s_char[e.answer], q_char)                                    # every answer is right
        assert set(alphabet_of[s_char].tolist()) == {"ABC".index(e.name.split()[1])}    # within one alphabet
    used = {d for e in eps for x in (e.support, e.query) for d in x[:, 0, 0, 1].tolist()}
    assert used & {1, 2, 3} and used & {4, 5}                                         # both splits' drawers
    again = O.alphabet_episodes(data, ["A", "C"], n_episodes=6, n_way=5, seed=1)
    assert all(torch.equal(a.query, b.query) and torch.equal(a.answer, b.answer) for a, b in zip(eps, again))
    assert O.nway_accuracy(eps[0].support.flatten(1).float(), eps[0].query.flatten(1).float(), eps[0].answer,
                           "euclidean") == 1.0                                          # pixels (0, 0) find it


def test_alphabet_episodes_draw_across_small_alphabets_and_refuse_too_few():
    data = toy_omniglot({"A": 3, "B": 7, "C": 4})
    alphabet_of = torch.tensor([0] * 3 + [1] * 7 + [2] * 4)
    eps = O.alphabet_episodes(data, ["A", "C"], n_episodes=8, n_way=5)
    assert all(e.name.endswith("mixed") for e in eps)
    used = {c for e in eps for c in e.support[:, 0, 0, 0].tolist()}
    assert set(alphabet_of[sorted(used)].tolist()) == {0, 2}                            # never alphabet B
    with pytest.raises(ValueError, match="need 8 characters"):
        O.alphabet_episodes(data, ["A", "C"], n_way=8)
    with pytest.raises(ValueError, match="alphabets of the data"):
        O.alphabet_episodes(data, ["Z"])
