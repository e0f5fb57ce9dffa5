"""utils.notebook: run modes and `record`, the file the runner and the notebook tests read."""
from __future__ import annotations

import json

import pytest
import torch

from utils import notebook as NB


def test_resolve_mode(monkeypatch):
    monkeypatch.delenv("DML_MODE", raising=False)
    assert [NB.resolve_mode(m) for m in NB.MODES] == list(NB.MODES) == ["smoke", "default", "full"]
    assert NB.resolve_mode(None) == "default"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert NB.resolve_mode(None) == "default"                   # the same budget with CUDA: only sooner
    monkeypatch.setenv("DML_MODE", "smoke")
    assert NB.resolve_mode(None) == "smoke"                     # a headless runner's mode, for MODE = None
    assert NB.resolve_mode("full") == "full"                    # what the learner set always wins
    for gone in ("gpu", "cpu", "fast"):
        with pytest.raises(ValueError, match="MODE must be one of"):
            NB.resolve_mode(gone)


def test_banner_says_mode_device_and_code_version_and_estimates_nothing(capsys):
    NB.banner("default")
    out = capsys.readouterr().out
    assert out.startswith("MODE 'default' — ") and f"utils {NB.code_version()}" in out
    assert "T4" not in out and "estimate" not in out
    assert not hasattr(NB, "estimate_minutes")


def test_record_prints_and_merges_into_the_results_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "r" / "nb.json"
    monkeypatch.setenv("DML_RESULTS", str(path))
    assert NB.record(acc=torch.tensor(0.5), mode="default") == {"acc": 0.5, "mode": "default"}
    assert capsys.readouterr().out == "acc: 0.5000\nmode: default\n"
    NB.record(echo=False, auroc=0.75, acc=0.25)
    assert capsys.readouterr().out == ""
    assert json.loads(path.read_text()) == {"acc": 0.25, "mode": "default", "auroc": 0.75}


def test_results_csv_goes_to_results_or_the_cache_and_prints_no_absolute_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DML_CACHE", str(tmp_path))
    assert NB.results_csv("bench", "default") == NB.ROOT / "results" / "bench_default.csv"
    assert capsys.readouterr().out == "results: results/bench_default.csv\n"
    assert NB.results_csv("bench", "smoke").parent.resolve() == tmp_path.resolve()
    assert capsys.readouterr().out == "results: bench_smoke.csv\n"
