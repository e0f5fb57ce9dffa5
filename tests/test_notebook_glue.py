"""utils.notebook: run modes and `record`, the file the runner and the notebook tests read."""
from __future__ import annotations

import json

import pytest
import torch

from utils import notebook as NB


def test_resolve_mode():
    assert NB.resolve_mode(None) == ("full" if torch.cuda.is_available() else "cpu")
    assert [NB.resolve_mode(m) for m in NB.MODES] == list(NB.MODES)
    with pytest.raises(ValueError, match="MODE must be one of"):
        NB.resolve_mode("gpu")


def test_record_prints_and_merges_into_the_results_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "r" / "nb.json"
    monkeypatch.setenv("DML_RESULTS", str(path))
    assert NB.record(acc=torch.tensor(0.5), mode="cpu") == {"acc": 0.5, "mode": "cpu"}
    assert capsys.readouterr().out == "acc: 0.5000\nmode: cpu\n"
    NB.record(echo=False, auroc=0.75, acc=0.25)
    assert capsys.readouterr().out == ""
    assert json.loads(path.read_text()) == {"acc": 0.25, "mode": "cpu", "auroc": 0.75}


def test_results_csv_goes_to_results_or_the_cache_and_prints_no_absolute_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DML_CACHE", str(tmp_path))
    assert NB.results_csv("bench", "cpu") == NB.ROOT / "results" / "bench_cpu.csv"
    assert capsys.readouterr().out == "results: results/bench_cpu.csv\n"
    assert NB.results_csv("bench", "smoke").parent.resolve() == tmp_path.resolve()
    assert capsys.readouterr().out == "results: bench_smoke.csv\n"
