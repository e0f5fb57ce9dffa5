"""Every notebook runs headless in smoke mode and reports sane numbers; committed notebooks are clean."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run the main job's runner in smoke mode once (offline, own cache); return its output folder."""
    out = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DML_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("DML_OFFLINE", "1")
        rc = load_script("run_notebooks").main(["--mode", "smoke", "--out", str(out)])
    return out, rc


def results(out: Path, stem: str) -> dict:
    path = out / f"{stem}.json"
    assert path.is_file(), f"{stem} recorded no results"
    return json.loads(path.read_text())


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:14] == ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12",
                                                    "13", "14"]


def test_smoke_run_passes_and_writes_summary(smoke):
    out, rc = smoke
    summary = (out / "SUMMARY.md").read_text()
    assert rc == 0, summary
    for nb in NOTEBOOKS:
        assert f"| {nb.name} | smoke | ok |" in summary
        assert re.search(rf"## {re.escape(nb.name)}\n- slowest cells: cell \d+, \d+\.\d s", summary), \
            f"{nb.name}: SUMMARY.md does not say which cells took the time"
        executed = json.loads((out / nb.name).read_text())
        errors = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]
                  if o["output_type"] == "error"]
        assert not errors


def test_01_softmax_learns_and_measures_norms(smoke):
    r = results(smoke[0], "01_softmax_baseline")
    assert r["mode"] == "smoke"
    assert r["softmax_test_acc"] > 0.3  # 10 classes: chance is 0.1
    assert 0 < r["norm_correct_mean"] and 0 < r["norm_rest_mean"]
    assert -1 <= r["spearman_norm_vs_confidence"] <= 1


def test_02_l2_sweep_learns_and_alpha_is_trained(smoke):
    r = results(smoke[0], "02_l2_constrained_softmax")
    assert r["softmax_test_acc"] > 0.3 and r["l2_alpha16_test_acc"] > 0.3
    assert r["learned_alpha"] > 0 and r["learned_alpha"] != 16.0  # the learnable alpha moved



def test_03_every_margin_head_learns(smoke):
    r = results(smoke[0], "03_angular_margins")
    accs = {k: v for k, v in r.items() if k.startswith("acc_")}
    assert {k.rsplit("_", 1)[-1] for k in accs} == {"softmax", "L2-softmax", "ArcFace", "CosFace", "SphereFace"}
    assert all(v > 0.3 for v in accs.values()), accs  # chance is 0.1
    assert r["sphereface_annealed_acc"] > 0.3


def test_04_center_loss_learns_and_compacts(smoke):
    r = results(smoke[0], "04_center_loss")
    accs = {k: v for k, v in r.items() if k.startswith("acc_")}
    assert len(accs) == 6 and all(v > 0.3 for v in accs.values()), accs
    assert r["ratio_lam_max"] < r["ratio_lam0"]  # the center term makes classes tighter relative to their distances


def test_05_embeddings_beat_chance_and_projections_are_timed(smoke):
    r = results(smoke[0], "05_tsne_umap")
    knn = {k: v for k, v in r.items() if k.startswith("knn_acc_")}
    assert len(knn) == 7 * len(r["datasets"])  # raw pixels + six methods per data set
    assert all(v > 0.3 for v in knn.values()), knn
    assert all(-1 <= v <= 1 for k, v in r.items() if k.startswith("silhouette_"))
    assert r["tsne_seconds_mean"] > 0 and r["umap_seconds_mean"] > 0


def test_06_outliers_are_told_apart_from_digits(smoke):
    r = results(smoke[0], "06_anomaly_lof_knn")
    assert all(v > 0.3 for k, v in r.items() if k.startswith("test_acc_"))
    normal = [v for k, v in r.items() if k.startswith("lof_l2_c0.001_") and k.endswith(" normal")]
    assert normal and normal[0] > 0.8  # contamination 0.001: nearly every normal test image is kept
    l2_knn = [v for k, v in r.items() if k.startswith("auroc_L2-softmax_kNN min cosine_")]
    assert len(l2_knn) == 2 and all(v > 0.7 for v in l2_knn), l2_knn  # outliers score above digits


def test_07_benchmark_ranks_held_out_classes_above_chance(smoke):
    r = results(smoke[0], "07_anomaly_benchmark")
    aurocs = {k: v for k, v in r.items() if k.startswith("auroc_")}
    assert len(aurocs) == 2 * 9 and r["n_cases"] == 2  # two settings (cosine, euclidean) x six heads, three autoencoders
    assert all(0 <= v <= 1 for v in aurocs.values())
    for ae in ("autoencoder", "denoising AE", "super-res AE"):  # reconstruction error ignores the metric
        by_metric = [[v for k, v in aurocs.items() if k.endswith(f"_k5_{metric}_{ae}")] for metric in ("cosine", "euclidean")]
        # the same network (the Euclidean cell loads the cached copy): equal up to float rounding
        assert len(by_metric[0]) == 1 and by_metric[0] == pytest.approx(by_metric[1], abs=1e-6), (ae, by_metric)
    # held-out digit classes score above the trained ones: every method above chance, the six heads
    # clearly (the autoencoders rank digits by ink, notebook 11, and sit lower)
    cosine = {k.rsplit("_", 1)[-1]: v for k, v in aurocs.items() if "_cosine_" in k}
    assert all(v > 0.52 for v in cosine.values()), aurocs
    heads = [v for m, v in cosine.items() if not m.endswith(("autoencoder", "AE"))]
    assert len(heads) == 6 and sum(heads) / len(heads) > 0.58, aurocs

def test_08_few_shot_curves_mixup_and_mean_of_k(smoke):
    r = results(smoke[0], "08_few_shot_mixup")
    assert r["mode"] == "smoke" and r["n_cases"] == 2 and r["ns"] == [10, 30]
    per_method = {k: v for k, v in r.items() if k.startswith("auroc_N") and "mean over" not in k}
    assert len(per_method) == 2 * 6 * 2  # two N x six methods x mixup off/on
    assert all(0 <= v <= 1 for v in per_method.values()), per_method
    assert r["auroc_N30_mean over methods_off"] > 0.6  # held-out digits score above the two trained ones
    k_curve = {k: v for k, v in r.items() if k.startswith("auroc_K")}
    assert set(k_curve) == {f"auroc_K{k}_mean" for k in ["1", "5", "10", "20", "30", "all"]}
    assert r["auroc_K1_mean"] == pytest.approx(r["auroc_N30_mean over methods_off"])  # the same networks
    assert r["auroc_K1_mean"] > r["auroc_Kall_mean"]  # the mean over every training image blurs the score
    assert -1 < r["mixup_delta_mean"] < 1


# ------------------------------------------------------------------ the committed notebooks
def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _outputs_text(cell: dict) -> str:
    """Everything a code cell shows as text: streams, plain text, HTML and markdown of its outputs."""
    parts = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            parts.append("".join(o["text"]))
        for mime in ("text/plain", "text/html", "text/markdown"):
            if mime in o.get("data", {}):
                parts.append("".join(o["data"][mime]))
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_one_clean_default_run(path):
    text = path.read_text()
    nb = json.loads(text)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "not one fresh top-to-bottom run"
    assert all(o["output_type"] != "error" for c in code for o in c["outputs"])
    assert "widgets" not in nb["metadata"]
    assert not [c for c in code if "injected-parameters" in c["metadata"].get("tags", [])], \
        "an injected cell would override the mode a learner sets"
    assert nb["metadata"].get("dml", {}).get("mode") == "default", "outputs must come from a default run (metadata.dml)"
    banner = next(c for c in code if "NB.banner(" in "".join(c["source"]))
    assert "MODE 'default'" in _outputs_text(banner), "the banner must say the run was in the default mode"
    assert len(text) < 5_000_000
    for pattern in (r"/work/", r"/home/", r"/root/", r"/tmp/", r"/Users/"):
        assert not re.search(pattern, text), f"machine path {pattern} in {path.name}"
    assert "TAKEAWAY" not in text
    assert "progress-bar" not in text and "<progress" not in text, "leftover progress-bar HTML"


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dependencies_follow_imports():
    """Imports are followed through modules, relative imports and packages, into the app and the kits
    beside a notebook; nothing that is not imported is counted."""
    deps = _runner().dependencies
    plain = deps("%matplotlib inline\nfrom utils import plot as P\n")
    assert {"plot.py", "__init__.py"} <= set(plain) and not any("/" in m for m in plain) and "benchmark.py" not in plain
    nb12 = set(deps("import app.recognizer\n"))
    assert {"app/__init__.py", "app/recognizer.py", "app/ood.py", "anomaly.py", "losses.py", "train.py",
            "not_a_digit.py", "data.py"} <= nb12 and "app/webapp.py" not in nb12
    nb14 = set(deps("from notebooks.retrieval import search as S\n"))
    assert {"notebooks/retrieval/__init__.py", "notebooks/retrieval/search.py", "notebooks/retrieval/metrics.py",
            "rank_metrics.py"} <= nb14 and "notebooks/retrieval/cub.py" not in nb14


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_come_from_the_current_code(path):
    """The code version a notebook was run with hashes `utils_modules`; those files are unchanged now, and
    they include every module the notebook depends on. (A module added later cannot have changed the
    outputs; an edit to any module that existed then asks for a re-run.)"""
    from utils.cache import source_hash

    dml = _nb(path)["metadata"].get("dml", {})
    modules = dml.get("utils_modules")
    assert modules, "metadata.dml.utils_modules is missing: publish with scripts/run_notebooks.py"
    runner = _runner()
    missing = set(runner.dependencies(runner.notebook_code(path))) - set(modules)
    assert not missing, f"{path.name} depends on {sorted(missing)}, which its recorded run did not include: re-publish"
    assert all((ROOT / "utils" / m if "/" not in m else ROOT / m).is_file() for m in modules), \
        f"a module of the run is gone: re-publish {path.name}"
    assert source_hash(tuple(modules)) == dml.get("utils"), \
        f"utils changed since {path.name} was run (code version {dml.get('utils')} -> {source_hash(tuple(modules))}): re-publish"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(path):
    """Badge, Colab set-up cell, one tagged parameters cell with DATASET and MODE, References at the end."""
    nb = _nb(path)
    tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
    params = [c for c, t in zip(nb["cells"], tags) if "parameters" in t]
    assert len(params) == 1
    src = "".join(params[0]["source"])
    assert re.search(r"^DATASET = ", src, re.M) and re.search(r"^MODE = None", src, re.M)
    assert "colab-setup" in tags[1]
    last = nb["cells"][-1]
    refs = "".join(last["source"])
    assert last["cell_type"] == "markdown" and refs.startswith("## References"), "end with a References cell"
    assert len(re.findall(r"https?://(?:arxiv\.org|doi\.org|qiita\.com|github\.com|proceedings|papers|openaccess|jmlr|www\.)", refs)) >= 2


def _resolve_source(nb: dict, mode: str) -> str:
    """The parameters cell with MODE set to `mode`, then the first code cell after it that resolves the mode, up to
    its resolve_mode line (lesson cells may stand between the two: they never touch MODE)."""
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    i = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    params = re.sub(r"^MODE = .*$", f"MODE = {mode!r}", "".join(cells[i]["source"]), count=1, flags=re.M)
    resolving = next(c for c in cells[i + 1:] if "MODE = NB.resolve_mode(MODE)" in "".join(c["source"]))
    assert not any("MODE" in "".join(c["source"]) for c in cells[i + 1:cells.index(resolving)]), \
        "a cell between the parameters and the mode's resolution touches MODE"
    lines = "".join(resolving["source"]).splitlines()
    upto = next(j for j, line in enumerate(lines) if line.startswith("MODE = NB.resolve_mode(MODE)"))
    return params + "\n" + "\n".join(lines[:upto + 1])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_mode_set_in_the_parameters_cell_is_the_mode_that_runs(path, monkeypatch):
    """Edit the committed notebook's parameters cell to each mode: that mode is what it resolves to, even
    when a runner's $DML_MODE says otherwise; None falls back to $DML_MODE, then to the device."""
    import sys

    monkeypatch.syspath_prepend(str(ROOT))
    nb = _nb(path)
    from utils import notebook as NB

    for mode in NB.MODES:
        monkeypatch.setenv("DML_MODE", "full" if mode != "full" else "smoke")
        scope: dict = {}
        exec(_resolve_source(nb, mode), scope)
        assert scope["MODE"] == mode
    monkeypatch.setenv("DML_MODE", "smoke")
    scope = {}
    exec(_resolve_source(nb, None), scope)
    assert scope["MODE"] == "smoke"
    monkeypatch.delenv("DML_MODE")
    for cuda in (False, True):   # the published budget on every device
        monkeypatch.setattr(sys.modules["torch"].cuda, "is_available", lambda: cuda)
        scope = {}
        exec(_resolve_source(nb, None), scope)
        assert scope["MODE"] == "default"


def test_a_learner_s_mode_runs_even_under_a_runner(tmp_path, monkeypatch):
    """Execute notebook 01 with MODE = "smoke" written into its parameters cell while $DML_MODE says default:
    it runs (and records) smoke."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = re.sub(r"^MODE = .*$", 'MODE = "smoke"', cell.source, count=1, flags=re.M)
    monkeypatch.setenv("DML_MODE", "default")
    monkeypatch.setenv("DML_RESULTS", str(tmp_path / "r.json"))
    monkeypatch.setenv("DML_PROGRESS", "0")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    assert json.loads((tmp_path / "r.json").read_text())["mode"] == "smoke"


def test_09_pair_and_triplet_losses_verify_unseen_people(smoke):
    r = results(smoke[0], "09_siamese_triplets_faces")
    assert r["att_verification_acc_seen_people"] > 0.75            # balanced pairs: chance is 0.5
    assert r["att_verification_acc_unseen_people"] > 0.6
    assert r["att_unseen_best_auc"] > 0.75
    learned = [v for k, v in r.items() if k.startswith("att_unseen_auc_") and "pixels" not in k]
    assert len(learned) == 8 and all(0.5 < v <= 1 for v in learned)
    assert r["att_active_triplets_end"] < r["att_active_triplets_start"]   # triplets become easy as it learns


def test_10_one_shot_far_above_chance(smoke):
    r = results(smoke[0], "10_one_shot_omniglot")
    assert 0.1 < r["omniglot_20way_1shot_acc_pixels"] < 0.5          # chance is 0.05
    methods = [k for k in r if k.startswith("omniglot_20way_1shot_acc_") and "pixels" not in k]
    assert len(methods) == 7                                          # six methods and the ensemble
    val = {k.removeprefix("omniglot_val_20way_1shot_acc_"): v for k, v in r.items()
           if k.startswith("omniglot_val_20way_1shot_acc_")}
    assert len(val) == 8                                              # pixels, six networks, the ensemble
    chosen = max(val, key=val.get)                                    # the choice is made on validation alphabets
    assert r["omniglot_20way_1shot_acc"] == r[f"omniglot_20way_1shot_acc_{chosen}"] and r["omniglot_20way_1shot_acc"] > 0.3
    assert sum(r[k] > 0.25 for k in methods) >= 5


def test_11_autoencoders_reproduce_digit1_and_enter_both_protocols(smoke):
    r = results(smoke[0], "11_autoencoders")
    models = ("autoencoder", "denoising_ae", "superres_ae", "unet_ae")
    for m in models:
        # mean + 3σ of the normal scores flags at most 1/9 of them (Chebyshev): the rule is applied as stated
        assert 8 / 9 <= r[f"ae_digit1_{m}_normal_kept"] <= 1
        assert 0 <= r[f"ae_digit1_{m}_anomalies_caught"] <= 1 and 0.5 < r[f"ae_digit1_{m}_auroc"] <= 1
    assert r["ae_digit1_autoencoder_auroc"] > 0.9            # other digits reconstruct worse than ones
    for m in models:                                           # ours, scored by the article's squared error
        assert 0 <= r[f"ae_digit1_{m}_mse_anomalies_caught"] <= 1 and 0.5 < r[f"ae_digit1_{m}_mse_auroc"] <= 1
    for m in ("autoencoder", "denoising_ae", "superres_ae"):   # the article's own recipe: MSE loss and score
        assert 8 / 9 <= r[f"ae_digit1_article_{m}_mse_normal_kept"] <= 1
        assert 0 <= r[f"ae_digit1_article_{m}_mse_anomalies_caught"] <= 1 and 0.5 < r[f"ae_digit1_article_{m}_mse_auroc"] <= 1
    assert 0.5 < r["oneclass_mnist_mean_auroc_dcae"] <= 1     # Ruff et al.'s DCAE: far above chance
    from utils import data as D
    try:
        with pytest.MonkeyPatch.context() as mp:   # the smoke run was offline: look where it looked
            mp.setenv("DML_OFFLINE", "1")
            D.load("fashion_mnist")
        sets = ("mnist", "fashion")
    except D.DataNotFound:  # then the notebook says so and runs the one-class protocol on MNIST only
        sets = ("mnist",)
        assert "NOTE: no fashion_mnist here" in json.dumps(json.loads((smoke[0] / "11_autoencoders.ipynb").read_text()))
    for data in sets:
        assert r[f"oneclass_{data}_mean_auroc_raw_pixels_knn"] > 0.8
        assert all(0 <= r[f"oneclass_{data}_mean_auroc_{m}"] <= 1 for m in models)
    vs = [k for k in r if k.startswith("onevsrest_") and "_k5_cosine_" in k]
    assert len(vs) == 9                                       # six heads and three autoencoders, one split


def test_12_draw_a_digit_keeps_digits_and_rejects_the_rest(smoke):
    r = results(smoke[0], "12_draw_a_digit")
    assert r["demo_mnist_kept"] >= 0.95                      # the threshold keeps 99 % of validation digits
    assert r["demo_mnist_acc"] > 0.5                          # 10 classes: chance is 0.1
    rejected = {k[len("demo_rejected_"):]: v for k, v in r.items() if k.startswith("demo_rejected_")}
    assert {"photos", "scribbles", "strokes", "shapes", "specks", "blank", "heldout_characters",
            "letters_non_lookalike", "letters_lookalike"} <= set(rejected)
    assert r["demo_mnist_answered_right"] <= min(r["demo_mnist_kept"], r["demo_mnist_acc"] + 1e-9) + 1e-9
    assert all(0 <= v <= 1 for v in rejected.values())
    assert rejected["blank"] == 1.0                           # blank canvases: "draw something"
    assert r["score"] in ("msp", "energy", "mahalanobis", "knn", "lof")
    executed = json.dumps(json.loads((smoke[0] / "12_draw_a_digit.ipynb").read_text()))
    assert "headless run: the canvas" in executed             # the interactive cells degrade, and say so
    assert "application/vnd.jupyter.widget-view+json" not in executed


def test_13_pretrained_features_beat_chance_without_training(smoke):
    r = results(smoke[0], "13_pretrained_features")
    assert r["backbone"] == "efficientnet_lite0" and r["china_top1"] in {"palace", "bell cote", "monastery"}
    keys = ["frozen_cifar_oneclass_mean_auroc", "frozen_cifar_k8_n100_mean_auroc", "finetuned_cifar_k8_n100_mean_auroc",
            "probe_cifar_k8_n100_mean_auroc", "finetuned_cifar_oneclass_mean_auroc", "scratch_cifar_oneclass_mean_auroc",
            "frozen_cifar_oneclass_n100_cases_mean_auroc", "scratch_cifar_k8_n100_l2softmax_auroc"]
    assert all(0 <= r[k] <= 1 for k in keys), {k: r.get(k) for k in keys}
    # no training at all, tiny inputs, 20 images per class: already well above chance
    assert r["frozen_cifar_oneclass_mean_auroc"] > 0.6
    assert r["frozen07_rows"] > 0                               # notebook 07's settings got their rows
    # a network that never saw a digit still tells digits from photos; without CIFAR-10 the notebook says so
    if "digits_frozen_vs_cifar10_auroc" in r:
        assert r["digits_frozen_vs_cifar10_auroc"] > 0.9
    else:
        assert "NOTE: no cifar10 here" in json.dumps(json.loads((smoke[0] / "13_pretrained_features.ipynb").read_text()))


LOSSES_14 = ["softmax", "l2_softmax", "arcface", "cosface", "sphereface", "center_loss", "contrastive",
             "triplet_batch_hard", "prototypical"]


def test_14_retrieval_fair_comparison_and_search(smoke):
    r = results(smoke[0], "14_retrieval")
    assert r["mode"] == "smoke" and r["n_seeds"] == 2 and r["datasets"] == ["omniglot", "att_faces", "cifar10"]
    for data in r["datasets"]:
        maps = {loss: r[f"map_at_r_{data}_{loss}"] for loss in LOSSES_14}
        r1 = {loss: r[f"recall_at_1_{data}_{loss}"] for loss in LOSSES_14}
        assert all(0 <= v <= 1 for v in [*maps.values(), *r1.values()]), (data, maps, r1)
        assert all(r1[k] >= maps[k] for k in LOSSES_14), (data, maps, r1)   # the first neighbour, not the whole ranking
        assert all(r[f"map_at_r_ci_{data}_{loss}"] >= 0 for loss in LOSSES_14)
    # unseen Omniglot alphabets: even a smoke budget of learning beats nearest neighbours on raw pixels
    pixels = r["map_at_r_omniglot_raw_pixels"]
    learned = sorted(r[f"map_at_r_omniglot_{loss}"] for loss in LOSSES_14)
    assert 0 < pixels < 0.2 and learned[4] > pixels + 0.01 and sum(v > pixels for v in learned) >= 7, (pixels, learned)
    assert 0 < r["map_at_r_cifar10_frozen_features"] <= 1 and r["map_at_r_cifar10_frozen_features"] > r["map_at_r_cifar10_raw_pixels"]
    # FAISS's exact index and the collection's torch brute force return the same neighbours; HNSW finds almost all
    assert r["faiss_exact_agrees_with_torch"] == 1.0
    assert r["faiss_live_hnsw_recall"] > 0.9 and 0 < r["faiss_live_ivf_recall"] <= 1
    executed = json.dumps(json.loads((smoke[0] / "14_retrieval.ipynb").read_text()))
    assert "CUB-200-2011 skipped" in executed                 # offline it says it skipped CUB, and why
    assert ("results/faiss_full.csv is not here" in executed) != (ROOT / "results" / "faiss_full.csv").is_file()


# ------------------------------------------------------------------ prose that matches the outputs
NUMBER = re.compile(r"(?<![\w.\-−/^])[−-]?\d{1,3}(?:,\d{3})*\.\d+(?:\s?%)?|(?<![\w.\-−/^])[−-]?\d+(?:\s?%)")


def _strip_unmeasured(md: str) -> str:
    """Markdown without what is not a measurement: math, code spans, links' targets, and the published
    figures the notebooks print beside their own (a "published" cell tag or marker is not needed: those
    tables are outputs too)."""
    md = re.sub(r"\$\$.*?\$\$", " ", md, flags=re.S)
    md = re.sub(r"\$[^$]*\$", " ", md)
    md = re.sub(r"`[^`]*`", " ", md)
    md = re.sub(r"\]\([^)]*\)", "]", md)
    md = re.sub(r"https?://\S+", " ", md)
    return md


def _values(text: str) -> list[tuple[float, int, bool]]:
    """(value, decimals, is_percent) of every decimal or percentage in `text`."""
    out = []
    for m in NUMBER.finditer(text):
        tok = m.group(0).replace("−", "-").replace(",", "")
        pct = tok.endswith("%")
        tok = tok.rstrip("%").strip()
        dec = len(tok.split(".")[1]) if "." in tok else 0
        out.append((float(tok), dec, pct))
    return out


def _shown(value: float, dec: int, pct: bool, outputs: list[float]) -> bool:
    """Is `value` (as quoted, with `dec` decimals) one of the outputs' numbers, allowing rounding and
    the fraction/percent change of scale?"""
    tol = 0.5 * 10 ** -dec + 1e-9
    scales = (1, 100, 0.01) if pct or dec else (1, 100)
    return any(abs(abs(value) - abs(o) * s) <= tol for o in outputs for s in scales)


def _output_numbers(nb: dict) -> list[float]:
    text = "\n".join(_outputs_text(c) for c in nb["cells"] if c["cell_type"] == "code")
    return [float(t.replace(",", "")) for t in re.findall(r"[−-]?\d[\d,]*\.?\d*(?:e[−+-]?\d+)?", text.replace("−", "-"))
            if re.fullmatch(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[+-]?\d+)?", t)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_in_the_prose_is_in_the_outputs(path):
    """Decimals and percentages quoted in markdown after the first code cell appear among the notebook's
    own outputs (to the quoted precision), so the prose cannot drift from a re-run."""
    nb = _nb(path)
    outputs = _output_numbers(nb)
    first_code = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
    missing = []
    for c in nb["cells"][first_code + 1:]:
        if c["cell_type"] != "markdown" or "".join(c["source"]).startswith("## References"):
            continue
        for value, dec, pct in _values(_strip_unmeasured("".join(c["source"]))):
            if not _shown(value, dec, pct, outputs):
                missing.append(f"{value}{'%' if pct else ''}")
    assert not missing, f"{path.name}: numbers in the prose that no output shows: {missing}"


def test_colab_cells_derive_from_one_place():
    colab = load_script("colab_cells")
    import utils

    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        assert colab.badge(path.name) in "".join(nb["cells"][0]["source"])
        assert "".join(nb["cells"][1]["source"]) == colab.setup_source()
        assert utils.GITHUB_REPO in colab.badge(path.name)
