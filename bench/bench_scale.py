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

    python bench/bench_scale.py --n 100000 --backends exact hnsw_pca ivf_pca
    python bench/bench_scale.py --n 1000000 --backends ivf_pca --dtype float16

Fit: an ANN backend is fitted twice into a fresh cache folder: the cold fit builds and saves the index
and the float16 vector file, the warm fit (what a restart costs) finds both. Memory: RssAnon (the
process's own) and RssFile (mapped files: the bfloat16 vector file's pages) apart. After the fit the
façade's ``warm_up()`` maps its vector file (what the API's live catalog does after each fit), so the first
queries do not fault it in page by page; its seconds and MB are a row.
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


def bench_filters(items: pd.DataFrame) -> dict:
    """``{label: Filters}``: none, the category closest to 10% of the catalog, the brand closest to 1%."""
    from recommender import Filters

    share = items["category"].value_counts(normalize=True)
    cat10 = share.index[np.argmin(np.abs(share.to_numpy() - 0.10))]
    bshare = items["brand"].value_counts(normalize=True)
    brand1 = bshare.index[np.argmin(np.abs(bshare.to_numpy() - 0.01))]
    return {"none": None, f"10% ({cat10}, {share[cat10]:.1%})": Filters(category=cat10),
            f"1% ({brand1}, {bshare[brand1]:.1%})": Filters(brand=brand1)}


def _bootstrap(values: list[float], reps: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    means = v[np.random.default_rng(0).integers(0, len(v), (reps, len(v)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _pct(ms: list[float]) -> str:
    return f"{np.percentile(ms, 50):7.2f} / {np.percentile(ms, 99):7.2f}"


def rss_split_mb() -> dict[str, float]:
    """This process's resident memory split: anonymous (its own) and file-backed (mapped files, page cache)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


def run(n: int, backends: list[str], n_queries: int, cache_dir: Path, dtype: str = "float32",
        exact_queries: int | None = None, warm: bool = True) -> list[dict]:
    from recommender import HybridRecommender

    t0 = time.perf_counter()
    catalog = synthetic_catalog(n)
    tiles = Tiles(base_vectors(cache_dir), n)
    vectors = np.empty((n, 2280), dtype)
    for idx, x in tiles.chunks():
        vectors[idx] = x
    photo_q = tiles.queries(n_queries)
    print(f"n={n}: catalog + vectors made in {time.perf_counter() - t0:.0f} s, RSS {rss_mb():.0f} MB", flush=True)
    items = catalog.items
    filters = bench_filters(items)
    rng = np.random.default_rng(7)
    item_q = [str(items["id"].iat[i]) for i in rng.integers(0, n, n_queries)]
    text_q = [" ".join(str(items["name"].iat[i]).split()[1:4]) for i in rng.integers(0, n, n_queries)]

    results: dict[str, dict] = {}
    rows = []
    fit_cache = cache_dir / f"fit-{n}"
    for backend in backends:
        gc.collect()
        before = rss_split_mb()
        row = {"n": n, "backend": backend}
        fits = 2 if warm and backend != "exact" else 1  # the second fit finds the index and vector file saved
        for fit_no in range(fits):
            rec = None
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            # qe_k=0 on every backend: the default ("auto") expands item queries only where every row is scored
            # exactly, so the exact anchor would rank by another function than the ANN path it anchors.
            rec = HybridRecommender(index=backend, photo_colour_weight=0.0, cache_dir=fit_cache, qe_k=0).fit_vectors(
                catalog, vectors)
            label = "fit" if fits == 1 else ("cold fit" if fit_no == 0 else "warm fit")
            row[f"{label} s (wall / CPU)"] = f"{time.perf_counter() - t0:.1f} / {time.process_time() - c0:.1f}"
        after = rss_split_mb()
        held = 0 if np.shares_memory(rec.image_vectors_, vectors) else vectors.nbytes / 2**20
        serving = after["RssAnon"] - held  # the caller's vectors are not the recommender's once it maps its own
        row.update({
            "RssAnon growth of fit MB": round(after["RssAnon"] - before["RssAnon"]),
            "RssFile after fit MB": round(after["RssFile"]),
            "process RssAnon without the caller's vectors MB": round(serving),
            "bytes/product (that RssAnon / n)": round(serving * 2**20 / n),
            "vectors held as": f"{rec.image_vectors_.dtype} {type(rec.image_vectors_).__name__}"
                               f"{' (file)' if isinstance(rec.image_vectors_, np.memmap) else ''}",
            "peak RSS so far MB": round(after["VmHWM"])})
        t0 = time.perf_counter()
        mapped = rec.warm_up()  # what a serving shell does after a fit (the live catalog behind the API does)
        row["warm_up s / MB mapped"] = f"{time.perf_counter() - t0:.2f} / {mapped / 2**20:.0f}"
        it = iter(photo_q)
        rec._embed_upload = lambda _img, it=it: (next(it), np.zeros(1, np.float32))  # the CNN is not benchmarked
        got: dict[str, list[list[str]]] = {}
        m = n_queries if backend != "exact" or exact_queries is None else min(exact_queries, n_queries)
        for kind, queries in (("item", item_q[:m]), ("photo", list(range(m))), ("text", text_q[:m])):
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
                for a, b in zip(lists, results["exact"][key], strict=False):  # the exact run may have fewer
                    if b:
                        rec10.append(len(set(a) & set(b)) / len(b))
            lo, hi = _bootstrap(rec10)
            row["hybrid recall@10 vs exact"] = f"{np.mean(rec10):.4f} [{lo:.4f}, {hi:.4f}] (n={len(rec10)})"
        row["RssFile after queries MB"] = round(rss_split_mb()["RssFile"])
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
    ap.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                    help="the caller's vectors (float16 halves the benchmark's own 9 GB at 1M)")
    ap.add_argument("--exact-queries", type=int, default=None,
                    help="queries per cell for the exact anchor (fewer: it scans every row); recall over these")
    ap.add_argument("--no-warm", action="store_true", help="fit each ANN backend once (no warm second fit)")
    args = ap.parse_args()
    table = []
    for n in args.n:
        table += in_child(run, n, args.backends, args.queries, args.cache_dir, args.dtype, args.exact_queries,
                          not args.no_warm)
    print()
    print(pd.DataFrame(table).T.to_string())


if __name__ == "__main__":
    main()
