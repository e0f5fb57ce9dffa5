"""Notebook glue: run modes, a banner that says what ran where, and recorded results."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from .data import atomic_write, cache_dir

ROOT = Path(__file__).resolve().parent.parent  # the repository
MODES = ("smoke", "default", "full")
MODE_HELP = {
    "smoke": "seconds: tiny subsets, for the test suite",
    "default": "the budget of the committed outputs, the same on a CPU and a GPU (README: each notebook's time on a 2-core CPU)",
    "full": "the articles' own budgets: hours, chosen explicitly",
}
MODE_ENV = "DML_MODE"  # what MODE = None means in headless runs (scripts/run_notebooks.py sets it)


def resolve_mode(mode: str | None) -> str:
    """The mode that runs: `mode` itself when set (the learner's choice always wins); for None, `$DML_MODE`
    when a headless runner set it, else "default" — on every device, so a GPU runs the budget whose
    numbers the prose quotes, only sooner."""
    if mode is None:
        mode = os.environ.get(MODE_ENV) or "default"
    if mode not in MODES:
        raise ValueError(f"MODE must be one of {MODES} or None, not {mode!r}: set it in the parameters cell")
    return mode


def code_version() -> str:
    """A hash of every `utils` module's source: notebooks published together share it."""
    from .cache import source_hash

    return source_hash(tuple(sorted(p.name for p in Path(__file__).resolve().parent.glob("*.py"))))


def banner(mode: str, data=None, budget=None) -> None:
    """Print the mode, the device, versions and `utils` code version, the data's origin and the budget."""
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"MODE {mode!r} — {MODE_HELP[mode]}")
    print(f"device: {dev} · torch {torch.__version__} · python {platform.python_version()} · utils {code_version()}")
    if data is not None:
        print(f"data: {data}")
        for note in data.notes:
            print(f"NOTE: {note}")
    if budget is not None:
        print("budget:", budget)


def record(echo: bool = True, **values) -> dict:
    """Print the notebook's headline results and, when `$DML_RESULTS` names a JSON file, add them to it.

    The headless runner and the tests read that file, so every figure a notebook reports is checked.
    `echo=False` only records them (for long lists the notebook has already shown as tables).
    """
    clean = {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}
    for k, v in clean.items() if echo else ():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    path = os.environ.get("DML_RESULTS")
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(p.read_text()) if p.is_file() else {}
        old.update(clean)
        atomic_write(p, lambda f: f.write(json.dumps(old, indent=1).encode()))
    return clean


def results_csv(name: str, mode: str) -> Path:
    """Where a notebook's result table goes, printed relative to the repository.

    `results/<name>_<mode>.csv`, committed with the notebooks; smoke runs write into the cache folder.
    """
    path = (ROOT / "results" if mode != "smoke" else cache_dir()) / f"{name}_{mode}.csv"
    print("results:", path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name)
    return path


def accuracy_table(sets: list[tuple[str, str]], methods: dict[str, tuple[str, dict]], seeds: list[int],
                   n_train: int | None, n_test: int | None, epochs: int, seed: int = 0,
                   augment: int = 2):
    """Train every method on every (data set, arch) for every seed (cached by `train.compare`).

    Returns the test accuracy's mean and std per (data set, method), and the same as a
    "mean ± std" table in percent, a row per method and a column per data set.
    """
    import pandas as pd

    from . import data as D, train as T

    runs = []
    for name, arch in sets:
        d = D.load(name, fallback="digits").per_class(n_train, n_test, seed=seed)
        r = T.compare(d, methods, seeds, arch=arch, epochs=epochs, augment=augment)
        runs.append(r.assign(dataset=d.name.split("[")[0], arch=arch))
    summary = pd.concat(runs).groupby(["dataset", "method"], sort=False).test_acc.agg(["mean", "std"])
    pct = lambda s: (100 * s).map("{:.2f}".format)  # noqa: E731
    table = (pct(summary["mean"]) + " ± " + pct(summary["std"])).unstack(0)
    return summary, table.reindex(list(dict.fromkeys(summary.index.get_level_values("method"))))
