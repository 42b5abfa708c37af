"""Latency of the library calls the app, CLI and API make: the demo catalog, or a generated large one (2-core CPU).

    python bench/bench_queries.py [--repeat 20]            # the demo catalog
    python bench/bench_queries.py --n 100000 --queries 100 # bench_scale's synthetic catalog, in-process

Demo: package import, fit with a warm cache (no TensorFlow), first photo query (loads the model),
and the median of repeated item / photo / text queries, with and without filters and diversity.

``--n``: the synthetic catalog and tiled Fashion-MNIST vectors of ``bench/bench_scale.py`` (fitted
with ``fit_vectors``: no images, the CNN embedding of a photo query is left out, colour off), then per
query kind the CPU time (``time.process_time``: the machine is shared, wall time is printed beside
it) p50 / p99 over ``--queries`` different queries, and recall@10 of the default (candidate-set) path
against the exact hybrid ranking of every allowed row, same queries. ``PYTHONPATH`` chooses the tree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def demo(repeat: int) -> None:
    t, _ = timed(lambda: __import__("recommender.recommender"))
    print(f"import recommender.recommender      {t * 1000:8.1f} ms")
    from recommender import Filters, HybridRecommender, load_catalog

    catalog = load_catalog()
    HybridRecommender().fit(catalog)  # make sure the cache is warm
    t, rec = timed(lambda: HybridRecommender().fit(catalog))
    print(f"fit, warm cache ({len(catalog)} products)   {t * 1000:8.1f} ms   tensorflow loaded: "
          f"{'tensorflow' in sys.modules}")
    photo = catalog.image_path(catalog.position("tennis-ball"))
    t, _ = timed(lambda: rec.recommend(image=photo, k=12))
    print(f"first photo query (loads the model) {t * 1000:8.1f} ms")
    cases = {
        "item query": lambda: rec.recommend(item="laptop", k=12),
        "item query + filters": lambda: rec.recommend(item="laptop", k=12, filters=Filters(category=["Electronics"],
                                                                                           price_max=500)),
        "item query + diversity 0.5": lambda: rec.recommend(item="laptop", k=12, diversity=0.5),
        "photo query": lambda: rec.recommend(image=photo, k=12),
        "photo query + text": lambda: rec.recommend(image=photo, text="yellow ball", k=12),
        "text query": lambda: rec.recommend(text="black running shoe", k=12),
    }
    for name, fn in cases.items():
        fn()
        c = time.process_time()
        t, _ = timed(fn, repeat)
        cpu = (time.process_time() - c) / repeat
        print(f"{name:<36}{t * 1000:8.1f} ms wall (median of {repeat}), {cpu * 1000:6.2f} ms CPU (mean)")


def generated(n: int, n_queries: int, cache_dir: Path, candidates: int | None = None, writes: int = 8) -> None:
    import recommender.querying
    from bench.bench_index import Tiles, base_vectors
    from bench.bench_scale import synthetic_catalog
    from recommender import Filters, HybridRecommender

    if candidates:
        recommender.querying.CANDIDATES_PER_SIDE = candidates
    print(f"candidates per side: {recommender.querying.CANDIDATES_PER_SIDE}", flush=True)

    catalog = synthetic_catalog(n)
    tiles = Tiles(base_vectors(cache_dir), n)
    vectors = np.empty((n, tiles.base.shape[1]), np.float32)
    for idx, x in tiles.chunks():
        vectors[idx] = x
    t, c = time.perf_counter(), time.process_time()
    rec = HybridRecommender(photo_colour_weight=0.0).fit_vectors(catalog, vectors)
    print(f"n={n}: fit {time.perf_counter() - t:.0f} s wall, {time.process_time() - c:.0f} s CPU, "
          f"index {type(rec.image_index_).__name__}", flush=True)
    del vectors
    photos = tiles.queries(n_queries)
    items = catalog.items
    rng = np.random.default_rng(7)
    ids = [str(items["id"].iat[i]) for i in rng.integers(0, n, n_queries)]
    texts = [" ".join(str(items["name"].iat[i]).split()[1:4]) for i in rng.integers(0, n, n_queries)]
    share = items["category"].value_counts(normalize=True)
    cat10 = share.index[np.argmin(np.abs(share.to_numpy() - 0.10))]

    def run(kind: str, filters, diversity: float) -> tuple[list[list[str]], list[float], list[float]]:
        got, cpu, wall = [], [], []
        for i in range(n_queries):
            if kind == "photo":
                rec._embed_upload = lambda _img, v=photos[i]: (v, np.zeros(1, np.float32))  # the CNN is not timed
            kw = {"item": {"item": ids[i]}, "text": {"text": texts[i]}, "photo": {"image": "x"}}[kind]
            t, c = time.perf_counter(), time.process_time()
            res = rec.recommend(k=10, filters=filters, diversity=diversity, **kw)
            cpu.append((time.process_time() - c) * 1e3)
            wall.append((time.perf_counter() - t) * 1e3)
            got.append(res.ids)
        return got, cpu, wall

    cases = [("item", None, 0.0), ("item", Filters(category=cat10), 0.0), ("item", None, 0.3), ("text", None, 0.0),
             ("photo", None, 0.0)]
    index = rec.image_index_
    rec.image_index_ = None  # the exact hybrid ranking of every allowed row: the anchor
    truth = [run(*case)[0] for case in cases]
    rec.image_index_ = index
    for (kind, filters, diversity), exact in zip(cases, truth, strict=True):
        got, cpu, wall = run(kind, filters, diversity)
        recall = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, exact, strict=True) if b])
        label = kind + (f" + {cat10} ({share[cat10]:.0%})" if filters else "") + (
            f" + diversity {diversity:g}" if diversity else "")
        print(f"{label:<32} CPU p50 {np.percentile(cpu, 50):6.2f} ms p99 {np.percentile(cpu, 99):6.2f} ms | wall p50 "
              f"{np.percentile(wall, 50):6.2f} ms p99 {np.percentile(wall, 99):6.2f} ms | recall@10 vs exact "
              f"{recall:.3f} (n={n_queries})", flush=True)
    cpu, wall = [], []
    for i in range(writes):  # one metadata change each: the live-update path without an image embed
        t, c = time.perf_counter(), time.process_time()
        rec.patch(ids[i], {"name": f"Renamed product {i}", "price": 9.5})
        cpu.append((time.process_time() - c) * 1e3)
        wall.append((time.perf_counter() - t) * 1e3)
    if writes:
        print(f"patch (one product)               CPU p50 {np.percentile(cpu, 50):6.1f} ms max {max(cpu):6.1f} ms | "
              f"wall p50 {np.percentile(wall, 50):6.1f} ms (n={writes}; the first write after a fit grows the "
              "vector buffer)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--n", type=int, default=0, help="generated catalog size (0 = the demo catalog)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=None,
                    help="image and metadata candidates per side (default: recommender.querying's)")
    ap.add_argument("--writes", type=int, default=8, help="patches timed after the queries")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/index_bench"),
                    help="where bench_index caches the Fashion-MNIST base vectors")
    args = ap.parse_args()
    if args.n:
        generated(args.n, args.queries, args.cache_dir, args.candidates, args.writes)
    else:
        demo(args.repeat)


if __name__ == "__main__":
    main()
