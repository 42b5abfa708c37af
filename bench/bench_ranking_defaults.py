"""Choose ranking defaults on more than one catalog: demo leave-one-out and grocery photo -> product.

For each configuration of the image pipeline (DBA off / on, ...) prints, side by side in one run:
- demo: leave-one-out by ``sub_category`` (hybrid at the default weight, image alone, photo path), P@1/P@5;
- grocery (``--grocery``, default ``../shared/data/grocery``): every ``split=val`` shop photo uploaded through
  ``recommend(image=...)``; its product must come first: R@1, R@5 (= hit rate);
- the largest image cosine between two demo products with *different* photos (1.000 = made identical).
Each figure: mean [95% bootstrap interval], n queries.

    python bench/bench_ranking_defaults.py            # all configurations
    python bench/bench_ranking_defaults.py --only off new
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import HybridRecommender, load_catalog  # noqa: E402
from recommender.catalog.loader import DEMO_CATALOG  # noqa: E402
from recommender.evaluation.metrics import summarise  # noqa: E402
from recommender.evaluation.protocols import leave_one_out  # noqa: E402

CONFIGS = {
    "off": {"dba_k": 0},
    "old": {"dba_k": 2, "dba_alpha": 0.0, "dba_mix": 2.0},  # the equal-weight mean of issue 9.1
    "new": {"dba_k": 5, "dba_alpha": 3.0, "dba_mix": 0.5},
    "new_k2": {"dba_k": 2, "dba_alpha": 3.0, "dba_mix": 0.5},
    "new_m1": {"dba_k": 5, "dba_alpha": 3.0, "dba_mix": 1.0},
}


def fmt(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]"


def max_distinct_cosine(rec: HybridRecommender) -> float:
    digests = [hashlib.sha256(rec.catalog_.image_path(i).read_bytes()).hexdigest()
               for i in range(len(rec.catalog_))]
    v = rec.image_vectors_
    sim = v @ v.T
    same = np.array([[a == b for b in digests] for a in digests])
    return float(sim[~same].max())


def grocery_photo(rec_kwargs: dict, grocery: Path, cache: Path, split: str) -> dict:
    rec = HybridRecommender(cache_dir=cache / "grocery", **rec_kwargs).fit(load_catalog(grocery / "catalog.csv"))
    queries = pd.read_csv(grocery / "queries.csv", dtype=str)
    queries = queries[queries["split"] == split]
    r1, r5 = [], []
    for path, pid in zip(queries["image"], queries["item_id"], strict=True):
        ids = rec.recommend(image=grocery / path, k=5).ids
        r1.append(float(ids[:1] == [pid]))
        r5.append(float(pid in ids))
    return {"R@1": summarise(r1), "R@5": summarise(r5), "n": len(r1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grocery", type=Path, default=Path("../shared/data/grocery"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/bench-ranking-cache"))
    ap.add_argument("--only", nargs="*", default=list(CONFIGS))
    args = ap.parse_args()
    demo = load_catalog(DEMO_CATALOG)
    rows = []
    for name in args.only:
        kw = CONFIGS[name]
        t0 = time.perf_counter()
        rec = HybridRecommender(cache_dir=args.cache / "demo", **kw)
        loo = leave_one_out(demo, "sub_category", ks=(1, 5), weights=(rec.weight,), recommender=rec)
        hybrid = loo["methods"][f"hybrid_w{rec.weight:g}"]
        row = {"config": name, **{k: str(v) for k, v in kw.items()},
               "demo hybrid P@5": fmt(hybrid["P@5"]), "demo image P@5": fmt(loo["methods"]["image"]["P@5"]),
               "demo photo P@5": fmt(loo["methods"]["photo"]["P@5"]),
               "max cos distinct": f"{max_distinct_cosine(rec.fit(demo)):.4f}"}
        if args.grocery.exists():
            g = grocery_photo(kw, args.grocery, args.cache, args.split)
            row.update({f"grocery {args.split} R@1": fmt(g["R@1"]), f"grocery {args.split} R@5": fmt(g["R@5"]),
                        "grocery n": g["n"]})
        row["seconds"] = f"{time.perf_counter() - t0:.0f}"
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"demo n queries: {loo['n_queries']}")


if __name__ == "__main__":
    main()
