"""Execute the notebooks headless (papermill) and write a one-page summary.

    python scripts/run_notebooks.py                 # every notebook, default mode, into runs/<mode>/
    python scripts/run_notebooks.py --mode smoke    # seconds each: what the tests run
    python scripts/run_notebooks.py --mode cpu --inplace   # refresh the committed outputs

The parameters cell is left as it is: its `MODE = None` resolves to the runner's mode through
`$DML_MODE` (a learner who sets MODE in that cell gets exactly that mode), so executed notebooks
carry no injected cell. The mode, the `utils` code version, the modules it hashes and the run time are
written into the executed notebook's metadata (`metadata.dml`); the tests check that those modules are
unchanged and include every `utils` module the notebook imports, directly or through another. Progress bars are off
(`DML_PROGRESS=0`) and widgets are not drawn (`DML_HEADLESS=1`) so outputs stay clean. Each notebook
records its headline numbers into `<out>/<notebook>.json`; `<out>/SUMMARY.md` gathers them. `--dataset`
is the one override that needs papermill's injected parameters cell, so it cannot be combined with `--inplace`.
"""
from __future__ import annotations

import argparse
import json
import os
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
    and record how it was run (`metadata.dml`: mode, utils code version, seconds)."""
    nb = json.loads(path.read_text())
    nb["metadata"].pop("papermill", None)
    nb["metadata"].pop("widgets", None)
    if run is not None:
        nb["metadata"]["dml"] = run
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def utils_modules() -> list[str]:
    """The `utils` source files a code version hashes (`utils.notebook.code_version`), sorted."""
    return sorted(p.name for p in (ROOT / "utils").glob("*.py"))


def execute(nb: Path, out: Path, mode: str, dataset: str | None, results: Path, timeout: int) -> dict:
    """Run one notebook; return a summary row."""
    import papermill as pm

    from utils.notebook import MODE_ENV, code_version

    params = {"DATASET": dataset} if dataset else None
    results.unlink(missing_ok=True)
    source = out.with_name(f".{nb.stem}.source.ipynb")
    strip_injected(nb, source)
    env = {"DML_RESULTS": str(results), MODE_ENV: mode, "DML_PROGRESS": "0", "DML_HEADLESS": "1"}
    version = code_version()  # the utils the notebook runs with; an edit during the run is caught below
    modules = utils_modules()  # the files that version hashes: later modules leave this run's outputs valid
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
    if row["status"] == "ok" and code_version() != version:
        row["status"] = "FAILED"
        row["error"] = (f"utils changed while the notebook ran (code version {version} -> {code_version()}): "
                        f"its outputs come from no single version; run it again")
    row["results"] = json.loads(results.read_text()) if results.is_file() else {}
    if out.is_file():
        clean_metadata(out, {"mode": mode, "utils": version, "utils_modules": modules, "seconds": row["seconds"]})
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
        lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in r["results"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from utils.notebook import MODES, resolve_mode

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, default=None, help="default: gpu with CUDA, else cpu")
    ap.add_argument("--dataset", default=None, help="override every notebook's DATASET")
    ap.add_argument("--only", nargs="*", help="notebook number prefixes, e.g. 01 02")
    ap.add_argument("--out", default=None, help="folder for executed copies (default runs/<mode>)")
    ap.add_argument("--inplace", action="store_true", help="write the executed notebooks over notebooks/")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args(argv)
    if args.inplace and args.dataset:
        ap.error("--dataset needs an injected parameters cell, which committed notebooks must not carry: "
                 "run it without --inplace (into runs/)")

    mode = resolve_mode(args.mode)
    if os.environ.get("DML_DATA"):  # notebooks run inside notebooks/: make a relative root absolute
        os.environ["DML_DATA"] = str(Path(os.environ["DML_DATA"]).resolve())
    out_dir = (Path(args.out) if args.out else ROOT / "runs" / mode).resolve()  # notebooks run inside notebooks/
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for nb in notebooks(args.only):
        target = nb if args.inplace else out_dir / nb.name
        print(f"[{mode}] {nb.name} …", flush=True)
        row = execute(nb, target, mode, args.dataset, out_dir / f"{nb.stem}.json", args.timeout)
        print(f"    {row['status']} in {row['seconds']} s  {row.get('error', '')}", flush=True)
        rows.append(row)
    (out_dir / "SUMMARY.md").write_text(summary(rows))
    print(f"summary: {out_dir / 'SUMMARY.md'}")
    return 0 if rows and all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
