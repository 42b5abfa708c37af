"""Text query latency: the query row through sklearn (before) and from the fitted tables (after), side by side.

    python bench/bench_text_query.py                      # the demo catalog (MiniLM on if installed)
    python bench/bench_text_query.py --n 100000           # bench_scale's synthetic catalog, ivf_pca
    python bench/bench_text_query.py --profile            # pyinstrument of the "after" queries

One fitted façade. "before" is ``recommender/features/metadata.py`` as it was at ``--before`` (main at
5d2aae4: every query row through ``MetadataEncoder.transform`` of a one-row DataFrame), its class bound to
the same fitted state; "after" is this tree's encoder. Each query runs once each way, the order alternating
query by query, so both see the same load. Printed per side: wall and CPU (``process_time``) p50 / p99 in ms
with 95% bootstrap intervals, over ``--queries`` different queries, and that both return the same results.
Then the encoding calls alone (``transform_text``, ``text_words`` + ``transform_text_fields``: what a text
query encodes; "after" with its analysis cache emptied before each call) and, with a sentence embedding,
the embedding of one query text.

Demo queries: product names, two- and three-word fragments of names and descriptions, some with a colour or
a price phrase. ``--n``: bench_scale's recipe (words 2-4 of a product name), one in three with its brand.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _before_class(rev: str):
    """``MetadataEncoder`` from ``recommender/features/metadata.py`` at git revision ``rev``."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:recommender/features/metadata.py"],
                         capture_output=True, text=True, check=True).stdout
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(f"metadata_at_{rev}", loader=None))
    exec(compile(src, f"metadata.py@{rev}", "exec"), module.__dict__)
    return module.MetadataEncoder


def _same_state(cls, encoder):
    """An instance of ``cls`` reading and writing ``encoder``'s fitted state (one shared ``__dict__``)."""
    twin = object.__new__(cls)
    twin.__dict__ = encoder.__dict__
    return twin


def _interval(values: np.ndarray, q: float, reps: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the ``q``-th percentile."""
    idx = np.random.default_rng(0).integers(0, len(values), (reps, len(values)))
    stats = np.percentile(values[idx], q, axis=1)
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def _summary(ms: list[float]) -> str:
    v = np.asarray(ms)
    (a, b), (c, d) = _interval(v, 50), _interval(v, 99)
    return (f"p50 {np.percentile(v, 50):7.2f} [{a:6.2f}, {b:6.2f}]  p99 {np.percentile(v, 99):7.2f} "
            f"[{c:6.2f}, {d:6.2f}]")


def demo_facade(n_queries: int):
    from recommender import HybridRecommender, load_catalog

    catalog = load_catalog()
    rec = HybridRecommender().fit(catalog)
    items = catalog.items
    rng = np.random.default_rng(14)
    names = items["name"].astype(str).tolist()
    descs = items["description"].fillna("").astype(str).tolist()
    colours = ["black", "white", "red", "blue", "green", "yellow"]
    queries = []
    while len(queries) < n_queries:
        kind = len(queries) % 4
        words = (names if kind < 2 else descs)[rng.integers(len(names))].split()
        start = int(rng.integers(max(len(words) - 2, 1)))
        text = " ".join(words[start:start + 2 + kind % 2]) or "shoe"
        if kind == 1:
            text = f"{rng.choice(colours)} {text}"
        if kind == 3:
            text = f"{text} under {int(rng.integers(20, 200))}"
        queries.append(text)
    return rec, queries


def synthetic_facade(n: int, n_queries: int, cache_dir: Path, dtype: str = "float32"):
    from bench.bench_index import Tiles, base_vectors
    from bench.bench_scale import synthetic_catalog
    from recommender import HybridRecommender

    catalog = synthetic_catalog(n)
    tiles = Tiles(base_vectors(cache_dir), n)
    vectors = np.empty((n, tiles.base.shape[1]), dtype)
    for idx, x in tiles.chunks():
        vectors[idx] = x
    rec = HybridRecommender(index="ivf_pca", photo_colour_weight=0.0, cache_dir=cache_dir / f"fit-{n}").fit_vectors(
        catalog, vectors)
    del vectors
    items = catalog.items
    rng = np.random.default_rng(7)
    queries = []
    for j, i in enumerate(rng.integers(0, n, n_queries)):
        words = str(items["name"].iat[i]).split()  # "<brand> w1 w2 ..."
        queries.append(" ".join(words[1:4]) if j % 3 else " ".join([words[0], *words[1:3]]))
    return rec, queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=0, help="synthetic catalog size (0 = the demo catalog)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--before", default="5d2aae4", help="git revision whose metadata.py is 'before'")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/scale14"))
    ap.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                    help="the generated vectors (float16 halves the caller's copy at 1M, as bench_scale)")
    ap.add_argument("--profile", action="store_true", help="pyinstrument of the 'after' queries instead")
    args = ap.parse_args()
    from recommender.blas import one_blas_thread

    t = time.perf_counter()
    rec, queries = (synthetic_facade(args.n, args.queries, args.cache_dir, args.dtype) if args.n
                    else demo_facade(args.queries))
    after = rec.metadata_encoder_
    before = _same_state(_before_class(args.before), after)
    print(f"catalog {len(rec.catalog_)} products, index {type(rec.image_index_).__name__}, sentence embedding "
          f"{'on' if after.semantic_ else 'off'}; fitted in {time.perf_counter() - t:.1f} s; {len(queries)} queries",
          flush=True)
    if args.profile:
        from pyinstrument import Profiler

        for q in queries[:5]:
            rec.recommend(text=q, k=10)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for q in queries:
            rec.recommend(text=q, k=10)
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))
        return

    sides = {"before (sklearn transform)": before, "after (fitted tables)": after}
    for enc in sides.values():  # warm: lazy tables, first-call imports
        rec.metadata_encoder_ = enc
        for q in queries[:5]:
            rec.recommend(text=q, k=10)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    wall = {name: [] for name in sides}
    cpu = {name: [] for name in sides}
    same = 0
    for i, q in enumerate(queries):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]
        got = {}
        for name in order:
            rec.metadata_encoder_ = sides[name]
            t, c = time.perf_counter(), time.process_time()
            res = rec.recommend(text=q, k=10)
            cpu[name].append((time.process_time() - c) * 1e3)
            wall[name].append((time.perf_counter() - t) * 1e3)
            got[name] = repr(res)  # every field (a text query's image_score is NaN: == would fail)
        same += got[order[0]] == got[order[1]]
    rec.metadata_encoder_ = after
    print(f"load average at end:   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"identical results (every field of the answer: ids, scores, matched words, notes): {same} of "
          f"{len(queries)} queries")
    print(f"\nrec.recommend(text=q, k=10), ms (95% bootstrap intervals), n={len(queries)}")
    for name in sides:
        print(f"  {name:<28} wall {_summary(wall[name])}")
        print(f"  {'':<28} CPU  {_summary(cpu[name])}")
    diff = np.asarray(wall["before (sklearn transform)"]) - np.asarray(wall["after (fitted tables)"])
    lo, hi = _interval(diff, 50)
    print(f"  paired wall difference before - after: median {np.median(diff):.2f} ms [{lo:.2f}, {hi:.2f}]")

    print("\nthe encoding calls of one text query alone, ms:")
    calls = {
        "transform_text": lambda enc, q: enc.transform_text(q),
        "text_words + transform_text_fields (evidence)": lambda enc, q: (
            enc.text_words(q) and enc.transform_text_fields(q, semantic=False)),
    }
    if after.semantic_:  # what the query row embeds: its text fields joined ("q. q" with name and description)
        embedded = {q: after.semantic_texts(pd.DataFrame([{f: q for f, kind in after.field_kinds_.items()
                                                              if kind == "text"}]))[0] for q in queries}
        calls["sentence embedding of the query (MiniLM) alone"] = lambda enc, q: enc.text_embedder.encode([embedded[q]])
    timed = {(label, name): ([], []) for label in calls for name in sides}
    with one_blas_thread():  # as recommend runs them
        for i, q in enumerate(queries):  # interleaved, as above
            for label, call in calls.items():
                for name in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
                    if label.startswith("sentence") and name != "after (fitted tables)":
                        continue  # the same model call on both sides
                    if hasattr(sides[name], "query_rows_"):  # no analysis left cached by the runs above
                        sides[name].query_rows_.clear_cache()
                    t, c = time.perf_counter(), time.process_time()
                    call(sides[name], q)
                    timed[label, name][0].append((time.perf_counter() - t) * 1e3)
                    timed[label, name][1].append((time.process_time() - c) * 1e3)
    for (label, name), (wall_ms, cpu_ms) in timed.items():
        if wall_ms:
            print(f"  {label:<48} {name:<28} wall {_summary(wall_ms)}")
            print(f"  {'':<48} {'':<28} CPU  {_summary(cpu_ms)}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
