"""Two figures of how small `utils` is and how much of the notebooks is plumbing.

    python scripts/code_stats.py

- `utils` hand-written lines of `utils/*.py`, without the modules `scripts/export.py` generates from the
  notebooks' `#@save` cells (counted apart), two ways: every line (as `wc -l` counts them, blank lines and
  docstrings included) and the non-blank lines.
- Notebook plumbing: the share of the notebooks' code lines (non-blank, not only a comment) that are
  set-up rather than lesson: the set-up cell, the budget table (`BUDGET = …`, or any `{…}[MODE]`), `NB.resolve_mode`,
  `NB.banner`, `NB.record`, `P.style()` and printing the budget.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from export import generated  # noqa: E402

PLUMBING_CALLS = {"resolve_mode", "banner", "record", "style"}


def code_lines(src: str) -> set[int]:
    """1-based numbers of the lines that hold code (not blank, not only a comment)."""
    return {i for i, ln in enumerate(src.splitlines(), 1) if ln.strip() and not ln.strip().startswith("#")}


def _is_plumbing(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        names = {t.id for t in targets if isinstance(t, ast.Name)}
        value = stmt.value
        if names & {"BUDGET", "B"}:
            return True
        if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Dict) and ast.unparse(value.slice) == "MODE":
            return True                                   # a budget table under another name: {…}[MODE]
        return isinstance(value, ast.Call) and getattr(value.func, "attr", None) in PLUMBING_CALLS
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        func = stmt.value.func
        if getattr(func, "attr", None) in PLUMBING_CALLS:
            return True
        if getattr(func, "id", None) == "print" and "budget" in ast.unparse(stmt.value.args[:1]).lower():
            return True
    return False


def notebook_plumbing(path: Path) -> tuple[int, int]:
    """(plumbing lines, code lines) of one notebook."""
    plumbing = total = 0
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        lines = code_lines(src)
        total += len(lines)
        if "google.colab" in src:  # the set-up cell
            plumbing += len(lines)
            continue
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for stmt in tree.body:
            if _is_plumbing(stmt):
                plumbing += len(lines & set(range(stmt.lineno, stmt.end_lineno + 1)))
    return plumbing, total


def utils_lines(non_blank: bool = True) -> tuple[int, int]:
    """(hand-written, generated) lines of `utils/*.py`: the non-blank ones, or every line (`non_blank=False`)."""
    gen = set(generated())
    count = {True: 0, False: 0}
    for p in (ROOT / "utils").glob("*.py"):
        count[p in gen] += sum(1 for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip() or not non_blank)
    return count[False], count[True]


def main() -> None:
    (hand, gen), (hand_all, gen_all) = utils_lines(), utils_lines(non_blank=False)
    print(f"utils: {hand:,} hand-written lines (non-blank), {gen:,} generated from #@save cells "
          f"({', '.join(p.name for p in generated())})")
    print(f"utils, every line (wc -l): {hand_all:,} hand-written, {gen_all:,} generated")
    plumbing = total = 0
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        p, t = notebook_plumbing(nb)
        plumbing, total = plumbing + p, total + t
        print(f"  {nb.name}: {p}/{t} code lines are plumbing ({p / t:.0%})")
    print(f"notebooks: {plumbing:,} of {total:,} code lines are plumbing ({plumbing / total:.1%})")


if __name__ == "__main__":
    main()
