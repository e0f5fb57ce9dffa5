"""Exact vs approximate nearest-neighbour search on a million embeddings: the table notebook 14 reads.

    python scripts/faiss_benchmark.py                      # 1,000,000 vectors -> results/faiss_full.csv
    python scripts/faiss_benchmark.py --n 20000 --out /tmp/faiss_small.csv   # a quick check

The vectors: a small CNN trained on MNIST (cached like every trained network), then `--n` embeddings
of randomly distorted MNIST training images; the queries are MNIST test images (`notebooks.retrieval.search.mnist_vectors`).
Compared (`notebooks.retrieval.search.benchmark`): FAISS IndexFlatIP (exact, the ground truth), the collection's torch
brute force, scikit-learn's NearestNeighbors (brute force and ball tree, on `--sklearn-queries` queries),
FAISS IVF-Flat, IVF-PQ (also with exact re-ranking) at several nprobe, and FAISS HNSW at several
efSearch: recall@10, queries per second, build seconds and memory. Needs MNIST (`DML_DATA`, or the
download) and faiss-cpu. On a 2-core CPU the 1,000,000-vector run took 327 s with its network already
trained (208 s of it embedding the distorted images; the indexes, searches and brute force the rest);
training the network first adds its two MNIST epochs. It needs a few GB of memory.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from notebooks.retrieval import search

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the base (default 1,000,000)")
    ap.add_argument("--queries", type=int, default=1000, help="MNIST test images used as queries")
    ap.add_argument("--sklearn-queries", type=int, default=200, help="queries for the (slow) scikit-learn rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / search.FULL_CSV), help="CSV to write")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    table = search.full_benchmark(args.n, args.queries, args.sklearn_queries, args.seed, log=print)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.round(6).to_csv(out, index=False)
    shown = out.relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    print(table[["method", "setting", "build_s", "memory_mb", "queries_per_s", "recall_at_10"]].to_string(index=False))
    print(f"wrote {shown} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
