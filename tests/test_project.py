"""The set-up files agree with each other and with README's commands."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_installs_requirements_txt():
    env = (ROOT / "environment.yml").read_text()
    assert "-r requirements.txt" in env and "-e ." in env


def test_every_requirement_has_a_floor_and_a_reason():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        spec, _, why = line.partition("#")
        assert ">=" in spec and "==" not in spec, f"use a version floor: {line}"
        assert why.strip(), f"say why it is needed: {line}"


def test_readme_commands_exist_in_makefile_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    make = (ROOT / "Makefile").read_text()
    for target in ("notebooks", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", make, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_no_data_files_are_tracked():
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    shipped = {"app/recognizer.pt"}   # the demo's weights, so that it starts at once; sha256 in app/recognizer.json
    assert not [f for f in files if (re.search(r"\.(gz|pt|pth|npz|ckpt)$", f) and f not in shipped) or f.startswith("data/cache")]
    assert (ROOT / "app" / "recognizer.pt").stat().st_size < 1_000_000


def _runner():
    """scripts/run_notebooks.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner


def test_readme_times_come_from_the_cold_publishing_run():
    """results/run_times.json holds cold default-mode runs of every notebook; README's time column is
    exactly what the runner writes from it; every notebook stays within ten minutes on a 2-core CPU. The total, at
    most 80 minutes, guards against budgets creeping up and allows for the spread between 2-core machines: the
    budgets before notebook 07 moved to 2 cases took 64 min on one machine and 73 on another, and the current
    ones took 76 on the second, on a day it ran the unchanged notebooks 1-24 % slower."""
    import json

    times = json.loads((ROOT / "results" / "run_times.json").read_text())
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert times["mode"] == "default" and times["cold"] is True and times["cores"] >= 1
    assert sorted(times["seconds"]) == notebooks
    assert all(0 < s <= 600 for s in times["seconds"].values()), times["seconds"]
    assert times["total_seconds"] == round(sum(times["seconds"].values()), 1) <= 4800
    runner = _runner()
    readme = (ROOT / "README.md").read_text()
    assert runner.readme_times(times, readme) == readme, "README's time column differs from results/run_times.json"
    rows = runner.TIME_ROW.findall(readme)
    assert [r[1] for r in rows] == [n[:2] for n in notebooks] and "not measured" not in "".join(r[2] for r in rows)


def test_readme_times_rewrites_only_the_last_column():
    runner = _runner()
    table = "| # | x | time |\n|---|---|---|\n| 01 | [a](b) | 1 s |\n| 02 | c | not measured |\n"
    out = runner.readme_times({"seconds": {"01_a.ipynb": 1234.4}}, table)
    assert out == "| # | x | time |\n|---|---|---|\n| 01 | [a](b) | 1,234 s |\n| 02 | c | not measured |\n"


def test_readme_headlines_come_from_the_published_notebooks():
    """Every published notebook carries what it recorded in the run that wrote its outputs (metadata.dml.results,
    strict JSON: no NaN), and README's headline column is exactly what the runner writes from those records."""
    import json

    runner = _runner()
    records = {}
    for nb in runner.notebooks():
        text = nb.read_text(encoding="utf-8")
        json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"{nb.name}: {c} in its JSON")))
        records[nb.name[:2]] = runner.recorded(nb)
        assert records[nb.name[:2]], f"{nb.name} has no recorded numbers in metadata.dml.results: publish it"
    assert sorted(records) == sorted(runner.HEADLINES)
    readme = (ROOT / "README.md").read_text()
    assert runner.readme_headlines(records, readme) == readme, "README's headlines differ from the notebooks' records"
    rows = runner.HEADLINE_ROW.findall(readme)
    assert [r[1] for r in rows] == sorted(records) and all(len(r[2]) > 40 for r in rows)


def test_readme_headlines_rewrite_only_their_column_and_name_a_missing_number():
    import pytest

    runner = _runner()
    table = "| # | x | headline | Colab | time |\n|---|---|---|---|---|\n| 02 | [a](b) | old | [open](c) | 1 s |\n"
    record = {"epochs": 1, "l2_alpha16_test_acc": 0.993, "softmax_test_acc": 0.992}
    out = runner.readme_headlines({"02": record}, table)
    assert out == table.replace("| old |", "| MNIST test accuracy after 1 epoch, one seed: L2-softmax (α = 16) 99.30 %, "
                                           "softmax 99.20 % |")
    with pytest.raises(KeyError, match="notebook 02: its headline needs the recorded number 'epochs'"):
        runner.readme_headlines({"02": {"softmax_test_acc": 0.992}}, table)


def test_utils_stays_small_and_notebook_plumbing_out_of_sight():
    """scripts/code_stats.py's two figures: ≤ 2,500 hand-written `utils` lines counted as `wc -l` counts them (every
    line, blank ones too: the unit of the "5,699 lines" the target was set against), ≤ 10 % plumbing lines."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "code_stats.py")], capture_output=True, text=True,
                         check=True).stdout
    hand = int(re.search(r"^utils: ([\d,]+) hand-written", out, re.M).group(1).replace(",", ""))
    plumbing, total = (int(v.replace(",", "")) for v in re.search(r"^notebooks: ([\d,]+) of ([\d,]+)", out, re.M).groups())
    every_line = int(re.search(r"^utils, every line \(wc -l\): ([\d,]+) hand-written", out, re.M).group(1).replace(",", ""))
    assert hand < every_line <= 2500, out
    assert plumbing <= 0.10 * total, out


def test_setup_cell_imports_this_clones_utils_over_another(tmp_path):
    """The set-up cell, run from notebooks/ after a different package called `utils` was imported, ends with
    this clone's `utils` (and a clear error names setup_notebook when the notebook is opened elsewhere)."""
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from colab_cells import setup_source

    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "__init__.py").write_text("FOREIGN = True\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import utils; assert utils.FOREIGN\n"
            + setup_source() + "\nimport utils; print(utils.__file__)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "notebooks", capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()).resolve() == ROOT / "utils" / "__init__.py"
    elsewhere = subprocess.run([sys.executable, "-c", setup_source()], cwd=tmp_path, capture_output=True, text=True)
    assert elsewhere.returncode != 0 and "setup_notebook" in elsewhere.stderr


def test_the_runner_keeps_a_notebooks_records_as_strict_json():
    """What a notebook records goes into its metadata (metadata.dml.results) as strict JSON, which JupyterLab
    reads: a number not run in this mode (NaN) or infinite becomes null."""
    import json

    runner = _runner()
    run = {"mode": "default", "results": {"a": [float("nan"), 1.0], "b": float("inf"), "c": "x", "d": 2}}
    assert runner._finite(run) == {"mode": "default", "results": {"a": [None, 1.0], "b": None, "c": "x", "d": 2}}
    json.loads(json.dumps(runner._finite(run)), parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(c)))


def test_the_runner_says_which_cells_take_the_time(tmp_path):
    """The run summary names each notebook's slowest code cells, from papermill's per-cell timings, which the
    committed notebook no longer carries (they differ on every run)."""
    import json

    runner = _runner()
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# x"]},
             {"cell_type": "code", "metadata": {"papermill": {"duration": 1.04}}, "source": ["# set-up\n", "import torch"]},
             {"cell_type": "code", "metadata": {"papermill": {"duration": 12.26}}, "source": ["res = train(`x`)"]},
             {"cell_type": "code", "metadata": {}, "source": ["not run"]}]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}}))
    assert runner.cell_seconds(path) == [(2, 12.3, "res = train(`x`)"), (1, 1.0, "import torch")]
    row = {"notebook": "nb.ipynb", "mode": "default", "status": "ok", "seconds": 14.0, "results": {},
           "cells": runner.cell_seconds(path)}
    assert "- slowest cells: cell 2, 12.3 s (`res = train('x')`); cell 1, 1.0 s (`import torch`)" in runner.summary([row])
