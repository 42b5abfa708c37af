"""What one re-score gather costs on this machine, by how much memory it reaches into.

An item query at 1M products gathers ~768 random rows (2,280 bfloat16 values, 4,560 bytes each) of the vector
file. How long that takes depends on the machine as much as on the code: on the 2-core sandbox this project is
measured on, random rows of a freshly written array of a few GB cost 30-150 us each for the first gathers and less
with every gather after (different rows each time), while the same code over 0.25-1 GB takes ~1 ms per gather.
Run this before comparing 1M latencies across machines or days: it separates the machine from the code.

    python bench/bench_memory_access.py [--sizes-gb 0.25 1 2 4.5] [--gathers 8] [--rows 768]
    python bench/bench_memory_access.py --file /tmp/x.npy --sizes-gb 4.5 --gathers 40   # a file: map vs pread

Each size: an anonymous array written once (every page touched), then ``--gathers`` gathers of ``--rows`` random
rows (new rows each time, sorted as the façade's are), converted to float32 as a query does. Printed: the first
gather, the median of the rest with the min-max range, and the median after an idle pause.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROW_VALUES = 2280  # the façade's image vector: Lite0 head 1,280 + ImageNet semantic 1,000


def gather_ms(array: np.ndarray, rng: np.random.Generator, rows: int) -> float:
    picked = np.sort(rng.choice(len(array), rows, replace=False))
    start = time.perf_counter()
    array[picked].astype(np.float32)
    return (time.perf_counter() - start) * 1e3


def rss_file_mb() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["RssFile"].split()[0]) // 1024


def pread_rows(fd: int, offset: int, picked: np.ndarray) -> np.ndarray:
    row_bytes = ROW_VALUES * 2
    out = np.empty((len(picked), ROW_VALUES), np.uint16)
    for j, r in enumerate(picked.tolist()):
        out[j] = np.frombuffer(os.pread(fd, row_bytes, offset + r * row_bytes), np.uint16)
    return out


def file_modes(path: Path, gb: float, gathers: int, rows: int, rng: np.random.Generator) -> None:
    """The façade's case: a vector file written with write(), then gathers through a read-only map (as queries
    do) against the same number of rows read with pread, alternating, new random rows each time."""
    n = int(gb * 2**30 / (ROW_VALUES * 2))
    block = np.ones((8192, ROW_VALUES), np.uint16)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<u2", "fortran_order": False, "shape": (n, ROW_VALUES)})
        offset = f.tell()
        for s in range(0, n, len(block)):
            f.write(block[:min(len(block), n - s)])
        f.flush()
        os.fsync(f.fileno())
    mapped = np.load(path, mmap_mode="r")
    fd = os.open(path, os.O_RDONLY)
    times: dict[str, list[float]] = {"map": [], "pread": []}
    rss0 = rss_file_mb()
    try:
        for g in range(gathers):
            for mode in ("map", "pread") if g % 2 == 0 else ("pread", "map"):
                picked = np.sort(rng.choice(n, rows, replace=False))
                t = time.perf_counter()
                got = mapped[picked] if mode == "map" else pread_rows(fd, offset, picked)
                got.view(np.uint16).astype(np.float32)
                times[mode].append((time.perf_counter() - t) * 1e3)
    finally:
        os.close(fd)
    rss = rss_file_mb() - rss0
    for mode, ms in times.items():
        print(f"| {gb:g} GB file | {mode} | {ms[0]:.1f} | {np.median(ms[1:]):.2f} (n={len(ms) - 1}) "
              f"[{np.percentile(ms[1:], 10):.2f}, {np.percentile(ms[1:], 90):.2f}] | "
              f"{rss if mode == 'map' else 0} |", flush=True)
    del mapped
    path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes-gb", type=float, nargs="+", default=[0.25, 1.0, 2.0, 4.5])
    ap.add_argument("--gathers", type=int, default=8)
    ap.add_argument("--rows", type=int, default=768)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of pause before the last round")
    ap.add_argument("--file", type=Path, help="measure a written file (map vs pread) at this path instead")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    if args.file:
        print(f"{args.rows} random rows per gather; median [p10, p90] after the first; RssFile growth of the map")
        print("| size | read | first ms | median ms | RssFile MB |\n|---|---|---|---|---|")
        for gb in args.sizes_gb:
            file_modes(args.file, gb, args.gathers, args.rows, rng)
        return
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
