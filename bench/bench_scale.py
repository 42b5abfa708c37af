"""Scale benchmark of the façade (issue 14): fit, memory, query latency and hybrid recall at 100k / 1M products.

Vectors: the 10k Fashion-MNIST test images as the default 2280-d image vectors (EfficientNet-Lite0,
semantic 0.5; embedded once and cached by ``bench/bench_index.py``'s ``base_vectors``), tiled with
Gaussian noise beyond 10k so that a copy is as far from its original as an image from its nearest
other image (``bench_index.Tiles``). Metadata, drawn per product (seeded):
- ``category``: 40 values, Zipf(1.0) shares (the largest ~23%); ``sub_category``: 10 per category,
  Zipf(1.0) within it; ``brand``: 3,000 values, Zipf(1.1); ``colour``: 16 colours with shop-like
  shares (black 20%, white 14%, ...); ``price``: log-normal, median 30, sigma 1.0 (2 decimals);
- ``name``: brand + 2-4 words, ``description``: 8-20 words, both drawn Zipf(1.1) from a 20,000-word
  vocabulary (synthetic words ``w<rank>``).
Filters: the category closest to 10% of the catalog, a brand closest to 1%. Photo queries are fresh
noisy copies of the base vectors (the CNN embedding itself, ~50 ms, is the same at any size and
left out); colour is off (no colour histograms for synthetic products). Text queries: 2-3 words of
a random product's name.

Each configuration runs side by side in one forked process per size: ``index="exact"`` (the exact
scan of every allowed row: the anchor) then ``index="hnsw"`` (candidate set: HNSW image top-K with
the filter inside the search, metadata top-K from the postings, exact re-scoring). Recall@10: the
HNSW façade's hybrid top-10 against the exact façade's, same queries.

    python bench/bench_scale.py --n 100000
    python bench/bench_scale.py --n 1000000 --backends hnsw   # needs ~2 x 9 GB at float32: see the docs
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_index import Tiles, base_vectors, in_child, rss_mb  # noqa: E402

COLOURS = {"black": .20, "white": .14, "grey": .10, "blue": .10, "red": .07, "green": .06, "brown": .06,
           "beige": .05, "pink": .04, "navy": .04, "yellow": .03, "orange": .03, "purple": .03, "silver": .02,
           "gold": .02, "multi": .01}


def _zipf(n_values: int, s: float) -> np.ndarray:
    p = np.arange(1, n_values + 1, dtype=np.float64) ** -s
    return p / p.sum()


def synthetic_catalog(n: int, seed: int = 0):
    """The catalog table described in the module docstring, as a validated :class:`Catalog`."""
    from recommender.catalog.loader import Catalog

    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20_000)], dtype=object)
    word_p = _zipf(len(vocab), 1.1)

    def texts(lo: int, hi: int) -> list[str]:
        lengths = rng.integers(lo, hi + 1, n)
        words = vocab[rng.choice(len(vocab), lengths.sum(), p=word_p)]
        cuts = np.cumsum(lengths)[:-1]
        return [" ".join(w) for w in np.split(words, cuts)]

    cat = rng.choice(40, n, p=_zipf(40, 1.0))
    sub = rng.choice(10, n, p=_zipf(10, 1.0))
    brand = rng.choice(3000, n, p=_zipf(3000, 1.1))
    colour = rng.choice(list(COLOURS), n, p=np.array(list(COLOURS.values())) / sum(COLOURS.values()))
    brands = np.array([f"brand{b}" for b in range(3000)], dtype=object)
    names = [f"{b} {t}" for b, t in zip(brands[brand], texts(2, 4), strict=True)]
    items = pd.DataFrame({
        "id": [f"p{i}" for i in range(n)], "name": names, "description": texts(8, 20),
        "category": [f"cat{c}" for c in cat], "sub_category": [f"cat{c}-sub{s}" for c, s in zip(cat, sub, strict=True)],
        "brand": brands[brand], "colour": colour,
        "price": np.round(np.exp(rng.normal(np.log(30), 1.0, n)), 2), "image": "none.jpg"})
    return Catalog(items, Path("/nonexistent"), None)


def _pct(ms: list[float]) -> str:
    return f"{np.percentile(ms, 50):7.2f} / {np.percentile(ms, 99):7.2f}"


def run(n: int, backends: list[str], n_queries: int, cache_dir: Path) -> list[dict]:
    from recommender import Filters, HybridRecommender

    t0 = time.perf_counter()
    catalog = synthetic_catalog(n)
    tiles = Tiles(base_vectors(cache_dir), n)
    vectors = np.empty((n, 2280), np.float32)
    for idx, x in tiles.chunks():
        vectors[idx] = x
    photo_q = tiles.queries(n_queries)
    print(f"n={n}: catalog + vectors made in {time.perf_counter() - t0:.0f} s, RSS {rss_mb():.0f} MB", flush=True)
    items = catalog.items
    share = items["category"].value_counts(normalize=True)
    cat10 = share.index[np.argmin(np.abs(share.to_numpy() - 0.10))]
    bshare = items["brand"].value_counts(normalize=True)
    brand1 = bshare.index[np.argmin(np.abs(bshare.to_numpy() - 0.01))]
    filters = {"none": None, f"10% ({cat10}, {share[cat10]:.1%})": Filters(category=cat10),
               f"1% ({brand1}, {bshare[brand1]:.1%})": Filters(brand=brand1)}
    rng = np.random.default_rng(7)
    item_q = [str(items["id"].iat[i]) for i in rng.integers(0, n, n_queries)]
    text_q = [" ".join(str(items["name"].iat[i]).split()[1:4]) for i in rng.integers(0, n, n_queries)]

    results: dict[str, dict] = {}
    rows = []
    for backend in backends:
        gc.collect()
        before = rss_mb()
        t0 = time.perf_counter()
        rec = HybridRecommender(index=backend, photo_colour_weight=0.0).fit_vectors(catalog, vectors)
        fit_s = time.perf_counter() - t0
        grown = rss_mb() - before
        it = iter(photo_q)
        rec._embed_upload = lambda _img, it=it: (next(it), np.zeros(1, np.float32))  # the CNN is not benchmarked
        got: dict[str, list[list[str]]] = {}
        row = {"n": n, "backend": backend, "fit s": round(fit_s, 1), "RSS growth MB": round(grown),
               "bytes/product (fit growth)": round(grown * 2**20 / n)}
        for kind, queries in (("item", item_q), ("photo", list(range(n_queries))), ("text", text_q)):
            for fname, f in filters.items():
                if kind == "photo":
                    it = iter(photo_q)
                    rec._embed_upload = lambda _img, it=it: (next(it), np.zeros(1, np.float32))
                ms, ids = [], []
                for q in queries:
                    kw = {"item": {"item": q}, "photo": {"image": "x"}, "text": {"text": q}}[kind]
                    s = time.perf_counter()
                    res = rec.recommend(k=10, filters=f, **kw)
                    ms.append((time.perf_counter() - s) * 1e3)
                    ids.append(res.ids)
                got[f"{kind} {fname}"] = ids
                row[f"{kind} {fname.split(' (')[0]} p50/p99 ms"] = _pct(ms)
            if kind != "photo":
                ms = []
                for q in queries:
                    kw = {"item": {"item": q}, "text": {"text": q}}[kind]
                    s = time.perf_counter()
                    rec.recommend(k=10, diversity=0.3, **kw)
                    ms.append((time.perf_counter() - s) * 1e3)
                row[f"{kind} +diversity p50/p99 ms"] = _pct(ms)
        results[backend] = got
        if "exact" in results and backend != "exact":
            rec10 = []
            for key, lists in got.items():
                for a, b in zip(lists, results["exact"][key], strict=True):
                    if b:
                        rec10.append(len(set(a) & set(b)) / len(b))
                row["hybrid recall@10 vs exact"] = round(float(np.mean(rec10)), 4)
        rows.append(row)
        print(pd.Series(row).to_string(), flush=True)
        del rec
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--backends", nargs="+", default=["exact", "hnsw"])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/index_bench"))
    args = ap.parse_args()
    table = []
    for n in args.n:
        table += in_child(run, n, args.backends, args.queries, args.cache_dir)
    print()
    print(pd.DataFrame(table).T.to_string())


if __name__ == "__main__":
    main()
