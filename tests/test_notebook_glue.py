"""utils.notebook: run modes and `record`, the file the runner and the notebook tests read."""
from __future__ import annotations

import json

import pytest
import torch

from utils import notebook as NB


def test_resolve_mode(monkeypatch):
    monkeypatch.delenv("DML_MODE", raising=False)
    assert NB.resolve_mode(None) == ("gpu" if torch.cuda.is_available() else "cpu")
    assert [NB.resolve_mode(m) for m in NB.MODES] == list(NB.MODES) == ["smoke", "cpu", "gpu", "full"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert NB.resolve_mode(None) == "gpu"                       # the CUDA default: a class-sized budget
    monkeypatch.setenv("DML_MODE", "smoke")
    assert NB.resolve_mode(None) == "smoke"                     # a headless runner's mode, for MODE = None
    assert NB.resolve_mode("cpu") == "cpu"                      # what the learner set always wins
    with pytest.raises(ValueError, match="MODE must be one of"):
        NB.resolve_mode("fast")


def test_estimate_minutes_from_measured_throughput(tmp_path):
    """Steps × fixed cost + images × compute time scaled by T4 peak / measured matmul rate."""
    m = {"device_type": "cpu", "matmul_flops_per_s": 8.1e10,   # T4 is 100× faster
         "networks": {"net": {"images_per_s_bs128": 1000.0, "step_seconds_bs1": 0.004}}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(m))
    per_image = 1 / 1000 - 0.004 / 128
    expected = (1000 * 0.004 + 128_000 * per_image / 100) / 60      # 1,000 steps of 128
    assert NB.estimate_minutes({"net": 128_000}, path=path) == pytest.approx(expected)
    assert NB.estimate_minutes({}, path=path) is None and NB.estimate_minutes({"net": 1}, path=tmp_path / "no") is None
    with pytest.raises(ValueError, match="no throughput measured for 'resnet'"):
        NB.estimate_minutes({"resnet": 10}, path=path)
    m["device_type"] = "cuda"                                       # measured on a GPU: its own images/s
    path.write_text(json.dumps(m))
    assert NB.estimate_minutes({"net": 60_000}, path=path) == pytest.approx(1.0)


def test_banner_says_mode_code_version_and_t4_estimate(capsys):
    NB.banner("gpu", work={"cnn-1x28x28": 900_000})
    out = capsys.readouterr().out
    assert out.startswith("MODE 'gpu' — ") and f"utils {NB.code_version()}" in out
    assert "training: 900,000 images" in out and "on a T4 (estimated" in out


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
