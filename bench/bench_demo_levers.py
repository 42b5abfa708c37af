"""Lever ablation on the demo catalog: which image-side levers earn their place.

    python bench/bench_demo_levers.py [--cache DIR]

For each configuration: leave-one-out by sub_category (P@1, P@5 of image-only and the hybrid at its
best weight, with bootstrap 95% intervals) and multi-view recall@5 (image only). Prints a Markdown
table; the figures chose the defaults of ``HybridRecommender`` (see docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import HybridRecommender, load_catalog  # noqa: E402
from recommender.evaluate import leave_one_out, multi_view  # noqa: E402

CONFIGS = {
    "plain Lite0": dict(flip_tta=False, semantic=0.0, dba_k=0),
    "+ flip-TTA": dict(flip_tta=True, semantic=0.0, dba_k=0),
    "+ semantic 0.5": dict(flip_tta=True, semantic=0.5, dba_k=0),
    "+ DBA k=2 (default)": dict(flip_tta=True, semantic=0.5, dba_k=2),
    "default + colour 0.3": dict(flip_tta=True, semantic=0.5, dba_k=2, colour_weight=0.3),
    "default + colour 0.5": dict(flip_tta=True, semantic=0.5, dba_k=2, colour_weight=0.5),
    "plain + DBA k=2": dict(flip_tta=False, semantic=0.0, dba_k=2),
    "plain grid features": dict(features="grid", flip_tta=False, semantic=0.0, dba_k=0),
    "default + grid features": dict(features="grid"),
}


def ci(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recommender-bench-cache")
    args = ap.parse_args()
    catalog = load_catalog()
    views = catalog.root / "views.csv"
    weights = [round(w / 10, 1) for w in range(11)]
    print("| configuration | image P@1 | image P@5 | best w | hybrid P@1 | hybrid P@5 | multi-view R@5 |")
    print("|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for name, levers in CONFIGS.items():
        rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=args.cache, **levers)
        loo = leave_one_out(catalog, "sub_category", ks=(1, 5), weights=weights, recommender=rec)
        mv = multi_view(catalog, views, ks=(1, 5),
                        recommender=HybridRecommender(backbone="efficientnet_lite0", cache_dir=args.cache, **levers))
        best = loo["best"]["method"]
        m = loo["methods"]
        print(f"| {name} | {ci(m['image']['P@1'])} | {ci(m['image']['P@5'])} | {loo['best']['weight']:g} | "
              f"{ci(m[best]['P@1'])} | {ci(m[best]['P@5'])} | {ci(mv['methods']['image']['R@5'])} |", flush=True)
    print(f"\n{len(CONFIGS)} configurations in {time.perf_counter() - t0:.0f} s "
          f"({loo['n_queries']} leave-one-out queries, {mv['n_queries']} multi-view queries each)")


if __name__ == "__main__":
    main()
