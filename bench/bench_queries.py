"""Latency of the library calls the app and CLI make, on the demo catalog (2-core CPU).

    python bench/bench_queries.py [--repeat 20]

Prints: package import, fit with a warm cache (no TensorFlow), first photo query (loads the model),
and the median of repeated item / photo / text queries, with and without filters and diversity.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
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
        t, _ = timed(fn, args.repeat)
        print(f"{name:<36}{t * 1000:8.1f} ms (median of {args.repeat})")


if __name__ == "__main__":
    main()
