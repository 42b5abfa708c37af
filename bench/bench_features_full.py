"""Fashion-MNIST full 10k test set through the default pipeline: ``features="auto"`` against a fixed view.

The suite's Fashion-MNIST protocol (image-only leave-one-out P@10 by class, each image against the other
9,999) with only that protocol, one row per ``features`` setting, paired over the same 10,000 queries::

    python bench/bench_features_full.py [--rows gap,auto] [--cache .cache/suite] [--split test]

Rows share the cache (``--cache``), so ``auto`` reuses the vectors a ``gap`` or ``grid`` row made.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from recommender.evaluation.suite import compare, run_suite, summary_markdown  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="gap,auto", help="comma-separated features settings: gap, grid, auto")
    ap.add_argument("--cache", type=Path, default=Path(".cache/suite"))
    ap.add_argument("--fashion", choices=["slice", "full"], default="full")
    args = ap.parse_args()
    first = None
    for features in args.rows.split(","):
        t0 = time.perf_counter()
        suite = run_suite({"features": features}, demo=None, grocery_root=None, fashion=args.fashion,
                          cache_root=args.cache, log=lambda m: print(m, file=sys.stderr))
        result = next(iter(suite.results.values()))
        print(summary_markdown(suite, title=f"features={features} ({time.perf_counter() - t0:.0f} s)"))
        print(f"features note: {result.get('features')}")
        for r in suite.summary_rows():
            print(f"seconds: {r['seconds']}")
        if first is None:
            first = suite
        else:
            for d in compare(suite, first):
                print(f"{features} - {args.rows.split(',')[0]}: {d}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
