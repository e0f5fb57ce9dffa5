"""How the demo's recipe exposes handwritten characters, chosen on validation data only.

    python scripts/demo_recipe_choice.py                     # every variant below, about 3 minutes each on 2 cores
    python scripts/demo_recipe_choice.py "turns, 15k drawn" "no characters"    # only these

Each variant trains the default recipe's recognizer (`app.recognizer.recipe_data`: MNIST but 5,000 validation
digits, low-resolution and pen-drawn digits, the drawn families, Fashion-MNIST, photo crops) plus, as outlier
exposure, the characters of the *exposed* Omniglot alphabets (`CHARACTER_SPLIT`) in some form, with the energy
score and the threshold that keeps 99.5 % of the validation digits. It is judged on what the choice may see:

- `choice_rejected`: the *choice* alphabets (Early Aramaic, Tagalog; every drawing) answered "not a digit";
- `valid_drawn_kept`: 1,000 pen-drawn digits (`app.ood.drawn_digits`, seed 303: neither the training seed 0 nor
  notebook 12's report seed 202) kept;
- `valid_<family>_rejected`: 500 drawings of each drawn family (seed 303; notebook 12 reports on seed 201).

The *report* alphabets (Greek, Latin) are not read here: notebook 12 measures them once, for the recipe chosen.
Appends one JSON line per variant to `results/demo_recipe_choice.jsonl`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> (pen-drawn training digits, the characters' turns (×90°: all four, or upright), their mirror images too,
# epochs, λ)
VARIANTS = {
    "no characters": dict(n_drawn=5000, turns=None),
    "upright": dict(n_drawn=5000, turns=(0,)),
    "turns": dict(n_drawn=5000, turns=(0, 1, 2, 3)),
    "upright, 15k drawn": dict(n_drawn=15000, turns=(0,)),
    "turns, 15k drawn": dict(n_drawn=15000, turns=(0, 1, 2, 3)),
    "turns+flips, 15k drawn": dict(n_drawn=15000, turns=(0, 1, 2, 3), flip=True),
    "turns, 15k drawn, 3 epochs": dict(n_drawn=15000, turns=(0, 1, 2, 3), epochs=3),
    "turns+flips, 15k drawn, λ=1": dict(n_drawn=15000, turns=(0, 1, 2, 3), flip=True, lam=1.0),
    "turns, 15k drawn, λ=1": dict(n_drawn=15000, turns=(0, 1, 2, 3), lam=1.0),
    "turns, 15k drawn, 3 epochs, λ=1": dict(n_drawn=15000, turns=(0, 1, 2, 3), epochs=3, lam=1.0),
    "turns+flips, 15k drawn, 3 epochs, λ=1": dict(n_drawn=15000, turns=(0, 1, 2, 3), flip=True, epochs=3, lam=1.0),
}


def run(name: str, cfg: dict) -> dict:
    import torch

    from app import ood, recognizer as demo
    from utils import data as D

    t0 = time.perf_counter()
    rd = demo.recipe_data(0, n_drawn=cfg["n_drawn"], with_characters=False)
    omniglot = D.load("omniglot")
    chars = torch.zeros(0, 1, demo.SIDE, demo.SIDE, dtype=torch.uint8)
    if cfg["turns"] is not None:   # the recipe's own characters: turned (blocks of 0°, 90°, 180°, 270°), mirrored
        chars = demo.turned_characters(demo.characters(omniglot, "exposed")[0], demo.RECIPE["n_outliers_each"], 0,
                                       mirrored=cfg.get("flip", False))
        if cfg["turns"] == (0,):     # upright only: the first block
            chars = chars[:len(chars) // 4]
    r = demo.Recognizer.build(rd.digits, torch.cat([rd.outliers, chars]), score="energy", valid=rd.valid,
                              keep=demo.RECIPE["keep"], epochs=cfg.get("epochs", 2), lam=cfg.get("lam", 0.5), seed=0)
    row = {"variant": name, **cfg, "seconds": round(time.perf_counter() - t0),
           "n_characters": len(chars)}
    row["choice_rejected"] = float((~r.accepts(demo.batch_to_mnist(demo.characters(omniglot, "choice")[0])[0])).float().mean())
    row["valid_drawn_kept"] = float(r.accepts(demo.batch_to_mnist(ood.drawn_digits(1000, 303)[0])[0]).float().mean())
    for fam in ("scribbles", "strokes", "shapes", "specks"):
        row[f"valid_{fam}_rejected"] = float((~r.accepts(demo.batch_to_mnist(ood.DRAWN[fam](500, 303))[0])).float().mean())
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", help="variant names (default: all)")
    args = ap.parse_args(argv)
    names = args.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    out = ROOT / "results" / "demo_recipe_choice.jsonl"
    for name in names:
        row = run(name, VARIANTS[name])
        print(json.dumps(row, ensure_ascii=False), flush=True)
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
