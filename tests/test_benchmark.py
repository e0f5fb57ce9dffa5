"""The fastai-overhead benchmark runs end to end on tiny offline data and reports all three pipelines."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_reports_three_pipelines(tmp_path):
    spec = importlib.util.spec_from_file_location("benchmark_fastai", ROOT / "scripts" / "benchmark_fastai.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.json"
    report = mod.main(["--dataset", "digits", "--n-per-class", "20", "--bs", "32", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert report["train_images"] == 200
    names = [r["pipeline"] for r in report["rows"]]
    assert len(names) == 3 and any("PNG" in n for n in names)
    for r in report["rows"]:
        assert r["seconds"] > 0 and abs(r["images_per_s"] * r["seconds"] - 200) < 0.05 * 200
    assert report["rows"][0]["slower_than_utils"] == 1.0
