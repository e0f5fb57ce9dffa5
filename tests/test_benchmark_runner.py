"""The one-vs-rest anomaly benchmark runner (utils.benchmark): the rotation of test cases, the tidy CSV,
AUROC against scikit-learn, normalized distances, resuming, and every head parameter trained.

All on scikit-learn's digits (offline) with the smoke budget: 1 epoch, 20 images per class, 2 cases.
"""
from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from utils import benchmark, cache, losses, train
from utils.benchmark import Setting

BUDGET = benchmark.BUDGETS["smoke"]
SETTINGS = [Setting("digits", 2, "cosine"), Setting("digits", 2, "euclidean")]
KINDS = ["min", "mean5", "mean10", "mean_all"]
N_CELLS = len(SETTINGS) * BUDGET.n_cases * len(losses.METHODS)


def counting(monkeypatch, module, name: str) -> list:
    """Replace `module.name` by a wrapper that records each call's arguments; return the record."""
    calls, real = [], getattr(module, name)

    def wrapper(*args, **kw):
        calls.append((args, kw))
        return real(*args, **kw)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture(scope="module")
def first(tmp_path_factory, digits):
    """One smoke run of the grid (2 settings × 2 cases × 6 methods), with its own cache and CSV."""
    root = tmp_path_factory.mktemp("benchmark")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DML_CACHE", str(root / "cache"))
        mp.setenv("DML_OFFLINE", "1")
        trains = counting(mp, train, "train")
        df = benchmark.run({"digits": digits}, SETTINGS, None, BUDGET, root / "bench.csv", progress=False)
    return SimpleNamespace(df=df, csv=root / "bench.csv", cache=root / "cache", trains=trains)


# ----------------------------------------------------------------------------- settings and cases
@pytest.mark.parametrize("k", range(1, 10))
def test_cases_rotate_so_every_class_is_an_anomaly_k_times(k):
    cs = benchmark.cases(k)
    assert len(cs) == 10
    assert cs == [[(i + j) % 10 for j in range(k)] for i in range(10)]
    assert Counter(c for case in cs for c in case) == {c: k for c in range(10)}
    for case in cs:
        normal = benchmark.normal_classes(case)
        assert len(set(case)) == k and not set(case) & set(normal)
        assert sorted(case + normal) == list(range(10)) and normal == sorted(normal)
    assert benchmark.cases(k, n_cases=3) == cs[:3]


def test_published_settings_and_budgets():
    assert [(s.dataset, s.k, s.metric) for s in benchmark.PUBLISHED] == [
        ("cifar10", 1, "cosine"), ("cifar10", 1, "euclidean"), ("cifar10", 5, "cosine"),
        ("cifar10", 8, "cosine"), ("cifar10", 8, "euclidean"),
        ("mnist", 7, "cosine"), ("mnist", 5, "cosine"), ("mnist", 5, "euclidean")]
    smoke, full = benchmark.BUDGETS["smoke"], benchmark.BUDGETS["full"]
    assert (smoke.epochs, smoke.n_per_class, smoke.n_cases) == (1, 20, 2)
    assert (full.epochs, full.n_per_class, full.n_cases) == (15, None, 10)
    assert full.arch_for("cifar10") == "resnet18" and full.arch_for("mnist") == "cnn"
    assert list(benchmark.score_kinds(BUDGET.ks)) == KINDS


@pytest.mark.parametrize("n", [1, 50, 100, 333, 500])
def test_fixed_steps_gives_every_n_the_same_number_of_updates(n):
    base = benchmark.Budget(epochs=3, n_per_class=300, bs=32)
    b = benchmark.fixed_steps(base, n, n_normal=2, steps=200)
    per_epoch = -(-2 * n // 32)  # batches per epoch, the last one partial
    assert b.n_per_class == n and b.bs == 32 and b.n_cases == base.n_cases
    assert 200 <= b.epochs * per_epoch < 200 + per_epoch  # at least `steps`, less than one epoch more
    with pytest.raises(ValueError, match="steps"):
        benchmark.fixed_steps(base, n, 2, 0)


@pytest.mark.parametrize("k", [0, 10, -1, 2.5, True, "3"])
def test_bad_k_is_a_clear_error(k):
    with pytest.raises(ValueError, match="k"):
        Setting("mnist", k, "cosine")
    with pytest.raises(ValueError, match="k must be"):
        benchmark.cases(k)


def test_bad_metric_dataset_or_data_is_a_clear_error(digits, tmp_path):
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        Setting("mnist", 1, "manhattan")
    with pytest.raises(ValueError, match="no data for setting 'mnist k=1 cosine'"):
        benchmark.run({"digits": digits}, [Setting("mnist", 1, "cosine")], None, BUDGET, tmp_path / "b.csv",
                      progress=False)
    with pytest.raises(ValueError, match="10 classes"):
        benchmark.run({"digits": digits.select([0, 1, 2])}, [Setting("digits", 1, "cosine")], None, BUDGET,
                      tmp_path / "b.csv", progress=False)
    assert not (tmp_path / "b.csv").exists()


# ----------------------------------------------------------------------------- the table
def test_run_writes_one_row_per_cell_and_score(first):
    header = pd.read_csv(first.csv, nrows=0)
    assert list(header.columns) == benchmark.COLUMNS
    assert {f"norm_dist_{c}" for c in range(10)} <= set(header.columns)
    df = first.df
    assert len(df) == N_CELLS * len(KINDS) == len(pd.read_csv(first.csv))
    pd.testing.assert_frame_equal(df, benchmark.read_results(first.csv))
    per_cell = df.groupby(["metric", "case", "method"])["score"].apply(sorted)
    assert len(per_cell) == N_CELLS and all(v == sorted(KINDS) for v in per_cell)
    assert df["auroc"].between(0, 1).all() and df["auroc"].notna().all()
    assert set(df["anomaly_classes"]) == {"0 1", "1 2"}
    assert set(df["method"]) == set(losses.METHODS)
    assert (df["n_per_class"] == 20).all() and (df["epochs"] == 1).all() and (df["arch"] == "cnn").all()
    assert (df["mixup"] == 0.0).all() and (df["seed"] == 0).all() and (df["train_seconds"] > 0).all()


def test_cosine_and_euclidean_settings_share_the_training(first):
    """Each (case, method) network is trained once: the euclidean setting loads it from the cache."""
    assert len(first.trains) == N_CELLS
    df = first.df
    assert not df.loc[df["metric"] == "cosine", "from_cache"].any()
    assert df.loc[df["metric"] == "euclidean", "from_cache"].all()
    secs = df.groupby(["case", "method", "metric"])["train_seconds"].first().unstack()
    assert np.allclose(secs["cosine"], secs["euclidean"])


def _row(df: pd.DataFrame, metric: str, case: int, method: str, score: str) -> pd.Series:
    sel = df[(df["metric"] == metric) & (df["case"] == case) & (df["method"] == method) & (df["score"] == score)]
    assert len(sel) == 1
    return sel.iloc[0]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.metric)
def test_auroc_equals_sklearn_on_brute_force_distances(first, digits, monkeypatch, setting):
    monkeypatch.setenv("DML_CACHE", str(first.cache))
    cs = benchmark.score_case(digits, setting, 1, "ArcFace", BUDGET)
    assert cs.run.from_cache and cs.anomalies == [1, 2]
    assert len(cs.train_emb) == 8 * 20 and len(cs.test_emb) == len(digits.y_test)
    assert cs.normal.classes == [digits.classes[c] for c in (0, 3, 4, 5, 6, 7, 8, 9)]
    assert len(cs.normal.y_train) == len(cs.train_emb)  # the images the training embeddings belong to
    is_anomaly = np.isin(digits.y_test.numpy(), [1, 2])
    assert np.array_equal(cs.is_anomaly.numpy(), is_anomaly)
    tr, te = cs.train_emb.double(), cs.test_emb.double()
    if setting.metric == "cosine":
        d = 1 - F.normalize(te, dim=1) @ F.normalize(tr, dim=1).T
    else:
        d = ((te[:, None, :] - tr[None, :, :]) ** 2).sum(-1).sqrt()
    brute = {"min": d.min(1).values, "mean5": d.topk(5, largest=False).values.mean(1),
             "mean10": d.topk(10, largest=False).values.mean(1), "mean_all": d.mean(1)}
    for kind in KINDS:
        row = _row(first.df, setting.metric, 1, "ArcFace", kind)
        assert row["auroc"] == pytest.approx(roc_auc_score(is_anomaly, cs.scores[kind].numpy()), abs=1e-12)
        assert row["auroc"] == pytest.approx(roc_auc_score(is_anomaly, brute[kind].numpy()), abs=1e-3)
        assert torch.allclose(cs.scores[kind].double(), brute[kind], atol=1e-4, rtol=1e-4)


def test_normalized_distances_of_normal_classes_average_to_1(first, digits):
    counts = np.bincount(digits.y_test.numpy(), minlength=10)
    cols = [f"norm_dist_{c}" for c in range(10)]
    for _, row in first.df.iterrows():
        anomalies = [int(c) for c in row["anomaly_classes"].split()]
        normal = [c for c in range(10) if c not in anomalies]
        values = row[cols].to_numpy(dtype=float)
        assert (values > 0).all()
        assert np.average(values[normal], weights=counts[normal]) == pytest.approx(1.0, rel=1e-5)


def test_summary_and_table(first):
    s = benchmark.summary(first.df)
    assert len(s) == len(SETTINGS) * len(losses.METHODS)
    assert (s["n_cases"] == 2).all() and s["mean"].between(0, 1).all()
    one = _row(first.df, "cosine", 0, "softmax", "min")["auroc"], _row(first.df, "cosine", 1, "softmax", "min")["auroc"]
    got = s[(s["metric"] == "cosine") & (s["method"] == "softmax")].iloc[0]
    assert got["mean"] == pytest.approx(np.mean(one)) and got["std"] == pytest.approx(np.std(one, ddof=1))
    t = benchmark.table(first.df, "mean_all")
    assert list(t.index) == list(losses.METHODS) and list(t.columns) == [s.label for s in SETTINGS]
    assert all(" ± " in v for v in t.to_numpy().ravel())
    with pytest.raises(ValueError, match="no 'mean30' scores"):
        benchmark.summary(first.df, "mean30")


def test_table_allows_a_budget_per_setting_but_not_two_in_one(first):
    df = first.df.copy()
    df.loc[df["metric"] == "euclidean", "epochs"] = 7  # another setting, another budget: fine
    assert benchmark.table(df).shape == (len(losses.METHODS), len(SETTINGS))
    df.loc[(df["metric"] == "cosine") & (df["case"] == 1), "epochs"] = 9  # two budgets in one setting
    with pytest.raises(ValueError, match="mixes budgets"):
        benchmark.table(df)


def test_run_returns_only_its_own_grid(first, digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DML_CACHE", str(first.cache))
    monkeypatch.setenv("DML_OFFLINE", "1")
    csv = tmp_path / "b.csv"
    shutil.copy(first.csv, csv)
    trains = counting(monkeypatch, train, "train")
    one = benchmark.run({"digits": digits}, SETTINGS[:1], None, BUDGET, csv, progress=False)
    assert not trains and set(one["metric"]) == {"cosine"} and len(one) == len(first.df) // 2
    fewer = benchmark.run({"digits": digits}, SETTINGS, None, replace(BUDGET, n_cases=1), csv, progress=False)
    assert not trains and set(fewer["case"]) == {0} and len(fewer) == len(first.df) // 2
    assert len(benchmark.read_results(csv)) == len(first.df)  # the CSV itself keeps everything


def test_run_budgets_concatenates_one_grid_per_budget(first, digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DML_CACHE", str(first.cache))
    monkeypatch.setenv("DML_OFFLINE", "1")
    csv = tmp_path / "b.csv"
    shutil.copy(first.csv, csv)
    trains = counting(monkeypatch, train, "train")
    grids = {"cos": (SETTINGS[:1], BUDGET), "euc": (SETTINGS[1:], replace(BUDGET, n_cases=1))}
    df = benchmark.run_budgets({"digits": digits}, grids, None, csv)
    assert not trains and len(df) == len(first.df) // 2 + len(first.df) // 4
    assert benchmark.setting_labels(df) == ["digits k=2 cosine"] * (len(first.df) // 2) + \
        ["digits k=2 euclidean"] * (len(first.df) // 4)
    n = len(losses.METHODS)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"b.csv: {2 * n} cells, {2 * n} reused from the file (same settings, data and code), 0 computed"
    assert lines[1].startswith(f"cos: {2 * n} networks, ")


# ----------------------------------------------------------------------------- resuming
def test_rerun_computes_nothing_and_resumes_exactly_the_missing_cell(first, digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DML_CACHE", str(first.cache))
    csv = tmp_path / "bench.csv"
    shutil.copy(first.csv, csv)
    original = csv.read_bytes()
    cells = counting(monkeypatch, benchmark, "run_case")
    trains = counting(monkeypatch, train, "train")

    def again(progress: bool = False) -> pd.DataFrame:
        return benchmark.run({"digits": digits}, SETTINGS, None, BUDGET, csv, progress=progress)

    df = again()                                              # everything is there: nothing happens
    assert not cells and not trains and csv.read_bytes() == original
    pd.testing.assert_frame_equal(df, first.df)

    setting, case, method, mixup = benchmark.grid(SETTINGS, losses.METHODS, BUDGET)[-1]
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    last = (raw["metric"] == setting.metric) & (raw["case"] == str(case)) & (raw["method"] == method)
    assert last.sum() == len(KINDS)
    raw[~last].to_csv(csv, index=False)                       # the last cell's rows deleted
    df = again(progress=True)                                 # with the fastprogress bar
    assert [c[0][1:4] for c in cells] == [(setting, case, method)] and len(trains) == 1
    assert len(df) == len(first.df)
    key = ["metric", "case", "method", "score"]
    pd.testing.assert_frame_equal(df.sort_values(key).reset_index(drop=True),
                                  first.df.sort_values(key).reset_index(drop=True))

    cells.clear()
    csv.write_bytes(csv.read_bytes()[:-25])                   # a run killed in the middle of a line
    df = again()
    assert [c[0][1:4] for c in cells] == [(setting, case, method)]
    assert len(df) == len(first.df) and not df.duplicated(key).any()
    assert csv.read_bytes().endswith(b"\n")



CHANGED = {
    "head hyperparameter": dict(methods={"ArcFace": ("arcface", {"m": 0.5})}),
    "batch size": dict(budget=replace(BUDGET, bs=64)),
    "embedding size": dict(budget=replace(BUDGET, emb_dim=32)),
    "test images": dict(data="test"),
    "code": dict(code=True),
}


@pytest.mark.parametrize("change", CHANGED)
def test_any_change_that_produced_a_row_recomputes_it(first, digits, tmp_path, monkeypatch, change, capsys):
    """Rows are reused only when everything that produced them is the same (not just the key columns)."""
    monkeypatch.setenv("DML_CACHE", str(first.cache))
    csv = tmp_path / "bench.csv"
    shutil.copy(first.csv, csv)
    how = CHANGED[change]
    methods = how.get("methods", {"ArcFace": losses.METHODS["ArcFace"]})
    budget, d = how.get("budget", BUDGET), digits
    if how.get("data") == "test":
        x = digits.x_test.clone()
        x[0, 0, 14, 14] ^= 1
        d = replace(digits, x_test=x)
    if how.get("code"):
        real = cache.source_hash
        monkeypatch.setattr(cache, "source_hash", lambda names: real(names) + "x")
    cells = counting(monkeypatch, benchmark, "run_case")
    df = benchmark.run({"digits": d}, SETTINGS[:1], methods, budget, csv, progress=False)
    assert len(cells) == budget.n_cases, change                   # every cell of the grid recomputed
    assert "0 reused" in capsys.readouterr().out
    assert len(df) == budget.n_cases * len(KINDS) and df["config"].nunique() == 1
    assert df["config"].iloc[0] not in set(first.df["config"])
    cells.clear()
    benchmark.run({"digits": d}, SETTINGS[:1], methods, budget, csv, progress=False)
    assert not cells and f"{budget.n_cases} reused" in capsys.readouterr().out

# ----------------------------------------------------------------------------- every head parameter trained
def frozen_head_parameters(digits, monkeypatch, methods=losses.METHODS) -> list[str]:
    """Train every method through the benchmark's own path (`train_case`, uncached); snapshot each head
    parameter as `train.fit` starts and return the parameters (or class rows) that never changed."""
    seen = {}
    real_fit = train.fit

    def state(head):  # the parameters, and the centers (a buffer that moves by its own rule)
        return {n: p.detach().clone().cpu() for n, p in [*head.named_parameters(), *head.named_buffers()]
                if n != "iteration" and (p.requires_grad or n == "centers")}

    def fit(model, head, *args, **kw):
        before = state(head)
        out = real_fit(model, head, *args, **kw)
        seen[head.name] = before, state(head)
        return out

    monkeypatch.setattr(train, "fit", fit)
    for method in methods:
        run, normal = benchmark.train_case(digits, Setting("digits", 1, "cosine"), 0, method, BUDGET, cache=False)
        assert not run.from_cache and len(normal.classes) == 9 and len(normal.y_train) == 9 * 20
    assert set(seen) == {losses.METHODS[m][0] for m in methods}
    frozen = []
    for head, (before, after) in seen.items():
        assert "weight" in before and (head != "center" or "centers" in before)
        for name, p in before.items():
            moved = (after[name] - p.cpu()).abs()
            if moved.max() <= 1e-5:
                frozen.append(f"{head}.{name}")
            elif p.ndim == 2 and not (moved.amax(1) > 1e-6).all():   # class weights, centers: every row
                frozen.append(f"{head}.{name} (some class rows)")
    return frozen


def test_every_head_parameter_moves_in_the_benchmarks_training(digits, monkeypatch):
    """The published study's bug: margin-head weights and centers were never in the optimizer."""
    assert frozen_head_parameters(digits, monkeypatch) == []


def test_the_check_catches_centers_that_never_move(digits, monkeypatch):
    monkeypatch.setattr(losses.CenterLossHead, "step", lambda self: None)
    assert frozen_head_parameters(digits, monkeypatch, {"center loss": losses.METHODS["center loss"]}) \
        == ["center.centers"]
