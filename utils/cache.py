"""One way to key what is cached or recorded: a hash of everything that produced it, the code by what it *does*
(an edited comment or docstring keeps the key; utils/README.md)."""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def code_text(source: str) -> str:
    """What a module's source *does*: its syntax tree without docstrings, comments or layout, as text.
    Two sources with the same `code_text` behave the same, so editing prose never invalidates results."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def source_hash(names: tuple[str, ...]) -> str:
    """Hash of what the modules `names` do (`code_text`): a bare file name ("train.py") is a `utils` module,
    a path with a folder ("app/ood.py") is relative to the repository."""
    h = hashlib.sha1()
    for name in names:
        path = HERE / name if "/" not in name else HERE.parent / name
        h.update(name.encode() + b"\0" + code_text(path.read_text(encoding="utf-8")).encode())
    return h.hexdigest()[:12]


def key(*parts, code: tuple[str, ...] = (), n: int = 16) -> str:
    """A hex digest (`n` characters) of `parts` (as JSON with sorted keys; other objects by `str`) and of the
    code of the modules named in `code` (as `source_hash`)."""
    blob = json.dumps([list(parts), source_hash(tuple(code)) if code else None], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:n]
