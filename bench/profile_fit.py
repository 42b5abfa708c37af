"""Where a warm fit of the façade goes (pyinstrument), at n products (issue 14).

Tiled Fashion-MNIST vectors and ``bench_scale``'s synthetic catalog; one fit fills the cache (index, vector
file), then the warm fit is profiled; the RSS split (anonymous / file-backed) is printed after each.

    python bench/profile_fit.py --n 100000
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_index import Tiles, base_vectors  # noqa: E402
from bench.bench_scale import rss_split_mb, synthetic_catalog  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--index", default="auto")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/index_bench"))
    args = ap.parse_args()
    from pyinstrument import Profiler

    from recommender import HybridRecommender

    catalog = synthetic_catalog(args.n)
    tiles = Tiles(base_vectors(args.cache_dir), args.n)
    vectors = np.empty((args.n, 2280), np.float32)
    for idx, x in tiles.chunks():
        vectors[idx] = x
    cache = args.cache_dir / f"profile-fit-{args.n}"

    def fit() -> HybridRecommender:
        return HybridRecommender(index=args.index, photo_colour_weight=0.0, cache_dir=cache).fit_vectors(
            catalog, vectors)

    t0 = time.perf_counter()
    rec = fit()
    print(f"first fit {time.perf_counter() - t0:.1f} s", rss_split_mb(), flush=True)
    del rec
    gc.collect()
    profiler = Profiler()
    profiler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    rec = fit()
    profiler.stop()
    print(f"warm fit {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU", rss_split_mb())
    print(profiler.output_text(unicode=False, color=False))
    print(f"serving {rec.image_index_.kind if rec.image_index_ is not None else 'exact'}", flush=True)


if __name__ == "__main__":
    main()
