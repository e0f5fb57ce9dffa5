"""How fast is `utils.anomaly.knn_distance`? Nearest-neighbour distances against scikit-learn brute force.

    python scripts/benchmark_knn.py                                  # 10,000 test × 60,000 train, 64-d
    python scripts/benchmark_knn.py --n-train 6000 --n-test 1000     # a smoke run, seconds

On seeded random 64-d float32 data, times (wall clock, best of --repeats after one warm-up run):
1. `knn_distance(train, test, k=1, metric="cosine")` (a blocked matrix product with a running max),
2. the same with metric="euclidean",
3. `NearestNeighbors(algorithm="brute", metric="cosine").fit(train).kneighbors(test, n_neighbors=1)`.
Both libraries use their default number of threads. The speed-up is scikit-learn's cosine time over
ours (for the euclidean row, too: the same brute-force search, another metric). Prints a table and
writes it as JSON (`--out`) with torch's thread count and the CPU model.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this repository's utils
import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils import anomaly  # noqa: E402

GOAL = 8.0  # the speed-up over scikit-learn brute force this benchmark checks for


def best_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(fastest wall-clock seconds of `repeats` calls after one untimed warm-up, the last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def data(n_train: int, n_test: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_train, dim, generator=g), torch.randn(n_test, dim, generator=g)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=60_000)
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where knn_distance runs (scikit-learn is CPU only)")
    ap.add_argument("--out", default="results/knn_speed.json")
    args = ap.parse_args(argv)
    from sklearn.neighbors import NearestNeighbors

    tr, te = data(args.n_train, args.n_test, args.dim, args.seed)
    ours = {m: best_seconds(lambda m=m: anomaly.knn_distance(tr, te, k=1, metric=m, device=args.device),
                            args.repeats) for m in ("cosine", "euclidean")}
    sk_s, (sk_d, _) = best_seconds(lambda: NearestNeighbors(algorithm="brute", metric="cosine")
                                   .fit(tr.numpy()).kneighbors(te.numpy(), n_neighbors=1), args.repeats)
    max_diff = float(np.abs(ours["cosine"][1].numpy() - sk_d[:, 0]).max())

    seconds = {"knn_distance k=1 cosine": ours["cosine"][0], "knn_distance k=1 euclidean": ours["euclidean"][0],
               "sklearn NearestNeighbors brute cosine": sk_s}
    ratio = {"cosine": sk_s / ours["cosine"][0], "euclidean": sk_s / ours["euclidean"][0]}
    print(f"{args.n_test:,} test × {args.n_train:,} train, {args.dim}-d float32, best of {args.repeats}; "
          f"torch threads {torch.get_num_threads()}, {cpu_model()}")
    print(f"{'method':<40}{'seconds':>9}{'sklearn / this':>16}")
    for name, s in seconds.items():
        print(f"{name:<40}{s:>9.3f}{sk_s / s:>15.1f}×")
    print(f"cosine distances vs sklearn: max |diff| {max_diff:.1e}; "
          f"goal ≥{GOAL:g}× {'met' if ratio['cosine'] >= GOAL else 'NOT met'}")

    report = {"n_train": args.n_train, "n_test": args.n_test, "dim": args.dim, "repeats": args.repeats,
              "seed": args.seed, "device": args.device, "train_chunk": anomaly.TRAIN_CHUNK,
              "seconds": {k: round(v, 4) for k, v in seconds.items()},
              "ratio_sklearn_over_ours": {k: round(v, 2) for k, v in ratio.items()},
              "goal_ratio": GOAL, "goal_met": ratio["cosine"] >= GOAL,
              "max_abs_diff_cosine_vs_sklearn": max_diff, "torch_threads": torch.get_num_threads(),
              "cpu": cpu_model(), "torch": torch.__version__}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
