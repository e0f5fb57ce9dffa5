"""Write every notebook's Colab badge and Colab set-up cell from `utils.GITHUB_REPO` (the one place
the repository's location is named). Run after moving the repository:

    python scripts/colab_cells.py          # rewrite in place
    python scripts/colab_cells.py --check  # exit 1 if any notebook disagrees (the tests do this)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import utils  # noqa: E402

BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
SETUP_TAG = "colab-setup"


def badge(name: str) -> str:
    """Markdown for the 'Open in Colab' badge of notebook `name`."""
    url = f"https://colab.research.google.com/github/{utils.GITHUB_REPO}/blob/{utils.GITHUB_BRANCH}/notebooks/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def setup_source() -> str:
    """The first code cell: in Colab, fetch the repo and install what Colab lacks; everywhere, import
    `utils` from this repository and nowhere else (notebooks/setup_notebook.py)."""
    repo = utils.GITHUB_REPO
    name = repo.split("/")[-1]
    return f'''# Set-up (README): Colab fetches the repository once, with what Colab lacks (never torch); elsewhere this runs in its clone.
import sys, subprocess
if "google.colab" in sys.modules: subprocess.run("[ -d /content/{name} ] || {{ git clone -q --depth 1 https://github.com/{repo} /content/{name} && pip install -q -r /content/{name}/requirements-colab.txt; }}", shell=True, check=True); sys.path.insert(0, "/content/{name}/notebooks")  # noqa: E701, E702
import setup_notebook  # the clone's notebooks/setup_notebook.py: its `utils` first on the path, one plot style (opened outside the clone? README)'''


def sync(path: Path) -> bool:
    """Rewrite the badge and the set-up cell of one notebook; return True if anything changed."""
    nb = json.loads(path.read_text())
    before = json.dumps(nb)
    first = nb["cells"][0]
    text = "".join(first["source"])
    if not BADGE_RE.search(text):
        raise ValueError(f"{path.name}: the first cell has no Colab badge")
    first["source"] = BADGE_RE.sub(lambda _: badge(path.name), text).splitlines(keepends=True)
    setup = [c for c in nb["cells"] if SETUP_TAG in c.get("metadata", {}).get("tags", [])]
    if len(setup) != 1:
        raise ValueError(f"{path.name}: expected one cell tagged {SETUP_TAG!r}, found {len(setup)}")
    setup[0]["source"] = setup_source().splitlines(keepends=True)
    changed = json.dumps(nb) != before
    if changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    stale = []
    for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if args.check:
            tmp = json.loads(p.read_text())
            ok = badge(p.name) in "".join(tmp["cells"][0]["source"]) and any(
                "".join(c["source"]) == setup_source() for c in tmp["cells"]
                if SETUP_TAG in c.get("metadata", {}).get("tags", []))
            if not ok:
                stale.append(p.name)
        elif sync(p):
            print(f"updated {p.name}")
    if stale:
        print("out of date (run scripts/colab_cells.py):", ", ".join(stale))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
