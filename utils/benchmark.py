"""The one-vs-rest anomaly benchmark: every loss head (and autoencoder), every split of the classes into
normal and anomaly; resumable, keyed rows in a CSV (utils/README.md: the protocol and the keys)."""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from . import anomaly, embed, losses, train
from .autoencoders import reconstruction_scores  # notebook 11's lesson cell
from .cache import key as cache_key
from .data import ImageData, atomic_write
from .few_shot import fixed_steps  # notebook 08's lesson cell
from .protocol import cases, class_means, normal_classes  # notebook 07's lesson cell

N_CLASSES = 10
KEY = ["dataset", "k", "metric", "case", "method", "mixup", "n_per_class", "epochs", "arch", "seed", "config"]
# the modules whose source a result depends on (a change there recomputes every cell); a module that
# registers its own architecture or head is added for the cells that use it (`train.training_code`)
CODE = ("models.py", "losses.py", "pair_losses.py", "mixup.py", "train.py", "embed.py", "anomaly.py", "protocol.py",
        "few_shot.py", "autoencoders.py", "benchmark.py")
COLUMNS = (KEY[:4] + ["anomaly_classes"] + KEY[4:] + ["score", "auroc"]
           + [f"norm_dist_{c}" for c in range(N_CLASSES)] + ["train_seconds", "from_cache"])


# ----------------------------------------------------------------------------- settings and cases
@dataclass(frozen=True)
class Setting:
    """One benchmark setting: a data set (a key of `run`'s `data_by_name`), k anomaly classes, a metric."""
    dataset: str
    k: int
    metric: str

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral) or not 1 <= self.k < N_CLASSES:
            raise ValueError(f"k (the number of anomaly classes) must be an integer in 1..{N_CLASSES - 1}, "
                             f"got {self.k!r}")
        if self.metric not in anomaly.METRICS:
            raise ValueError(f"unknown metric {self.metric!r}: choose one of {list(anomaly.METRICS)}")

    @property
    def label(self) -> str:
        return f"{self.dataset} k={self.k} {self.metric}"


PUBLISHED = [Setting("cifar10", 1, "cosine"), Setting("cifar10", 1, "euclidean"),
             Setting("cifar10", 5, "cosine"), Setting("cifar10", 8, "cosine"),
             Setting("cifar10", 8, "euclidean"),
             Setting("mnist", 7, "cosine"), Setting("mnist", 5, "cosine"), Setting("mnist", 5, "euclidean")]


# ----------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class Budget:
    """How much to spend per cell (presets: `BUDGETS`). `arch`: one name or data set -> name; `ks`: the K of the
    "mean of the K nearest" scores (None: all). utils/README.md: which fields key a cell, the presets."""
    epochs: int = 15
    n_per_class: int | None = None
    n_cases: int = N_CLASSES
    arch: str | dict[str, str] = "cnn"
    ks: tuple[int | None, ...] = (1, 5, 10, 20, 30, None)
    seed: int = 0
    bs: int = 128
    emb_dim: int = 64
    arch_kw: dict = field(default_factory=dict)

    def arch_for(self, dataset: str) -> str:
        """The architecture used for `dataset`."""
        return self.arch if isinstance(self.arch, str) else self.arch.get(dataset, "cnn")


BUDGETS = {
    # seconds on a laptop: the small CNN everywhere, 1 epoch, 20 images per class, 2 of the 10 cases
    "smoke": Budget(epochs=1, n_per_class=20, n_cases=2, arch="cnn", ks=(1, 5, 10, None)),
    # the published notebooks, minutes on a CPU: the small CNN everywhere, 300 images per class, 2 of the
    # 10 cases, batches of 32; notebooks 07-08 give each setting `fixed_steps(..., steps=200)`
    "default": Budget(epochs=3, n_per_class=300, n_cases=2, arch="cnn", bs=32),
    # the published protocol, on a GPU: ResNet18 for CIFAR-10, the small CNN for MNIST (and any other
    # data set), 15 epochs on every training image, all 10 cases
    "full": Budget(epochs=15, n_per_class=None, n_cases=N_CLASSES, arch={"cifar10": "resnet18", "mnist": "cnn"}),
}


# what notebooks 07, 11 and 13 run in each mode: optimizer steps per network (None: the budget's epochs)
# and test images per class (None: all)
STEPS = {"smoke": None, "default": 200, "full": None}
TEST_PER_CLASS = {"smoke": None, "default": 300, "full": None}


def budget_of(settings: list[Setting], mode: str, seed: int = 0) -> dict[Setting, Budget]:
    """Each setting's budget in `mode`: `BUDGETS[mode]` with `seed`, and where `STEPS[mode]` is set,
    the epochs that give every setting that many optimizer steps (`fixed_steps`: few normal classes
    get as many updates as many)."""
    if mode not in BUDGETS:
        raise ValueError(f"unknown mode {mode!r}: choose one of {list(BUDGETS)}")
    base, steps = replace(BUDGETS[mode], seed=seed), STEPS[mode]
    return {s: fixed_steps(base, base.n_per_class, N_CLASSES - s.k, steps) if steps else base for s in settings}


def score_kinds(ks) -> dict[str, int | None]:
    """Score name -> K: "min" (K=1, always first), "mean5", …, "mean_all" (K=None)."""
    out = {"min": 1}
    for K in ks:
        if K is not None and (isinstance(K, bool) or not isinstance(K, numbers.Integral) or K < 1):
            raise ValueError(f"every K must be a positive integer or None (all), got {K!r}")
        out.setdefault("min" if K == 1 else "mean_all" if K is None else f"mean{K}", K)
    return out


# ----------------------------------------------------------------------------- one cell
def _check_data(data: ImageData) -> None:
    if len(data.classes) != N_CLASSES:
        raise ValueError(f"the benchmark needs {N_CLASSES} classes; {data.name!r} has {len(data.classes)}")


def case_anomalies(setting: Setting, case_index: int) -> list[int]:
    """The anomaly classes of test case `case_index` (0..9) of `setting`."""
    if isinstance(case_index, bool) or not isinstance(case_index, numbers.Integral) \
            or not 0 <= case_index < N_CLASSES:
        raise ValueError(f"case_index must be an integer in 0..{N_CLASSES - 1}, got {case_index!r}")
    return cases(setting.k)[case_index]


# the autoencoders as benchmark methods: (head, hparams, train_kw) — MAE training loss, 8 filters
AUTOENCODERS: dict[str, tuple[str, dict, dict]] = {
    "autoencoder": ("reconstruction", {"loss": "mae"}, {"arch": "conv_ae"}),
    "denoising AE": ("reconstruction", {"loss": "mae"}, {"arch": "conv_ae", "noise": 0.1}),
    "super-res AE": ("reconstruction", {"loss": "mae"}, {"arch": "superres_ae"}),
}
TRAIN_KW = ("arch", "arch_kw", "emb_dim", "noise", "augment", "affine", "lr", "wd")  # what a method may override


def _spec(method: str, head: tuple | None) -> tuple[str, dict, dict]:
    """A method's (head name, hparams, train_kw): `head` as given ((head, hparams) or (head, hparams,
    train_kw)), or `losses.METHODS[method]` / `AUTOENCODERS[method]` when None."""
    if head is None:
        known = {**losses.METHODS, **AUTOENCODERS}
        if method not in known:
            raise ValueError(f"unknown method {method!r}: choose one of {list(known)} or pass head=")
        head = known[method]
    if not isinstance(head, tuple) or len(head) not in (2, 3):
        raise ValueError(f"method {method!r}: give (head name, hparams) or (head name, hparams, train_kw), "
                         f"got {head!r}")
    name, hparams, train_kw = (*head, {}) if len(head) == 2 else head
    bad = set(train_kw) - set(TRAIN_KW)
    if bad:
        raise ValueError(f"method {method!r}: train_kw may set {list(TRAIN_KW)}, not {sorted(bad)}")
    return name, dict(hparams), dict(train_kw)


def is_reconstruction(method: str, head: tuple | None = None) -> bool:
    """Whether the method is scored by reconstruction error (an autoencoder) rather than kNN distance."""
    return _spec(method, head)[0] in losses.RECONSTRUCTION_NAMES


def method_arch(method: str, head: tuple | None, budget: Budget, dataset: str) -> str:
    """The architecture a method trains on `dataset`: its own `arch` override, else the budget's."""
    return _spec(method, head)[2].get("arch", budget.arch_for(dataset))


def cell_kinds(method: str, head: tuple | None, budget: Budget) -> list[str]:
    """The score names a method's cell has: the reconstruction errors, or `score_kinds(budget.ks)`."""
    if is_reconstruction(method, head):
        return list(losses.RECONSTRUCTION_ERRORS)
    return list(score_kinds(budget.ks))


def train_case(data: ImageData, setting: Setting, case_index: int, method: str, budget: Budget,
               mixup: float = 0.0, head: tuple | None = None,
               cache: bool = True) -> tuple[train.Trained, ImageData]:
    """Train `method` on the case's normal classes (budget-subsampled); return the run and its data.

    The metric plays no part: the cosine and euclidean settings share the (cached) run.
    """
    _check_data(data)
    anomalies = case_anomalies(setting, case_index)
    normal = data.select(normal_classes(anomalies)).per_class(budget.n_per_class, None, budget.seed)
    name, hparams, train_kw = _spec(method, head)
    kw = dict(arch=budget.arch_for(setting.dataset), emb_dim=budget.emb_dim, arch_kw=budget.arch_kw) | train_kw
    run = train.train(normal, name, hparams=hparams, epochs=budget.epochs, bs=budget.bs, mixup=mixup,
                      seed=budget.seed, cache=cache, progress=False, validate=False, **kw)
    return run, normal


@dataclass
class CaseScores:
    """A case's anomaly scores (name -> one per test image), the test labels and anomaly mask, the run
    and the normal training data it was trained on (`train_emb` are its images' embeddings; None for
    an autoencoder, which scores by reconstruction error)."""
    scores: dict[str, torch.Tensor]
    y_test: torch.Tensor
    is_anomaly: torch.Tensor
    anomalies: list[int]
    train_emb: torch.Tensor | None
    test_emb: torch.Tensor | None
    run: train.Trained
    normal: ImageData


def score_case(data: ImageData, setting: Setting, case_index: int, method: str, budget: Budget,
               mixup: float = 0.0, head: tuple | None = None) -> CaseScores:
    """Train (cached), embed the normal training images and all test images, score by kNN distance;
    an autoencoder scores every test image by its reconstruction error instead."""
    run, normal = train_case(data, setting, case_index, method, budget, mixup, head)
    if is_reconstruction(method, head):
        tr = te = None
        scores = reconstruction_scores(run.model, data.x_test)
    else:
        tr = embed.embeddings(run, normal.x_train)
        te = embed.embeddings(run, data.x_test)
        scores = {kind: anomaly.knn_distance(tr, te, None if K is None else min(K, len(tr)), setting.metric)
                  for kind, K in score_kinds(budget.ks).items()}
    anomalies = case_anomalies(setting, case_index)
    is_anomaly = torch.isin(data.y_test, torch.tensor(anomalies, dtype=data.y_test.dtype))
    return CaseScores(scores, data.y_test, is_anomaly, anomalies, tr, te, run, normal)


def data_fingerprint(data: ImageData) -> str:
    """Content hash of a data set's training and test images and labels."""
    return train.data_fingerprint(data.x_train, data.y_train) + train.data_fingerprint(data.x_test, data.y_test)


def cell_config(data_fp: str, budget: Budget, head: tuple, mixup: float) -> str:
    """Hash of everything a cell's numbers depend on besides its key columns: the budget, the head
    name and hyperparameters, the method's training overrides (architecture, noise …), mixup, the
    data's content (`data_fingerprint`) and the code (`CODE`)."""
    name, hparams, train_kw = _spec("", head)
    # n_cases (which cells exist) and ks (which score rows a cell has) do not change any cell's numbers
    spent = {k: v for k, v in asdict(budget).items() if k not in ("n_cases", "ks")}
    archs = [train_kw["arch"]] if "arch" in train_kw else (
        [budget.arch] if isinstance(budget.arch, str) else [*budget.arch.values(), "cnn"])
    code = tuple(dict.fromkeys(CODE + sum((train.training_code(a, name) for a in archs), ())))
    return cache_key({"budget": spent, "head": name, "hparams": hparams, "mixup": float(mixup),
                      **({"train_kw": train_kw} if train_kw else {}), "data": data_fp}, code=code, n=12)


def run_case(data: ImageData, setting: Setting, case_index: int, method: str, budget: Budget,
             mixup: float = 0.0, head: tuple | None = None, config: str | None = None) -> list[dict]:
    """The tidy rows of one (method, setting, case, mixup) cell: one per score kind (see `COLUMNS`)."""
    cs = score_case(data, setting, case_index, method, budget, mixup, head)
    config = config or cell_config(data_fingerprint(data), budget, _spec(method, head), mixup)
    base = dict(dataset=setting.dataset, k=setting.k, metric=setting.metric, case=case_index,
                anomaly_classes=" ".join(map(str, cs.anomalies)), method=method, mixup=float(mixup),
                n_per_class="all" if budget.n_per_class is None else budget.n_per_class,
                epochs=budget.epochs, arch=method_arch(method, head, budget, setting.dataset),
                seed=budget.seed, config=config)
    rows = []
    for kind, s in cs.scores.items():
        row = dict(base, score=kind, auroc=anomaly.auroc(s, cs.is_anomaly))
        row.update({f"norm_dist_{c}": v for c, v in enumerate(class_means(s, cs.y_test, cs.is_anomaly))})
        row.update(train_seconds=float(cs.run.history["seconds"].sum()), from_cache=bool(cs.run.from_cache))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the grid, resumable
def _npc(v) -> int | str:
    """n_per_class as written to / read from the CSV: an int, or "all"."""
    if v is None or v == "all" or (isinstance(v, float) and math.isnan(v)):
        return "all"
    return int(float(v))


def cell_key(row) -> tuple:
    """A cell's identity (the `KEY` columns) with types normalized, from a row dict or a CSV row."""
    return (str(row["dataset"]), int(row["k"]), str(row["metric"]), int(row["case"]), str(row["method"]),
            float(row["mixup"]), _npc(row["n_per_class"]), int(row["epochs"]), str(row["arch"]),
            int(row["seed"]), str(row["config"]))


def read_results(csv_path: str | Path) -> pd.DataFrame:
    """The benchmark CSV as a DataFrame (empty, with `COLUMNS`, if the file is absent or empty).

    A last line cut short by an interrupted write is dropped from the file first.
    """
    path = Path(csv_path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    raw = path.read_bytes()
    if not raw.endswith(b"\n"):
        atomic_write(path, lambda f: f.write(raw[:raw.rfind(b"\n") + 1]))
    df = pd.read_csv(path, dtype={"anomaly_classes": str, "n_per_class": str, "dataset": str,
                                  "method": str, "arch": str, "metric": str, "score": str, "config": str})
    if list(df.columns) != COLUMNS:
        raise ValueError(f"{path} does not hold benchmark results of this version (columns "
                         f"{list(df.columns)[:6]}…, expected {COLUMNS[:6]}…): delete it or use another csv_path")
    df["n_per_class"] = [_npc(v) for v in df["n_per_class"]]
    return df


def _append(path: Path, rows: list[dict]) -> None:
    """Append rows to the CSV in one write (header only when the file is new or empty)."""
    new = not path.is_file() or path.stat().st_size == 0
    text = pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False, header=new, lineterminator="\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()


def grid(settings: list[Setting], methods: dict, budget: Budget, mixups=(0.0,)) -> list[tuple]:
    """Every cell as (setting, case index, method, mixup), in the order `run` computes them."""
    return [(s, i, m, float(a)) for s in settings for i in range(budget.n_cases) for m in methods
            for a in mixups]


def _key_of(setting: Setting, case: int, method: str, mixup: float, budget: Budget, config: str,
            head: tuple | None = None) -> tuple:
    return (setting.dataset, setting.k, setting.metric, case, method, float(mixup), _npc(budget.n_per_class),
            budget.epochs, method_arch(method, head, budget, setting.dataset), budget.seed, config)


def _configs(data_by_name: dict[str, ImageData], cells: list[tuple], methods: dict, budget: Budget) -> list[str]:
    """The `config` hash of every cell (data fingerprints computed once per data set)."""
    fps = {name: data_fingerprint(d) for name, d in data_by_name.items() if any(c[0].dataset == name for c in cells)}
    config = functools.cache(lambda dataset, m, a: cell_config(fps[dataset], budget, _spec(m, methods[m]), a))
    return [config(s.dataset, m, a) for s, _, m, a in cells]


def run(data_by_name: dict[str, ImageData], settings: list[Setting], methods: dict | None,
        budget: Budget, csv_path: str | Path, mixups=(0.0,), progress: bool = True) -> pd.DataFrame:
    """Compute every (setting × case × method × mixup) cell not yet in `csv_path`; return this grid's rows.
    `methods`: name -> (head, hparams[, train_kw]); None = `losses.METHODS` (utils/README.md)."""
    methods = losses.METHODS if methods is None else methods
    for s in settings:
        if not isinstance(s, Setting):
            raise ValueError(f"settings must be Setting objects, got {s!r}")
        if s.dataset not in data_by_name:
            raise ValueError(f"no data for setting {s.label!r}: data_by_name has {sorted(data_by_name)}")
        _check_data(data_by_name[s.dataset])
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = grid(settings, methods, budget, mixups)
    configs = _configs(data_by_name, cells, methods, budget)
    cell_keys = [_key_of(*c, budget, cfg, methods[c[2]]) for c, cfg in zip(cells, configs)]
    wanted = set(cell_keys)
    kinds_of = {key: set(cell_kinds(c[2], methods[c[2]], budget)) for c, key in zip(cells, cell_keys)}
    old = read_results(path)
    keys = [cell_key(r) for r in old.to_dict("records")]
    got: dict[tuple, set] = {}
    for key, kind in zip(keys, old["score"]):
        got.setdefault(key, set()).add(kind)
    done = {key for key, have in got.items() if key in kinds_of and kinds_of[key] <= have}
    partial = [key in wanted and key not in done for key in keys]
    if any(partial):
        atomic_write(path, lambda f: f.write(old[[not p for p in partial]].to_csv(index=False, lineterminator="\n").encode()))
    if progress:
        from fastprogress.fastprogress import progress_bar
        bar = progress_bar(cells)
    else:
        bar = cells
    reused = sum(k in done for k in cell_keys)
    for (setting, case, method, mixup), cfg, key in zip(bar, configs, cell_keys):
        if key in done:
            continue
        if progress:
            bar.comment = f"{setting.label} case {case} {method} mixup {mixup:g}"
        _append(path, run_case(data_by_name[setting.dataset], setting, case, method, budget, mixup,
                               head=methods[method], config=cfg))
    print(f"{path.name}: {len(cells)} cells, {reused} reused from the file (same settings, data and code), "
          f"{len(cells) - reused} computed")
    df = read_results(path)
    return df[[cell_key(r) in wanted for r in df.to_dict("records")]].reset_index(drop=True)


def run_budgets(data_by_name: dict[str, ImageData], grids: dict[str, tuple[list[Setting], Budget]],
                methods: dict | None, csv_path: str | Path, mixups=(0.0,)) -> pd.DataFrame:
    """`run` one grid per budget into one CSV (grids: label -> (settings, budget)); return all their rows.

    Prints a line per grid: its number of networks and their mean training time.
    """
    parts = []
    for label, (settings, budget) in grids.items():
        part = run(data_by_name, settings, methods, budget, csv_path, mixups, progress=False)
        nets = part[part["score"] == "min"]
        print(f"{label}: {len(nets)} networks, {nets['train_seconds'].mean():.1f} s of training each")
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


# ----------------------------------------------------------------------------- summaries
def setting_labels(df: pd.DataFrame) -> list[str]:
    """Each row's setting as `Setting.label` writes it ("mnist k=5 cosine")."""
    return [Setting(d, int(k), m).label for d, k, m in zip(df["dataset"], df["k"], df["metric"])]


def select_scores(df: pd.DataFrame, score: str = "min", recon_score: str = "mae") -> pd.DataFrame:
    """The rows of one score kind: `score` for the kNN methods and `recon_score` ("mse" or "mae") for the
    autoencoders (the methods whose rows hold reconstruction errors)."""
    if score not in set(df["score"]) and recon_score not in set(df["score"]):
        raise ValueError(f"no {score!r} scores: the table has {sorted(set(df['score']))}")
    recon = set(df.loc[df["score"].isin(losses.RECONSTRUCTION_ERRORS), "method"])
    return df[((df["score"] == score) & ~df["method"].isin(recon))
              | ((df["score"] == recon_score) & df["method"].isin(recon))]


def summary(df: pd.DataFrame, score: str = "min", recon_score: str = "mae") -> pd.DataFrame:
    """AUROC mean, std and number of cases per setting × method (× mixup and budget), for one score kind
    (`select_scores`: `score` for the kNN methods, `recon_score` for the autoencoders)."""
    keys = [c for c in KEY if c not in ("case", "config")]
    sel = select_scores(df, score, recon_score)
    out = sel.groupby(keys, sort=False)["auroc"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n_cases"})


def table(df: pd.DataFrame, score: str = "min", digits: int = 3, recon_score: str = "mae") -> pd.DataFrame:
    """`summary` as "mean ± std" strings: a row per method (and mixup), a column per setting.

    The table must hold one budget per setting (filter it first otherwise); settings may differ, e.g.
    in epochs when each has a `fixed_steps` budget.
    """
    s = summary(df, score, recon_score)
    setting, budget = ["dataset", "k", "metric"], ["n_per_class", "epochs", "seed"]
    # one budget per setting, one architecture per method and setting (the autoencoders have their own)
    if (s[setting + budget].drop_duplicates()[setting].duplicated().any()
            or s[setting + ["method", "mixup", "arch"]].drop_duplicates()[setting + ["method", "mixup"]].duplicated().any()):
        raise ValueError("the table mixes budgets (n_per_class, epochs, arch or seed) within one setting; "
                         "filter it to one budget first")
    s["setting"] = setting_labels(s)
    s["auroc"] = [f"{m:.{digits}f} ± {sd:.{digits}f}" for m, sd in zip(s["mean"], s["std"].fillna(0.0))]
    rows = ["method", "mixup"] if s["mixup"].nunique() > 1 else ["method"]
    out = s.pivot(index=rows if len(rows) > 1 else rows[0], columns="setting", values="auroc")
    order = list(dict.fromkeys(zip(*(s[r] for r in rows))))
    return out.reindex(index=[o[0] for o in order] if len(rows) == 1 else order,
                       columns=list(dict.fromkeys(s["setting"])))
