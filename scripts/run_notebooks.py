"""Execute the notebooks headless (papermill) and write a one-page summary.

    python scripts/run_notebooks.py                 # every notebook, default mode, into runs/default/
    python scripts/run_notebooks.py --mode smoke    # seconds each: what the tests run
    python scripts/run_notebooks.py --inplace --cold --times results/run_times.json   # publish (make publish)

The parameters cell is left as it is: its `MODE = None` resolves to the runner's mode through
`$DML_MODE` (a learner who sets MODE in that cell gets exactly that mode), so executed notebooks
carry no injected cell. The mode, the `utils` code version, the modules it hashes and the run time are
written into the executed notebook's metadata (`metadata.dml`); the tests check that those modules are
unchanged and include every `utils` module the notebook imports, directly or through another. Progress bars are off
(`DML_PROGRESS=0`) and widgets are not drawn (`DML_HEADLESS=1`) so outputs stay clean. Each notebook
records its headline numbers into `<out>/<notebook>.json` and its metadata (`metadata.dml.results`);
`<out>/SUMMARY.md` gathers them, and a publishing run of every notebook writes README's headline column from
them (`HEADLINES`). `--dataset`
is the one override that needs papermill's injected parameters cell, so it cannot be combined with `--inplace`.

`--cold` runs from nothing: an empty cache folder (decoded data, trained models, embeddings, features)
for the whole run, and, when every notebook runs, the mode's resumable result tables
(`results/*_<mode>.csv`) started afresh (with `--only` they are kept: other notebooks wrote them).
The notebooks run one at a time, in order, with torch's default threads (what a learner gets); a
notebook that needs a model an earlier one trained loads it from the cache. `--times` writes the
seconds of each notebook, the machine's cores and whether the run was cold to a JSON file
(README's time column comes from `results/run_times.json`).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT))


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks, in order (optionally only those whose names start with `only`)."""
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in found if not only or any(p.name.startswith(o) for o in only)]


def strip_injected(src: Path, dest: Path) -> None:
    """Copy a notebook without papermill's injected-parameters cell (older runs left one behind)."""
    nb = json.loads(src.read_text())
    nb["cells"] = [c for c in nb["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def clean_metadata(path: Path, run: dict | None = None) -> None:
    """Drop papermill's machine-specific metadata (absolute paths, timestamps) from an executed notebook
    and record how it was run (`metadata.dml`: mode, utils code version, seconds, the recorded numbers; a
    number that is not finite becomes null, as strict JSON readers such as JupyterLab's require)."""
    nb = json.loads(path.read_text())
    nb["metadata"].pop("papermill", None)
    nb["metadata"].pop("widgets", None)
    if run is not None:
        nb["metadata"]["dml"] = _finite(run)
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def cell_seconds(path: Path) -> list[tuple[int, float, str]]:
    """(cell number, seconds, first code line) of every code cell papermill timed in the executed notebook
    `path`, slowest first: where a notebook's time goes, for choosing what a budget cut should touch."""
    timed = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell["cell_type"] == "code" and duration is not None:
            code = [ln for ln in "".join(cell["source"]).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            timed.append((i, round(duration, 1), (code or [""])[0].strip()[:60]))
    return sorted(timed, key=lambda t: -t[1])


def _finite(obj):
    """`obj` with every float that is not finite (NaN: not run in this mode) replaced by None."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def utils_modules() -> list[str]:
    """The `utils` source files a code version hashes (`utils.notebook.code_version`), sorted."""
    return sorted(p.name for p in (ROOT / "utils").glob("*.py"))


PACKAGES = ("utils", "app", "notebooks")  # the project's importable code: utils, the web app, kits beside a notebook


def _module_file(dotted: str) -> Path | None:
    """The project file of a dotted module name (`app.ood` -> app/ood.py), or None."""
    parts = dotted.split(".")
    if parts[0] not in PACKAGES:
        return None
    for path in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if path.is_file():
            return path
    return None


def _with_packages(dotted: str) -> set[Path | None]:
    """The file of `dotted` and of every package above it (their `__init__.py` runs on import)."""
    parts = dotted.split(".")
    return {_module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)}


def _imports(tree: ast.AST, here: str = "") -> set[Path]:
    """The project files an AST imports (anywhere, also inside functions); `here` is the dotted package of
    the module the tree comes from, for relative imports."""
    found: set[Path | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found |= _with_packages(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            found |= _with_packages(base) | {_module_file(f"{base}.{a.name}") for a in node.names}
    return {f for f in found if f is not None}


def dependencies(code: str) -> list[str]:
    """Every project source file `code` (a notebook's code cells) depends on, directly or through another:
    `utils` modules by file name ("plot.py"), others by path ("app/ood.py"), sorted."""
    code = "\n".join(ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!")))
    todo, seen = _imports(ast.parse(code)), set()
    while todo:
        path = todo.pop()
        seen.add(path)
        rel = path.relative_to(ROOT)
        package = ".".join(rel.parts[:-1])
        todo |= _imports(ast.parse(path.read_text(encoding="utf-8")), package) - seen
    return sorted(p.name if p.parent == ROOT / "utils" else p.relative_to(ROOT).as_posix() for p in seen)


def notebook_code(path: Path) -> str:
    """The code cells of a notebook, joined."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def run_modules(nb: Path) -> list[str]:
    """The files a published notebook's code version hashes: every `utils` module, and the project modules
    outside `utils` the notebook depends on (the web app's recognizer for 12, the retrieval kit for 14)."""
    return utils_modules() + [m for m in dependencies(notebook_code(nb)) if "/" in m]


def execute(nb: Path, out: Path, mode: str, dataset: str | None, results: Path, timeout: int) -> dict:
    """Run one notebook; return a summary row."""
    import papermill as pm

    from utils.cache import source_hash
    from utils.notebook import MODE_ENV

    params = {"DATASET": dataset} if dataset else None
    results.unlink(missing_ok=True)
    source = out.with_name(f".{nb.stem}.source.ipynb")
    strip_injected(nb, source)
    env = {"DML_RESULTS": str(results), MODE_ENV: mode, "DML_PROGRESS": "0", "DML_HEADLESS": "1"}
    modules = run_modules(nb)  # the files the code version hashes: later modules leave this run's outputs valid
    version = source_hash(tuple(modules))  # the code the notebook runs with; an edit during the run is caught below
    t0 = time.perf_counter()
    row = {"notebook": nb.name, "mode": mode}
    try:
        with mock.patch.dict(os.environ, env):  # the kernel inherits them; restored afterwards
            pm.execute_notebook(str(source), str(out), parameters=params, cwd=str(NOTEBOOKS),
                                kernel_name="python3", progress_bar=False, execution_timeout=timeout)
        row["status"] = "ok"
    except Exception as e:  # papermill raises PapermillExecutionError with the failing cell
        row["status"] = "FAILED"
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"
    finally:
        source.unlink(missing_ok=True)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    if row["status"] == "ok" and source_hash(tuple(modules)) != version:
        row["status"] = "FAILED"
        row["error"] = (f"the code changed while the notebook ran (code version {version} -> {source_hash(tuple(modules))}): "
                        f"its outputs come from no single version; run it again")
    row["results"] = json.loads(results.read_text()) if results.is_file() else {}
    if out.is_file():
        row["cells"] = cell_seconds(out)  # read before clean_metadata drops papermill's timings
        clean_metadata(out, {"mode": mode, "utils": version, "utils_modules": modules, "seconds": row["seconds"],
                             "results": row["results"]})
    return row


def summary(rows: list[dict]) -> str:
    """Markdown page: one section per notebook with status, time and recorded numbers."""
    lines = ["# Notebook run summary", "",
             "| notebook | mode | status | seconds |", "|---|---|---|---|"]
    lines += [f"| {r['notebook']} | {r['mode']} | {r['status']} | {r['seconds']} |" for r in rows]
    for r in rows:
        lines += ["", f"## {r['notebook']}"]
        if r.get("error"):
            lines.append(f"- error: `{r['error']}`")
        if r.get("cells"):
            lines.append("- slowest cells: " + "; ".join(f"cell {i}, {s} s (`{code.replace('`', chr(39))}`)"
                                                        for i, s, code in r["cells"][:5]))
        lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in r["results"].items()]
    return "\n".join(lines) + "\n"


def write_times(path: Path, rows: list[dict], mode: str, cold: bool) -> None:
    """Seconds per notebook (merged into `path`'s earlier entries), with the machine they ran on."""
    import torch

    old = json.loads(path.read_text()) if path.is_file() else {}
    seconds = {**old.get("seconds", {}), **{r["notebook"]: r["seconds"] for r in rows if r["status"] == "ok"}}
    data = {"mode": mode, "cold": cold and old.get("cold", True), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "seconds": dict(sorted(seconds.items())), "total_seconds": round(sum(seconds.values()), 1)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


README = ROOT / "README.md"
TIME_ROW = re.compile(r"^(\| (\d\d) \|.*\| )([^|]*)( \|)$", re.M)   # the notebook table's last column: the time
HEADLINE_ROW = re.compile(r"^(\| (\d\d) \| [^|]* \| )([^|]*)( \|.*)$", re.M)   # the third column: the headline


def _span(r: dict, keys: list[str]) -> str:
    """"lo–hi" of the recorded values `keys` (3 decimals)."""
    v = [r[k] for k in keys]
    return f"{min(v):.3f}–{max(v):.3f}"


HEADS = ("softmax", "L2-softmax", "ArcFace", "CosFace", "SphereFace", "center loss")
# notebook number -> its headline, from the numbers the notebook records (`NB.record`) in its published run
HEADLINES = {
    "01": lambda r: (f"MNIST test accuracy {r['softmax_test_acc'] * 100:.2f} %; a small embedding norm alone flags a mistake "
                     f"with AUROC {r['auroc_small_norm_flags_error']:.2f}"),
    "02": lambda r: (f"MNIST test accuracy after {r['epochs']} epoch{'s' * (r['epochs'] > 1)}, one seed: L2-softmax "
                     f"(α = 16) {r['l2_alpha16_test_acc'] * 100:.2f} %, softmax {r['softmax_test_acc'] * 100:.2f} %"),
    "03": lambda r: ("MNIST test accuracy, 64-d, mean over seeds: " + ", ".join(f"{h} {r[f'acc_mnist_{h}']:.3f}" for h in HEADS[:5])
                     + f"; on the 2-d circle SphereFace {r['sphereface_2d_acc']:.3f}"),
    "04": lambda r: (f"2-d, λ from 0 to the largest tried: intra/inter distance ratio {r['ratio_lam0']:.3f} → "
                     f"{r['ratio_lam_max']:.3f}; 64-d MNIST test accuracy {r['acc_mnist_center loss']:.3f}"),
    "05": lambda r: (f"MNIST kNN accuracy: pixels {r['knn_acc_mnist_input pixels']:.3f}, six embeddings "
                     f"{_span(r, [f'knn_acc_mnist_{h}' for h in HEADS])}; silhouette {r['silhouette_mnist_input pixels']:.3f} "
                     f"→ {_span(r, [f'silhouette_mnist_{h}' for h in HEADS])}"),
    "06": lambda r: ("AUROC, MNIST vs Fashion-MNIST / CIFAR-10, nearest-neighbour cosine distance: pixels "
                     + ", L2-softmax ".join(f"{r[f'auroc_{s}_kNN min cosine_fashion_mnist']:.3f} / "
                                             f"{r[f'auroc_{s}_kNN min cosine_cifar10']:.3f}" for s in ("input pixels", "L2-softmax"))),
    "07": lambda r: (f"one-vs-rest AUROC of the six heads (cosine): MNIST k = 5 {_span(r, [f'auroc_mnist_k5_cosine_{h}' for h in HEADS])}, "
                     f"CIFAR-10 k = 8 {_span(r, [f'auroc_cifar10_k8_cosine_{h}' for h in HEADS])}; autoencoders, MNIST "
                     f"k = 5: {_span(r, [f'auroc_mnist_k5_cosine_{m}' for m in ('autoencoder', 'denoising AE', 'super-res AE')])}"),
    "08": lambda r: (f"CIFAR-10, two normal classes, mean AUROC of six heads: {r['auroc_N50_mean over methods_off']:.3f} with "
                     f"50 images a class, {r['auroc_N500_mean over methods_off']:.3f} with 500; mixup "
                     f"{r['mixup_delta_mean']:+.3f} on average"),
    "09": lambda r: ("AT&T faces, people never seen, verification accuracy: " + ", ".join(
        f"{m} {r[f'att_unseen_acc_{m}']:.3f}" for m in ("pixels", "contrastive", "triplet · batch-hard",
                                                        "Siamese (Koch)", "ArcFace", "CosFace"))),
    "10": lambda r: (f"Omniglot 20-way one-shot, the 20 official runs: {r['omniglot_best_method']} (chosen on "
                     f"validation) {r['omniglot_20way_1shot_acc']:.3f}, raw pixels {r['omniglot_20way_1shot_acc_pixels']:.3f}"),
    "11": lambda r: (f"one-class MNIST, mean AUROC: kNN on pixels {r['oneclass_mnist_mean_auroc_raw_pixels_knn']:.3f}, "
                     f"autoencoder {r['oneclass_mnist_mean_auroc_autoencoder']:.3f}, Ruff et al.'s DCAE "
                     f"{r['oneclass_mnist_mean_auroc_dcae']:.3f}"),
    "12": lambda r: (f"the demo keeps {r['demo_mnist_kept']:.4f} of MNIST's test digits and rejects "
                     f"{r['demo_rejected_fashion_mnist']:.3f} of Fashion-MNIST, {r['demo_rejected_cifar10']:.3f} of "
                     f"CIFAR-10, {r['demo_rejected_heldout_characters']:.3f} of two alphabets it never saw"),
    "13": lambda r: (f"CIFAR-10, two normal classes, N = 100, mean AUROC: kNN on frozen EfficientNet-lite0 features "
                     f"{r['frozen_cifar_k8_n100_mean_auroc']:.3f}, L2-softmax from scratch {r['scratch_cifar_k8_n100_l2softmax_auroc']:.3f}"),
    "14": lambda r: ("MAP@R on unseen classes, Omniglot / faces / CIFAR-10: triplet · batch-hard " + " / ".join(
        f"{r[f'map_at_r_{d}_triplet_batch_hard']:.3f}" for d in ("omniglot", "att_faces", "cifar10"))
        + ", raw pixels " + " / ".join(f"{r[f'map_at_r_{d}_raw_pixels']:.3f}" for d in ("omniglot", "att_faces", "cifar10"))),
}


def recorded(nb: Path) -> dict:
    """What a published notebook recorded (`NB.record`) in the run that wrote its outputs (`metadata.dml.results`)."""
    return json.loads(nb.read_text(encoding="utf-8"))["metadata"].get("dml", {}).get("results", {})


def readme_headlines(records: dict[str, dict], readme: str) -> str:
    """README with the notebook table's headline column rewritten from `records` (notebook number -> what it
    recorded in its published run): each row "| NN | … | <headline> | … |" gets `HEADLINES[NN]`."""
    def cell(m: re.Match) -> str:
        number = m.group(2)
        try:
            text = HEADLINES[number](records[number])
        except KeyError as e:
            raise KeyError(f"notebook {number}: its headline needs the recorded number {e}; publish it "
                           f"(scripts/run_notebooks.py --inplace) or change HEADLINES") from None
        return m.group(1) + text.replace("|", "/") + m.group(4)

    return HEADLINE_ROW.sub(cell, readme)


def readme_times(times: dict, readme: str) -> str:
    """README with the notebook table's time column rewritten from `times` (results/run_times.json):
    each row "| NN | … | <time> |" gets the seconds of notebook NN, or "not measured"."""
    by_number = {name[:2]: sec for name, sec in times["seconds"].items()}

    def cell(m: re.Match) -> str:
        sec = by_number.get(m.group(2))
        return m.group(1) + (f"{sec:,.0f} s" if sec is not None else "not measured") + m.group(4)

    return TIME_ROW.sub(cell, readme)


def main(argv: list[str] | None = None) -> int:
    from utils.notebook import MODES, resolve_mode

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, default=None, help="default: the published budget")
    ap.add_argument("--dataset", default=None, help="override every notebook's DATASET")
    ap.add_argument("--only", nargs="*", help="notebook number prefixes, e.g. 01 02")
    ap.add_argument("--out", default=None, help="folder for executed copies (default runs/<mode>)")
    ap.add_argument("--inplace", action="store_true", help="write the executed notebooks over notebooks/")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument("--cold", action="store_true",
                    help="start from empty caches and fresh result tables (the published timing)")
    ap.add_argument("--times", default=None, help="write seconds per notebook to this JSON file")
    args = ap.parse_args(argv)
    if args.inplace and args.dataset:
        ap.error("--dataset needs an injected parameters cell, which committed notebooks must not carry: "
                 "run it without --inplace (into runs/)")

    mode = resolve_mode(args.mode)
    if os.environ.get("DML_DATA"):  # notebooks run inside notebooks/: make a relative root absolute
        os.environ["DML_DATA"] = str(Path(os.environ["DML_DATA"]).resolve())
    out_dir = (Path(args.out) if args.out else ROOT / "runs" / mode).resolve()  # notebooks run inside notebooks/
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.cold:
        cache = out_dir / "cold-cache"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir()
        os.environ["DML_CACHE"] = str(cache)
        if not args.only:   # every notebook runs: their resumable tables start afresh too
            for csv in (ROOT / "results").glob(f"*_{mode}.csv"):
                csv.unlink()
    rows = []
    for nb in notebooks(args.only):
        target = nb if args.inplace else out_dir / nb.name
        print(f"[{mode}] {nb.name} …", flush=True)
        row = execute(nb, target, mode, args.dataset, out_dir / f"{nb.stem}.json", args.timeout)
        print(f"    {row['status']} in {row['seconds']} s  {row.get('error', '')}", flush=True)
        rows.append(row)
    (out_dir / "SUMMARY.md").write_text(summary(rows))
    if args.times:
        write_times(Path(args.times), rows, mode, args.cold)
        if Path(args.times).resolve() == (ROOT / "results" / "run_times.json").resolve():
            README.write_text(readme_times(json.loads(Path(args.times).read_text()), README.read_text()))
    if args.inplace and not args.only and mode == "default":
        README.write_text(readme_headlines({nb.name[:2]: recorded(nb) for nb in notebooks()}, README.read_text()))
    print(f"summary: {out_dir / 'SUMMARY.md'}")
    return 0 if rows and all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
