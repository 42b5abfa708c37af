"""The reduced inverted file (``ivf_pca``) on its own at 100k / 1M: build time, memory, latency, recall (issue 14).

Vectors: the float16 file a ``bench_scale.py`` fit left in its cache (``--vectors``: the same tiled
Fashion-MNIST vectors the façade served), or ``bench_index.Tiles`` made afresh (``--n``). Queries: fresh noisy
copies of the base images (``Tiles.queries``), one at a time, one BLAS thread. Filters: random 10% and 1%
masks (uncorrelated with the query: the hard case). Recall@10 of the index's top-512 candidates re-scored
with the full (float16) vectors, against the exact full-dimensional top-10 — what the façade does with them.

    python bench/bench_ivf.py --vectors /tmp/index_bench/fit-1000000/vectors/vectors-f16-<hash>.npy --nprobe 8 16 32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_index import Tiles, base_vectors  # noqa: E402
from bench.bench_scale import rss_split_mb  # noqa: E402

K = 10
CANDIDATES = 512


def exact_top(x: np.ndarray, q: np.ndarray, allow: np.ndarray | None) -> np.ndarray:
    """Exact full-dimensional top-10 of each query among the allowed rows (blockwise over float16 rows)."""
    scores = np.empty((len(q), len(x)), np.float32)
    for s in range(0, len(x), 65_536):
        scores[:, s:s + 65_536] = q @ x[s:s + 65_536].astype(np.float32).T
    if allow is not None:
        scores[:, ~allow] = -np.inf
    return np.argpartition(-scores, K, axis=1)[:, :K]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=Path, help="a float16 .npy (memory-mapped), e.g. from a bench_scale fit")
    ap.add_argument("--n", type=int, default=100_000, help="without --vectors: tile this many")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/index_bench"))
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    from recommender.index.factory import make_index

    base = base_vectors(args.cache_dir)
    if args.vectors:
        x = np.load(args.vectors, mmap_mode="r")
    else:
        tiles = Tiles(base, args.n)
        x = np.empty((args.n, base.shape[1]), np.float16)
        for idx, chunk in tiles.chunks():
            x[idx] = chunk
    n = len(x)
    q = Tiles(base, n).queries(args.queries)
    rng = np.random.default_rng(5)
    masks = {"none": None, "10%": rng.random(n) < 0.10, "1%": rng.random(n) < 0.01}
    before = rss_split_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    index = make_index("ivf_pca", x.shape[1], n)
    index.add(np.arange(n), x)
    build = time.perf_counter() - t0, time.process_time() - c0
    grown = rss_split_mb()["RssAnon"] - before["RssAnon"]
    print(f"## ivf_pca n={n:,}: built in {build[0]:.1f} s wall / {build[1]:.1f} s CPU, RssAnon +{grown:.0f} MB "
          f"({grown * 2**20 / n:.0f} B/vector), nlist {index.inner_._ivf.nlist}; {len(q)} single queries", flush=True)
    truth = {name: exact_top(x, q, m) for name, m in masks.items()}
    print("| nprobe | filter | recall@10 (top-512 re-scored) | p50 / p99 ms |\n|---|---|---|---|")
    for nprobe in args.nprobe:
        index.inner_.nprobe = nprobe
        for name, mask in masks.items():
            ms, hits = [], []
            with threadpool_limits(1):
                for i, qi in enumerate(q):
                    t = time.perf_counter()
                    _, cand = index.search(qi[None], CANDIDATES, mask)
                    ms.append((time.perf_counter() - t) * 1e3)
                    cand = cand[0][cand[0] >= 0]
                    cand = np.sort(cand)  # rows read in file order
                    best = cand[np.argsort(-(x[cand].astype(np.float32) @ qi))[:K]]
                    hits.append(len(set(best.tolist()) & set(truth[name][i].tolist())) / K)
            print(f"| {nprobe} | {name} | {np.mean(hits):.3f} | {np.percentile(ms, 50):6.2f} / "
                  f"{np.percentile(ms, 99):6.2f} |", flush=True)


if __name__ == "__main__":
    main()
