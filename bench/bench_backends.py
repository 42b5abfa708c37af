"""Scale-out benchmark: the index backends on one 100k catalog, and the Ray build against the local one.

    python bench/bench_backends.py search [--n 100000] [--queries 200] [--cache-dir /tmp/index_bench]
    python bench/bench_backends.py facade [--n 100000] [--queries 100] [--backends exact,milvus,hnsw]
    python bench/bench_backends.py build  [--catalog data/demo/catalog.csv] [--actors 2]

``search``: exact (``ExactIndex``), in-process ANN (``HNSWIndex``, hnswlib, the factory's defaults) and
milvus-lite (``MilvusIndex``, FLAT: the only index type milvus-lite builds) on *the same* catalog:
bench_index.py's vectors (the 10k Fashion-MNIST test images as the project's default 2280-d image
vectors, tiled to ``--n`` with noisy copies; queries are fresh noisy copies). Each product's
category is its image's Fashion-MNIST class, stored as a Milvus scalar field. Three conditions:
no filter; a category filter (10%, correlated with the query); a random 1% allow-mask (Milvus: an
``id in [...]`` expression). Per backend: load time, single-query latency p50 / p99 (one query at a
time, the serving pattern) with a bootstrap 95% interval on p50, and recall@10 against the exact
top-10 with a bootstrap 95% interval; ``n`` = number of queries.

``facade``: ``HybridRecommender.recommend`` end to end (candidates from the backend, exact hybrid
re-scoring) over a synthetic catalog with those image vectors (name, category = class, log-normal price):
fit time, per-query p50 / p99, and the share of each top-10 equal to the exact backend's.

``build``: the demo catalog embedded from an empty cache by the local build and by the Ray build
(local Ray, ``--actors`` model replicas), one after the other in one run, then re-run on the warm cache.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

K = 10


def boot_ci(values: np.ndarray, stat=np.mean, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = [stat(values[rng.integers(0, len(values), len(values))]) for _ in range(n_boot)]
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum())
                     for f, t in zip(found, truth, strict=True)])


def timed_queries(search, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, ms = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids.append(search(q[None, :])[0])
        ms.append((time.perf_counter() - t0) * 1e3)
    return np.array(ids), np.array(ms)


def cmd_search(args) -> None:
    from bench_index import Tiles, base_vectors

    from recommender.evaluation.fashion_mnist import load_fashion_mnist
    from recommender.index.exact import ExactIndex
    from recommender.index.factory import make_index
    from recommender.index.milvus import MilvusIndex
    from recommender.index.milvus_expr import filters_expression
    from recommender.ranking.hybrid import Filters

    base = base_vectors(args.cache_dir)
    _, labels = load_fashion_mnist("test")
    tiles = Tiles(base, args.n)
    x = np.concatenate([c for _, c in tiles.chunks()])
    category = labels[np.arange(args.n) % len(base)].astype(str)
    rng = np.random.default_rng(7)
    pick = rng.integers(0, len(base), args.queries)
    q = (base[pick] + max(tiles.sigma, 0.02) * rng.standard_normal(base[pick].shape)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    qcat = labels[pick].astype(str)  # a shopper filtering by the category of what they look at
    random_1pct = rng.random(args.n) < 0.01
    print(f"catalog: {args.n} x {x.shape[1]}-d (10k Fashion-MNIST Lite0 vectors tiled), {args.queries} queries, "
          f"k={K}; category filter = the query's class (~10%), random allow-mask = 1%", flush=True)

    exact = ExactIndex(x.shape[1])
    exact.add(np.arange(args.n), x)
    truth = {
        "none": np.concatenate([exact.search(q[i:i + 50], K)[1] for i in range(0, len(q), 50)]),
        "category": np.stack([exact.search(q[i:i + 1], K, category == qcat[i])[1][0] for i in range(len(q))]),
        "random 1%": np.concatenate([exact.search(q[i:i + 50], K, random_1pct)[1] for i in range(0, len(q), 50)]),
    }
    rows = []

    def run(name: str, load_s: float, searches: dict) -> None:
        for cond, search in searches.items():
            ids, ms = timed_queries(search, q) if cond != "category" else _per_query(search, q)
            rec = per_query_recall(ids, truth[cond])
            p50 = np.percentile(ms, 50)
            lo, hi = boot_ci(ms, lambda v: np.percentile(v, 50))
            rlo, rhi = boot_ci(rec)
            rows.append((name, cond, load_s, p50, lo, hi, np.percentile(ms, 99), rec.mean(), rlo, rhi))
            print(f"{name:12s} {cond:10s} load {load_s:7.1f} s  p50 {p50:7.2f} ms [{lo:.2f}, {hi:.2f}]  "
                  f"p99 {np.percentile(ms, 99):7.2f} ms  recall@10 {rec.mean():.3f} [{rlo:.3f}, {rhi:.3f}]  "
                  f"n={len(q)}", flush=True)

    def _per_query(search, queries):
        ids, ms = [], []
        for i, row in enumerate(queries):
            t0 = time.perf_counter()
            ids.append(search(row[None, :], i)[0])
            ms.append((time.perf_counter() - t0) * 1e3)
        return np.array(ids), np.array(ms)

    run("exact", 0.0, {
        "none": lambda v: exact.search(v, K)[1],
        "category": lambda v, i: exact.search(v, K, category == qcat[i])[1],
        "random 1%": lambda v: exact.search(v, K, random_1pct)[1],
    })

    t0 = time.perf_counter()
    hnsw = make_index("hnsw", x.shape[1], args.n)
    hnsw.add(np.arange(args.n), x)
    load = time.perf_counter() - t0
    run("hnsw", load, {
        "none": lambda v: hnsw.search(v, K)[1],
        "category": lambda v, i: hnsw.search(v, K, category == qcat[i])[1],
        "random 1%": lambda v: hnsw.search(v, K, random_1pct)[1],
    })

    folder = Path(tempfile.mkdtemp(prefix="bench_milvus_"))
    try:
        import pandas as pd

        milvus = MilvusIndex(x.shape[1], uri=folder / "bench.db", collection="bench")
        t0 = time.perf_counter()
        step = 10_000
        for s in range(0, args.n, step):
            ids = np.arange(s, min(s + step, args.n))
            milvus.add(ids, x[ids], pd.DataFrame({"category": category[ids]}))
        load = time.perf_counter() - t0
        assert milvus.ntotal == args.n
        exprs = {c: filters_expression(Filters(category=[c])) for c in np.unique(qcat)}
        run("milvus-lite", load, {
            "none": lambda v: milvus.search(v, K)[1],
            "category": lambda v, i: milvus.search_filtered(v, K, exprs[qcat[i]])[1],
            "random 1%": lambda v: milvus.search(v, K, random_1pct)[1],
        })
        milvus.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print("\n| backend | filter | load (s) | p50 ms [95% CI] | p99 ms | recall@10 [95% CI] |")
    print("|---|---|---:|---:|---:|---:|")
    for name, cond, load_s, p50, lo, hi, p99, rec, rlo, rhi in rows:
        print(f"| {name} | {cond} | {load_s:.1f} | {p50:.2f} [{lo:.2f}, {hi:.2f}] | {p99:.2f} | "
              f"{rec:.3f} [{rlo:.3f}, {rhi:.3f}] |")


def cmd_facade(args) -> None:
    """The façade end to end: ``HybridRecommender.recommend`` on the exact backend and on milvus-lite (and
    optionally HNSW) over one synthetic catalog with the 100k image vectors of ``search``."""
    import pandas as pd
    from bench_index import Tiles, base_vectors

    from recommender import HybridRecommender
    from recommender.catalog.loader import catalog_from_frame
    from recommender.evaluation.fashion_mnist import load_fashion_mnist
    from recommender.ranking.hybrid import Filters

    base = base_vectors(args.cache_dir)
    _, labels = load_fashion_mnist("test")
    tiles = Tiles(base, args.n)
    x = np.concatenate([c for _, c in tiles.chunks()]).astype(np.float32)
    names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    cls = labels[np.arange(args.n) % len(base)]
    rng = np.random.default_rng(11)
    price = np.round(rng.lognormal(3.5, 1.0, args.n), 2)
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(args.n)],
                          "name": [f"{names[c]} model {i % 997}" for i, c in enumerate(cls)],
                          "category": [names[c] for c in cls], "price": price, "image": "none.jpg"})
    catalog = catalog_from_frame(frame, Path(tempfile.gettempdir()))
    p30 = float(np.percentile(price, 30))
    conditions = {"none": None, f"price <= {p30:.0f} (30%)": Filters(price_max=p30),
                  "category (10%)": "category"}
    items = rng.choice(args.n, args.queries, replace=False)
    print(f"catalog: {args.n} products, {x.shape[1]}-d image vectors + name/category/price; {args.queries} item "
          f"queries, k={K}; the façade re-scores candidates exactly (hybrid score, w=0.7)", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="bench_facade_"))
    results, rows = {}, []
    try:
        for backend in args.backends.split(","):
            options = {"uri": str(folder / "facade.db")} if backend == "milvus" else None
            t0 = time.perf_counter()
            rec = HybridRecommender(index=backend, index_options=options).fit_vectors(catalog, x)
            load = time.perf_counter() - t0
            for cond, filters in conditions.items():
                ids, ms = [], []
                for i in items:
                    f = Filters(category=[catalog.items["category"].iat[i]]) if filters == "category" else filters
                    t1 = time.perf_counter()
                    got = rec.recommend(item=f"p{i}", k=K, filters=f)
                    ms.append((time.perf_counter() - t1) * 1e3)
                    ids.append([r.id for r in got.items])
                results[backend, cond] = ids
                truth = results.get(("exact", cond), ids)
                agree = np.array([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(ids, truth, strict=True)])
                ms = np.array(ms)
                lo, hi = boot_ci(ms, lambda v: np.percentile(v, 50))
                alo, ahi = boot_ci(agree)
                rows.append((backend, cond, load, np.percentile(ms, 50), lo, hi, np.percentile(ms, 99), agree.mean(),
                             alo, ahi))
                print(f"{backend:7s} {cond:22s} fit {load:6.1f} s  p50 {rows[-1][3]:8.2f} ms [{lo:.2f}, {hi:.2f}]"
                      f"  p99 {rows[-1][6]:8.2f} ms  top-10 = exact's {agree.mean():.3f}  n={len(ms)}", flush=True)
            if backend == "milvus":
                rec.image_index_.close()
            del rec
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("\n| backend | filter | fit (s) | recommend p50 ms [95% CI] | p99 ms | top-10 shared with exact [95% CI] |")
    print("|---|---|---:|---:|---:|---:|")
    for name, cond, load_s, p50, lo, hi, p99, rec, rlo, rhi in rows:
        print(f"| {name} | {cond} | {load_s:.1f} | {p50:.2f} [{lo:.2f}, {hi:.2f}] | {p99:.2f} | "
              f"{rec:.3f} [{rlo:.3f}, {rhi:.3f}] |")


def cmd_build(args) -> None:
    from recommender import HybridRecommender, load_catalog
    from recommender.store.build import build_embeddings
    from recommender.store.ray_build import build_with_ray

    catalog = load_catalog(args.catalog)
    backbone = "efficientnet_lite0"
    rows = []
    with tempfile.TemporaryDirectory() as local_dir, tempfile.TemporaryDirectory() as ray_dir:
        for attempt in ("cold", "warm"):
            embedder = HybridRecommender(backbone=backbone)._image_embedder(backbone)
            t0 = time.perf_counter()
            _, _, report, _ = build_embeddings(catalog, embedder, local_dir)
            rows.append(("local", attempt, time.perf_counter() - t0, report.embedded, report.reused))
            print(f"local {attempt}: {rows[-1][2]:.1f} s ({report.summary()})", flush=True)
            embedder = HybridRecommender(backbone=backbone)._image_embedder(backbone)
            t0 = time.perf_counter()
            report = build_with_ray(catalog, embedder, cache_dir=ray_dir, num_actors=args.actors,
                                    num_cpus=args.actors)
            rows.append((f"ray ({args.actors} actors)", attempt, time.perf_counter() - t0, report.embedded,
                         report.reused))
            print(f"ray {attempt}: {rows[-1][2]:.1f} s ({report.summary()})", flush=True)
    print(f"\n{len(catalog)} products ({catalog.source}), backbone {backbone}, wall-clock seconds, one run each")
    print("| engine | cache | seconds | embedded | reused |")
    print("|---|---|---:|---:|---:|")
    for engine, attempt, seconds, embedded, reused in rows:
        print(f"| {engine} | {attempt} | {seconds:.1f} | {embedded} | {reused} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("search")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "index_bench",
                   help="where bench_index.py caches the 10k base vectors (embedded once if absent)")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("facade")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--backends", default="exact,milvus", help="comma-separated, exact first: exact,milvus,hnsw")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "index_bench")
    p.set_defaults(func=cmd_facade)
    p = sub.add_parser("build")
    p.add_argument("--catalog", type=Path, default=Path(__file__).resolve().parents[1] / "data/demo/catalog.csv")
    p.add_argument("--actors", type=int, default=2)
    p.set_defaults(func=cmd_build)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
