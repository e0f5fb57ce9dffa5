"""Train the same network with several loss heads over several seeds; write a mean ± std table.

Example (the 15-epoch, 3-seed table that notebook 02 reads, `make table`):
    python scripts/compare_heads.py --dataset mnist --heads softmax l2softmax --seeds 0 1 2 --epochs 15
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this repository's utils
from utils import data, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist", help=f"one of {data.NAMES} or an image-folder path")
    ap.add_argument("--heads", nargs="+", default=["softmax", "l2softmax"])
    ap.add_argument("--hparams", default="{}", help='JSON per head, e.g. \'{"l2softmax": {"alpha": 16}}\'')
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--augment", type=int, default=2, help="max random shift in pixels")
    ap.add_argument("--out", default="results", help="folder for the CSV and the markdown table")
    args = ap.parse_args()

    d = data.load(args.dataset)
    print(d, flush=True)
    hparams = json.loads(args.hparams)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(args.dataset).name}-{'-'.join(args.heads)}-e{args.epochs}"
    heads = {h: (h, hparams.get(h, {})) for h in args.heads}
    df = train.compare(d, heads, args.seeds, epochs=args.epochs, bs=args.bs, augment=args.augment)
    print(df.to_string(), flush=True)
    df.to_csv(out / f"{stem}.csv", index=False)
    summary = train.summarize(df)
    lines = [f"{d.name}, {args.epochs} epochs, batch {args.bs}, shift augmentation ±{args.augment} px, "
             f"seeds {args.seeds}, torch {train.torch.__version__} on {train.default_device()}", "",
             "| head | test accuracy (mean ± std) | seeds |", "|---|---|---|"]
    for head, s in summary.iterrows():
        lines.append(f"| {head} | {100 * s['mean']:.2f} % ± {100 * s['std']:.2f} | {int(s['count'])} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
