"""Index benchmark: the ANN libraries side by side, the reduced representations, the sparse index.

Real CNN vectors: the 10k Fashion-MNIST test images embedded once with the project's default image
embedding (EfficientNet-Lite0, bundled weights, ``semantic=0.5``: 2280-d; no flip-TTA to halve the
one-off cost) and cached in ``--cache-dir``. Beyond 10k they are *tiled*: copy ``j`` of image ``i``
is ``image_i + noise`` (isotropic Gaussian, renormalised) with the noise scaled so that a copy's
cosine to its original equals the median cosine of an image to its nearest *other* image (so
copies are as far apart as real neighbours, not near-duplicates). Queries are fresh noisy copies
(not in the index), like photo queries. Ground truth: the exact cosine top-10 in the full 2280-d
space (chunked, never materialising N x 2280 at 1M); filtered ground truth the same over the
allowed ids only. Filters are random 10% / 1% allow-masks (uncorrelated with the query: the hard
case for a graph index; a category filter is correlated and easier).

Commands (from the repo root; each prints its table):
  python bench/bench_index.py libs --n 100000            # hnswlib vs faiss vs usearch, exact anchor
  python bench/bench_index.py reduce --n 100000          # PCA dims / float16 vs the full-dim ranking
  python bench/bench_index.py backend --n 1000000        # the chosen backend (HNSWIndex) at 1M, save/load
  python bench/bench_index.py sparse --n 100000 1000000  # SparseIndex vs dense matrix @ q.T
  python bench/bench_index.py auto --n 5000 10000 20000 50000  # exact vs hnsw on full-dim vectors: the "auto" cut

Latencies are single queries, one at a time, one thread (the serving pattern), p50/p99 over
``--queries`` queries; build uses every core. Memory is the RSS growth of a fresh forked process.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 10
BASE_NAME = "fmnist-test-lite0-sem0.5-v1.npy"


# -- data ------------------------------------------------------------------------------------
def base_vectors(cache_dir: Path) -> np.ndarray:
    """The 10k Fashion-MNIST test images as the default 2280-d image vectors (embedded once, cached)."""
    path = cache_dir / BASE_NAME
    if path.is_file():
        return np.load(path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from recommender.evaluation.fashion_mnist import load_fashion_mnist, to_rgb_batch
    from recommender.features.embedders import ImageEmbedder

    images, _ = load_fashion_mnist("test")
    emb = ImageEmbedder("efficientnet_lite0", batch_size=64, semantic=0.5).fit()
    t0 = time.perf_counter()
    x = np.concatenate([emb.embed_arrays(to_rgb_batch(images[s:s + 1000])) for s in range(0, len(images), 1000)])
    print(f"embedded {len(x)} images in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Tiles:
    """Row ``i`` = ``normalise(base[i % n_base] + sigma * noise_i)``, generated chunk by chunk, reproducibly."""

    def __init__(self, base: np.ndarray, n: int, chunk: int = 20_000, seed: int = 0) -> None:
        self.base, self.n, self.chunk, self.seed = normalise(base), n, chunk, seed
        m = min(2000, len(self.base))
        sims = self.base[:m] @ self.base.T
        sims[np.arange(m), np.arange(m)] = -1
        target = float(np.median(sims.max(1)))  # cosine of an image to its nearest other image
        d = base.shape[1]
        # cos(b, b + s*g) = 1 / sqrt(1 + s^2 d) for unit b and g ~ N(0, I): solve for s.
        self.sigma = float(np.sqrt((1 / target**2 - 1) / d)) if n > len(base) else 0.0
        self.target_cos = target

    def chunks(self):
        for s in range(0, self.n, self.chunk):
            idx = np.arange(s, min(s + self.chunk, self.n))
            x = self.base[idx % len(self.base)]
            if self.sigma:
                rng = np.random.default_rng([self.seed, s])
                x = normalise(x + self.sigma * rng.standard_normal(x.shape, dtype=np.float32))
            yield idx, x

    def queries(self, n_queries: int, seed: int = 1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = self.base[rng.integers(0, len(self.base), n_queries)]
        return normalise(x + max(self.sigma, 0.02) * rng.standard_normal(x.shape, dtype=np.float32))


def exact_truth(tiles: Tiles, q: np.ndarray, masks: dict[str, np.ndarray | None], k: int = K) -> dict[str, np.ndarray]:
    """Exact full-dimensional top-k ids of each query, per mask (merged over chunks)."""
    best = {name: (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1)) for name in masks}
    for idx, x in tiles.chunks():
        s = q @ x.T
        for name, mask in masks.items():
            sc = s if mask is None else np.where(mask[idx][None, :], s, -np.inf)
            bs, bi = best[name]
            all_s = np.concatenate([bs, sc], 1)
            all_i = np.concatenate([bi, np.broadcast_to(idx, sc.shape)], 1)
            top = np.argpartition(-all_s, k - 1, 1)[:, :k]
            best[name] = (np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1))
    return {name: bi for name, (_, bi) in best.items()}


def exact_truth_of(x: np.ndarray, q: np.ndarray, masks: dict[str, np.ndarray | None], k: int = K):
    """Exact top-k ids of ``q`` among the (already materialised) rows of ``x``, per mask."""
    from recommender.index.exact import ExactIndex

    index = ExactIndex(x.shape[1])
    index.add(np.arange(len(x)), x)
    return {name: np.concatenate([index.search(q[s:s + 100], k, mask)[1] for s in range(0, len(q), 100)])
            for name, mask in masks.items()}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum()) for f, t in pairs]))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def latencies(fn, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``fn(q_row) -> ids`` one query at a time; (ids (n, k), milliseconds (n,))."""
    ids, ms = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids.append(np.asarray(fn(q[None, :])).reshape(-1)[:K])
        ms.append((time.perf_counter() - t0) * 1e3)
    return np.array(ids), np.array(ms)


def pct(ms: np.ndarray) -> str:
    return f"{np.percentile(ms, 50):6.2f} / {np.percentile(ms, 99):6.2f}"


def in_child(fn, *args):
    """Run ``fn(*args)`` in a forked process (fresh RSS baseline, memory returned to the OS after)."""
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


# -- libs: the three ANN libraries side by side ------------------------------------------------
STATE: dict = {}


def _lib_run(lib: str, m: int, ef_c: int, ef_s: int) -> dict:
    x, q, masks, truth, threads = STATE["x"], STATE["q"], STATE["masks"], STATE["truth"], STATE["threads"]
    n, d = x.shape
    gc.collect()
    r0 = rss_mb()
    t0 = time.perf_counter()
    if lib == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=d)
        index.init_index(max_elements=n + 2000, ef_construction=ef_c, M=m, allow_replace_deleted=True)
        index.add_items(x, np.arange(n), num_threads=threads)
        index.set_ef(ef_s)
        index.set_num_threads(1)

        def search(qr, mask=None):
            if mask is None:
                return index.knn_query(qr, K, num_threads=1)[0]
            return index.knn_query(qr, K, num_threads=1, filter=lambda i: mask[i])[0]

        def add_remove(new, new_ids, old_ids):
            for i in old_ids:
                index.mark_deleted(int(i))
            index.add_items(new, new_ids, num_threads=1, replace_deleted=True)
    elif lib == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_c
        index.add(x)
        faiss.omp_set_num_threads(1)
        live = np.ones(n + 2000, bool)

        def search(qr, mask=None):
            allow = live[:index.ntotal] if mask is None else live[:index.ntotal] & mask[:index.ntotal]
            sel = faiss.IDSelectorBitmap(np.packbits(allow, bitorder="little"))
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef_s)
            return index.search(qr, K, params=params)[1]

        def add_remove(new, new_ids, old_ids):  # no remove in IndexHNSW: tombstone + append
            live[old_ids] = False
            index.add(new)
    elif lib == "usearch":
        from usearch.index import Index

        index = Index(ndim=d, metric="ip", dtype="f32", connectivity=m, expansion_add=ef_c, expansion_search=ef_s)
        index.add(np.arange(n), x, threads=threads)

        def search(qr, mask=None):
            if mask is None:
                return index.search(qr, K, threads=1).keys
            # No filter predicate in usearch's Python API (2.x): over-fetch 1/selectivity and drop.
            want = int(K / max(mask.mean(), 1e-6) * 2)
            keys = index.search(qr, min(want, len(index)), threads=1).keys
            keys = keys[mask[keys]][:K]
            return np.pad(keys, (0, K - len(keys)), constant_values=-1)

        def add_remove(new, new_ids, old_ids):
            index.remove(old_ids)
            index.add(new_ids, new, threads=1)
    build_s = time.perf_counter() - t0
    gc.collect()
    mem = rss_mb() - r0
    out = {"lib": lib, "build_s": build_s, "mem_mb": mem, "bytes_per_vec": mem * 2**20 / n}
    for name, mask in masks.items():
        found, ms = latencies(lambda qr, mask=mask: search(qr, mask), q)
        out[name] = (recall(found, truth[name]), recall(found, STATE["truth_reduced"][name]), ms)
    # add/remove cost: 1000 upserts (remove an old id, add a new vector) one batch
    rng = np.random.default_rng(5)
    old = rng.choice(n, 1000, replace=False)
    new = x[rng.choice(n, 1000, replace=False)]
    t0 = time.perf_counter()
    add_remove(new, np.arange(n, n + 1000), old)
    out["upsert_ms_per_1000"] = (time.perf_counter() - t0) * 1e3
    return out


def cmd_libs(args) -> None:
    base = base_vectors(args.cache_dir)
    from recommender.index.reduce import PCAReducer

    for n in args.n:
        tiles = Tiles(base, n)
        reducer = PCAReducer(args.dim).fit(base)
        # The libraries' "ip" metric is the raw inner product: give them unit vectors (cosine), as VectorIndex does.
        x = np.concatenate([normalise(reducer.transform(c)) for _, c in tiles.chunks()])
        q = tiles.queries(args.queries)
        rng = np.random.default_rng(3)
        masks = {"none": None, "10%": rng.random(n + 2000) < 0.10, "1%": rng.random(n + 2000) < 0.01}
        truth = exact_truth(tiles, q, masks)
        qr = normalise(reducer.transform(q))
        truth_reduced = exact_truth_of(x, qr, masks)  # separates the ANN's error from the PCA's
        STATE.update(x=x, q=qr, masks=masks, truth=truth, truth_reduced=truth_reduced, threads=args.threads)
        print(f"\n## n={n:,}  PCA {base.shape[1]} -> {args.dim}  (tile noise sigma={tiles.sigma:.4f}, copy cosine "
              f"{tiles.target_cos:.3f}); {args.queries} queries, single-threaded; M={args.m} efC={args.ef_c} "
              f"ef={args.ef}")
        # exact anchor (numpy, reduced dim) in this process
        t0 = time.perf_counter()
        from recommender.index.exact import ExactIndex

        ex = ExactIndex(args.dim)
        ex.add(np.arange(n), x)
        print(f"exact numpy add {time.perf_counter() - t0:.1f} s")
        print("| backend | build s | MB | B/vec | recall@10 full/reduced-dim: none | 10% | 1% | p50/p99 ms: none | "
              "10% | 1% | 1000 upserts ms |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        row = ["exact numpy", "-", f"{x.nbytes / 2**20:.0f}", f"{x.nbytes / n:.0f}"]
        res = {}
        for name, mask in masks.items():
            found, ms = latencies(lambda qq, mask=mask, ex=ex: ex.search(qq, K, mask)[1], qr)
            res[name] = (recall(found, truth[name]), recall(found, truth_reduced[name]), ms)
        row += [f"{res[m][0]:.3f}/{res[m][1]:.3f}" for m in masks] + [pct(res[m][2]) for m in masks] + ["-"]
        print("| " + " | ".join(row) + " |", flush=True)
        for lib in args.libs.split(","):
            r = in_child(_lib_run, lib, args.m, args.ef_c, args.ef)
            row = [lib, f"{r['build_s']:.1f}", f"{r['mem_mb']:.0f}", f"{r['bytes_per_vec']:.0f}"]
            row += [f"{r[m][0]:.3f}/{r[m][1]:.3f}" for m in masks] + [pct(r[m][2]) for m in masks]
            row += [f"{r['upsert_ms_per_1000']:.0f}"]
            print("| " + " | ".join(row) + " |", flush=True)
        del ex, x, STATE["x"]
        gc.collect()


# -- reduce: what a smaller vector costs in ranking quality ------------------------------------
def cmd_reduce(args) -> None:
    from recommender.index.reduce import PCAReducer

    base = base_vectors(args.cache_dir)
    for n in args.n:
        tiles = Tiles(base, n)
        q = tiles.queries(args.queries)
        masks = {"none": None, "10%": np.random.default_rng(3).random(n) < 0.10}
        truth = exact_truth(tiles, q, masks)
        print(f"\n## n={n:,}: exact top-10 in the reduced space vs exact top-10 in the full {base.shape[1]}-d space "
              f"({args.queries} queries); 're-scored' = the reduced top-{args.rescore} re-ranked by the full vectors")
        print("| representation | bytes/vector | recall@10 | re-scored | recall@10, 10% filter | re-scored |")
        print("|---|---|---|---|---|---|")
        full = np.concatenate([c for _, c in tiles.chunks()])
        reps = [(f"PCA {d} {dtype}", d, dtype) for d in args.dims for dtype in ("float32", "float16")]
        reps.append((f"full {base.shape[1]} float16", 0, "float16"))
        for label, d, dtype in reps:
            reducer = PCAReducer(d).fit(base) if d else None
            x = (reducer.transform(full) if reducer else full).astype(dtype)
            qr = (reducer.transform(q) if reducer else q).astype(dtype)
            cells = [label, str(x.shape[1] * np.dtype(dtype).itemsize)]
            for name, mask in masks.items():
                s = qr.astype(np.float32) @ x.T.astype(np.float32) if dtype == "float16" else qr @ x.T
                if mask is not None:
                    s[:, ~mask] = -np.inf
                top = np.argpartition(-s, args.rescore, 1)[:, :args.rescore]
                top10 = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), 1)[:, :K], 1)
                fs = np.einsum("qd,qkd->qk", q, full[top])
                rescored = np.take_along_axis(top, np.argsort(-fs, 1)[:, :K], 1)
                cells += [f"{recall(top10, truth[name]):.3f}", f"{recall(rescored, truth[name]):.3f}"]
                del s
            print("| " + " | ".join(cells) + " |", flush=True)
            del x


# -- backend: the chosen backend through the project's interface --------------------------------
def cmd_backend(args) -> None:
    from recommender.index import make_index
    from recommender.index.persist import load_index, save_index
    from recommender.index.reduce import PCAReducer

    base = base_vectors(args.cache_dir)
    for n in args.n:
        tiles = Tiles(base, n)
        reducer = PCAReducer(args.dim).fit(base)
        q = tiles.queries(args.queries)
        rng = np.random.default_rng(3)
        masks = {"none": None, "10%": rng.random(n) < 0.10, "3%": rng.random(n) < 0.03, "1%": rng.random(n) < 0.01,
                 "0.1%": rng.random(n) < 0.001}
        truth = exact_truth(tiles, q, masks)
        qr = reducer.transform(q)
        gc.collect()
        r0 = rss_mb()
        t0 = time.perf_counter()
        index = make_index(args.kind, args.dim, n)
        for idx, c in tiles.chunks():
            index.add(idx, reducer.transform(c))
        build = time.perf_counter() - t0
        gc.collect()
        mem = rss_mb() - r0
        print(f"\n## {type(index).__name__} ({index.kind}) n={n:,} dim={args.dim}: build {build:.1f} s, "
              f"+{mem:.0f} MB RSS ({mem * 2**20 / n:.0f} B/vector); {args.queries} single-threaded queries")
        print("| filter | recall@10 vs full-dim exact | p50 / p99 ms |")
        print("|---|---|---|")
        for name, mask in masks.items():
            found, ms = latencies(lambda qq, mask=mask, index=index: index.search(qq, K, mask)[1], qr)
            print(f"| {name} | {recall(found, truth[name]):.3f} | {pct(ms)} |", flush=True)
        folder = args.cache_dir / "index-save"
        t0 = time.perf_counter()
        save_index(index, folder, f"bench-{n}")
        save_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        del index
        gc.collect()
        t0 = time.perf_counter()
        loaded = load_index(folder, f"bench-{n}")
        load_s = time.perf_counter() - t0
        found, ms = latencies(lambda qq, loaded=loaded: loaded.search(qq, K)[1], qr)
        print(f"save {save_s:.1f} s ({size / 2**20:.0f} MB on disk), load {load_s:.1f} s; after load recall "
              f"{recall(found, truth['none']):.3f}, p50/p99 {pct(ms)} ms")
        rng = np.random.default_rng(9)
        old = rng.choice(n, 1000, replace=False)
        t0 = time.perf_counter()
        loaded.add(old, reducer.transform(tiles.queries(1000, seed=9)))
        up = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded.remove(old[:500])
        rm = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded.add(np.arange(n, n + 1000), reducer.transform(tiles.queries(1000, seed=10)))
        grow = time.perf_counter() - t0
        print(f"1000 upserts of existing ids {up * 1e3:.0f} ms, 500 removes {rm * 1e3:.1f} ms, "
              f"1000 new ids (growth) {grow * 1e3:.0f} ms; ntotal {loaded.ntotal:,}")
        del loaded
        gc.collect()


# -- sparse: inverted index vs the dense product -----------------------------------------------
def synthetic_names(n: int, vocab: int = 20_000, seed: int = 0):
    """A TF-IDF-weighted CSR matrix of product-name-like texts: 3-12 tokens (mean ~6) drawn from a Zipf(1.1)
    vocabulary of ``vocab`` words, plus one of 50 categories, 2,000 brands (Zipfian) and 30 colours as tokens."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 13, n)
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    p = ranks**-1.1
    p /= p.sum()
    words = rng.choice(vocab, lengths.sum(), p=p)
    brand_p = np.arange(1, 2001, dtype=np.float64) ** -1.0
    brand_p /= brand_p.sum()
    extra = np.stack([vocab + rng.integers(0, 50, n), vocab + 50 + rng.choice(2000, n, p=brand_p),
                      vocab + 2050 + rng.integers(0, 30, n)], 1)
    rows = np.concatenate([np.repeat(np.arange(n), lengths), np.repeat(np.arange(n), 3)])
    cols = np.concatenate([words, extra.ravel()])
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, vocab + 2080))
    m.sum_duplicates()
    df = np.bincount(m.indices, minlength=m.shape[1])
    idf = np.log((1 + n) / (1 + df)).astype(np.float32) + 1
    m = sp.csr_matrix(m.multiply(idf[None, :]))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
    m = sp.csr_matrix(sp.diags(1 / np.maximum(norms, 1e-12)) @ m).astype(np.float32)
    return m


def cmd_sparse(args) -> None:
    from recommender.index.exact import top_k
    from recommender.index.sparse import SparseIndex

    for n in args.n:
        m = synthetic_names(n)
        rng = np.random.default_rng(4)
        qrows = rng.integers(0, n, args.queries)
        mask10 = rng.random(n) < 0.10
        t0 = time.perf_counter()
        index = SparseIndex(m.shape[1]).fit(m)
        build = time.perf_counter() - t0
        print(f"\n## sparse n={n:,}: {m.shape[1]:,} terms, {m.nnz / n:.1f} terms/row; SparseIndex build {build:.1f} s, "
              f"{index.nbytes / n:.0f} B/row; {args.queries} single queries")
        print("| path | filter | p50 / p99 ms | top-10 identical to dense |")
        print("|---|---|---|---|")
        for name, mask in (("none", None), ("10%", mask10)):
            dense_ids, dense_ms, ids, ms = [], [], [], []
            for r in qrows:
                qv = m[r]
                t0 = time.perf_counter()
                s = np.asarray((m @ qv.T).todense()).ravel()
                if mask is not None:
                    s = np.where(mask, s, -np.inf)
                dense_ids.append(top_k(s[None, :], K)[1][0])
                dense_ms.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                ids.append(index.search(qv, K, mask)[1][0])
                ms.append((time.perf_counter() - t0) * 1e3)
            same = np.mean([set(a[a >= 0]) == set(b[b >= 0]) for a, b in zip(ids, dense_ids, strict=True)])
            print(f"| dense m @ q.T | {name} | {pct(np.array(dense_ms))} | - |")
            print(f"| SparseIndex | {name} | {pct(np.array(ms))} | {same:.3f} |", flush=True)
        del m, index
        gc.collect()


# -- auto: where the exact scan stops being the better choice ---------------------------------
def cmd_auto(args) -> None:
    from recommender.index import make_index

    base = base_vectors(args.cache_dir)
    print(f"\n## exact vs hnsw on the full {base.shape[1]}-d vectors ({args.queries} single queries)")
    print("| n | exact add s | exact p50 / p99 ms | hnsw build s | hnsw p50 / p99 ms | hnsw recall@10 |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        tiles = Tiles(base, n)
        x = np.concatenate([c for _, c in tiles.chunks()])
        q = tiles.queries(args.queries)
        row = [f"{n:,}"]
        results = {}
        for kind in ("exact", "hnsw"):
            t0 = time.perf_counter()
            index = make_index(kind, x.shape[1], n)
            index.add(np.arange(n), x)
            build = time.perf_counter() - t0
            ids, ms = latencies(lambda qq, index=index: index.search(qq, K)[1], q)
            results[kind] = ids
            row += [f"{build:.1f}", pct(ms)]
            del index
        row.append(f"{recall(results['hnsw'], results['exact']):.3f}")
        print("| " + " | ".join(row) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("libs", "reduce", "backend", "sparse", "auto"))
    parser.add_argument("--n", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dim", type=int, default=256, help="PCA dimensions for the ANN (libs, backend)")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 256, 512], help="PCA dims to try (reduce)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--rescore", type=int, default=100, help="candidates re-scored in full dim (reduce)")
    parser.add_argument("--libs", default="hnswlib,faiss,usearch")
    parser.add_argument("--kind", default="hnsw", help="make_index kind (backend)")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-c", type=int, default=100)
    parser.add_argument("--ef", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/index_bench"))
    args = parser.parse_args()
    print(f"bench_index {args.command}: {' '.join(sys.argv[1:])}  (cpus: {os.cpu_count()}, load "
          f"{os.getloadavg()[0]:.1f})")
    commands = {"libs": cmd_libs, "reduce": cmd_reduce, "backend": cmd_backend, "sparse": cmd_sparse, "auto": cmd_auto}
    commands[args.command](args)


if __name__ == "__main__":
    main()
