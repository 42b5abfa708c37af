"""How the façade's candidate set trades latency for the exact hybrid top-10 (issue 14), variant by variant.

One ANN façade is fitted on bench_scale.py's synthetic catalog (tiled Fashion-MNIST vectors, shop-like
metadata; see its docstring). The reference is the same fitted façade scanning *every* allowed row exactly
(``MAPPED_SCAN_LIMIT`` raised above n). Each variant changes how the candidates are found; queries are
interleaved variant by variant so the machine's load falls on all alike. Per variant and query kind:
CPU ms per query (process time, p50 / p99) and recall@10 of its top-10 against the reference's,
with bootstrap 95% intervals.

    python bench/bench_candidates.py --n 100000 --queries 60 --variants default per-side-256
    python bench/bench_candidates.py --n 1000000 --queries 20 --kinds item photo --variants default

Variants are ``+``-joined modifiers of today's path (``default``): ``per-side-N`` (N image and N metadata
candidates instead of querying.CANDIDATES_PER_SIDE). Measured with it and dropped (docs/index.md, "Candidates
and re-scoring"): champion lists for the metadata top-K, and a two-stage re-scoring by the PCA index's own
cosines (both now only in this repository's history).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_index import Tiles, base_vectors  # noqa: E402
from bench.bench_scale import _bootstrap, bench_filters, synthetic_catalog  # noqa: E402


@contextmanager
def variant(rec, name: str):
    """The façade set up as the variant ``name`` (modifiers joined by ``+``) for the duration."""
    import recommender.querying as querying

    saved = (querying.CANDIDATES_PER_SIDE, querying.MAPPED_SCAN_LIMIT)
    try:
        for part in name.split("+"):
            if part == "exact":
                querying.MAPPED_SCAN_LIMIT = len(rec.alive_) + 1
            elif part.startswith("per-side-"):
                querying.CANDIDATES_PER_SIDE = int(part.rsplit("-", 1)[1])
            elif part != "default":
                raise SystemExit(f"unknown variant {part!r}")
        yield
    finally:
        querying.CANDIDATES_PER_SIDE, querying.MAPPED_SCAN_LIMIT = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--variants", nargs="+", default=["default", "per-side-256"])
    ap.add_argument("--index", default="ivf_pca")
    ap.add_argument("--kinds", nargs="+", default=["item", "text", "photo"], choices=("item", "text", "photo"))
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/index_bench"))
    args = ap.parse_args()
    from recommender import HybridRecommender

    n = args.n
    catalog = synthetic_catalog(n)
    tiles = Tiles(base_vectors(args.cache_dir), n)
    vectors = np.empty((n, 2280), np.float16)
    for idx, x in tiles.chunks():
        vectors[idx] = x
    photo_q = tiles.queries(args.queries)
    t0 = time.perf_counter()
    rec = HybridRecommender(index=args.index, photo_colour_weight=0.0, cache_dir=args.cache_dir / f"fit-{n}")
    rec.fit_vectors(catalog, vectors)
    del vectors
    print(f"n={n} index={args.index}: fitted in {time.perf_counter() - t0:.1f} s", flush=True)
    items = catalog.items
    filters = bench_filters(items)
    rng = np.random.default_rng(11)
    queries = {
        "item": [{"item": str(items["id"].iat[i])} for i in rng.integers(0, n, args.queries)],
        "text": [{"text": " ".join(str(items["name"].iat[i]).split()[1:4])} for i in rng.integers(0, n, args.queries)],
        "photo": [{"image": i} for i in range(args.queries)],
    }
    queries = {kind: qs for kind, qs in queries.items() if kind in args.kinds}
    rec._embed_upload = lambda i: (photo_q[i], np.zeros(1, np.float32))  # the CNN is not what is measured
    names = ["exact", *args.variants]
    cpu = {(v, kind): [] for v in names for kind in queries}
    hits = {(v, kind): [] for v in args.variants for kind in queries}
    for kind, qs in queries.items():
        for f in filters.values():
            for j, q in enumerate(qs):
                got = {}
                # Rotated order: the variant right after the exact scan (which streams every row through the
                # caches) would otherwise always be the one that pays for the cold caches.
                for v in names[j % len(names):] + names[:j % len(names)]:
                    with variant(rec, v):
                        c0 = time.process_time()
                        got[v] = rec.recommend(k=10, filters=f, **q).ids
                        cpu[(v, kind)].append((time.process_time() - c0) * 1e3)
                for v in args.variants:
                    if got["exact"]:
                        hits[(v, kind)].append(len(set(got[v]) & set(got["exact"])) / len(got["exact"]))
        print(f"{kind}: done", flush=True)
    print(f"\n## n={n:,} {args.index}: {args.queries} queries x 3 filters ({', '.join(filters)}) per kind; "
          "CPU ms per query, recall@10 vs the exact scan")
    print("| variant | kind | CPU p50 / p99 ms | recall@10 [95% CI] (n) |")
    print("|---|---|---|---|")
    for v in names:
        for kind in queries:
            ms = cpu[(v, kind)]
            r = hits.get((v, kind))
            rtxt = "-" if r is None else f"{np.mean(r):.4f} [{_bootstrap(r)[0]:.4f}, {_bootstrap(r)[1]:.4f}] ({len(r)})"
            print(f"| {v} | {kind} | {np.percentile(ms, 50):.2f} / {np.percentile(ms, 99):.2f} | {rtxt} |")


if __name__ == "__main__":
    main()
