"""What one re-score gather costs on this machine, by how much memory it reaches into.

An item query at 1M products gathers ~768 random rows (2,280 bfloat16 values, 4,560 bytes each) of the vector
file. How long that takes depends on the machine as much as on the code: on the 2-core sandbox this project is
measured on, random rows of a freshly written array of a few GB cost 30-150 us each for the first gathers and less
with every gather after (different rows each time), while the same code over 0.25-1 GB takes ~1 ms per gather.
Run this before comparing 1M latencies across machines or days: it separates the machine from the code.

    python bench/bench_memory_access.py [--sizes-gb 0.25 1 2 4.5] [--gathers 8] [--rows 768]

Each size: an anonymous array written once (every page touched), then ``--gathers`` gathers of ``--rows`` random
rows (new rows each time, sorted as the façade's are), converted to float32 as a query does. Printed: the first
gather, the median of the rest with the min-max range, and the median after an idle pause.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

ROW_VALUES = 2280  # the façade's image vector: Lite0 head 1,280 + ImageNet semantic 1,000


def gather_ms(array: np.ndarray, rng: np.random.Generator, rows: int) -> float:
    picked = np.sort(rng.choice(len(array), rows, replace=False))
    start = time.perf_counter()
    array[picked].astype(np.float32)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes-gb", type=float, nargs="+", default=[0.25, 1.0, 2.0, 4.5])
    ap.add_argument("--gathers", type=int, default=8)
    ap.add_argument("--rows", type=int, default=768)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of pause before the last round")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{args.rows} random rows of {ROW_VALUES} uint16 ({ROW_VALUES * 2} B) per gather, as float32")
    print("| array GB | first gather ms | median of next (n) [min, max] | median after idle ms |")
    print("|---|---|---|---|")
    for gb in args.sizes_gb:
        n = int(gb * 2**30 / (ROW_VALUES * 2))
        array = np.ones((n, ROW_VALUES), np.uint16)  # written: every page is touched once
        first = gather_ms(array, rng, args.rows)
        rest = [gather_ms(array, rng, args.rows) for _ in range(args.gathers - 1)]
        time.sleep(args.idle)
        after = [gather_ms(array, rng, args.rows) for _ in range(3)]
        print(f"| {gb:g} | {first:.1f} | {np.median(rest):.1f} (n={len(rest)}) [{min(rest):.1f}, {max(rest):.1f}] "
              f"| {np.median(after):.1f} |", flush=True)
        del array


if __name__ == "__main__":
    main()
