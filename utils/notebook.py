"""Notebook glue: run modes, a banner that says what ran where, and recorded results."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent  # the repository
MODES = ("smoke", "cpu", "full")
MODE_HELP = {
    "smoke": "seconds: tiny subsets, for the test suite",
    "cpu": "minutes on a 2-core CPU (the README lists each notebook's time): the committed outputs come from it",
    "full": "the articles' settings, for a GPU",
}


def resolve_mode(mode: str | None) -> str:
    """`None` -> 'full' when CUDA is present, else 'cpu'. Anything else must be one of `MODES`."""
    if mode is None:
        return "full" if torch.cuda.is_available() else "cpu"
    if mode not in MODES:
        raise ValueError(f"MODE must be one of {MODES} or None, not {mode!r}")
    return mode


def banner(mode: str, data=None) -> None:
    """Print the mode, the device, library versions and where the data came from."""
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"MODE {mode!r} — {MODE_HELP[mode]}")
    print(f"device: {dev} · torch {torch.__version__} · python {platform.python_version()}")
    if data is not None:
        print(f"data: {data}")
        for note in data.notes:
            print(f"NOTE: {note}")


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
        p.write_text(json.dumps(old, indent=1))
    return clean


def results_csv(name: str, mode: str) -> Path:
    """Where a notebook's result table goes, printed relative to the repository.

    `results/<name>_<mode>.csv`, committed with the notebooks; smoke runs write into the cache folder.
    """
    from .data import cache_dir

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
