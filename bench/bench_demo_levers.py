"""Lever ablation on the demo catalog: which image-side levers earn their place.

    python bench/bench_demo_levers.py [--cache DIR]

For each configuration: leave-one-out by sub_category (P@1, P@5 of image-only and the hybrid at its
best weight, and image-only P@5 of each product's photo as an upload, with bootstrap 95% intervals)
and multi-view recall@5 (image only) on the photo and the item path. Then the photo path's colour
sweep. Prints Markdown tables; the figures chose the defaults of ``HybridRecommender`` (see
docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import HybridRecommender, load_catalog  # noqa: E402
from recommender.evaluation.protocols import leave_one_out, multi_view  # noqa: E402

CONFIGS = {
    "plain Lite0": dict(flip_tta=False, semantic=0.0, dba_k=0),
    "+ flip-TTA": dict(flip_tta=True, semantic=0.0, dba_k=0),
    "+ semantic 0.5": dict(flip_tta=True, semantic=0.5, dba_k=0),
    "+ DBA k=2 (default)": dict(flip_tta=True, semantic=0.5, dba_k=2),
    "default, photo colour 0 (the old default)": dict(photo_colour_weight=0.0),
    "default + item colour 0.3": dict(colour_weight=0.3),
    "default + item colour 0.5": dict(colour_weight=0.5),
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
    print("| configuration | image P@1 | image P@5 | best w | hybrid P@1 | hybrid P@5 | photo P@5 "
          "| multi-view R@5 (photo) | multi-view R@5 (item) |")
    print("|---|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for name, levers in CONFIGS.items():
        rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=args.cache, **levers)
        loo = leave_one_out(catalog, "sub_category", ks=(1, 5), weights=weights, recommender=rec)
        mv = multi_view(catalog, views, ks=(1, 5),
                        recommender=HybridRecommender(backbone="efficientnet_lite0", cache_dir=args.cache, **levers))
        best = loo["best"]["method"]
        m = loo["methods"]
        print(f"| {name} | {ci(m['image']['P@1'])} | {ci(m['image']['P@5'])} | {loo['best']['weight']:g} | "
              f"{ci(m[best]['P@1'])} | {ci(m[best]['P@5'])} | {ci(m['photo']['P@5'])} | "
              f"{ci(mv['methods']['photo']['R@5'])} | {ci(mv['methods']['item']['R@5'])} |", flush=True)
    print(f"\n{len(CONFIGS)} configurations in {time.perf_counter() - t0:.0f} s "
          f"({loo['n_queries']} leave-one-out queries, {mv['n_queries']} multi-view queries each)")
    photo_colour_sweep(catalog, views, args.cache)


def photo_colour_sweep(catalog, views: Path, cache: Path) -> None:
    """The photo path's colour share: a photo query wants this product (multi-view R@5) and then
    products of its kind (leave-one-out P@5 of the photo uploaded); the default maximises their mean."""
    print("\n| photo colour share | multi-view R@5 (photo) | photo P@5, leave-one-out | mean |\n|---|---|---|---|")
    mv = multi_view(catalog, views, ks=(1, 5), recommender=HybridRecommender(backbone="efficientnet_lite0",
                                                                             cache_dir=cache))
    best = None
    for row in mv["colour_sweep"]:
        c = row["colour_weight"]
        rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=cache, photo_colour_weight=c)
        loo = leave_one_out(catalog, "sub_category", ks=(1, 5), weights=(0.7,), recommender=rec)
        r5, p5 = row["R@5"]["mean"], loo["methods"]["photo"]["P@5"]["mean"]
        print(f"| {c:g} | {ci(row['R@5'])} | {ci(loo['methods']['photo']['P@5'])} | {(r5 + p5) / 2:.3f} |", flush=True)
        best = max(best or (c, -1.0), (c, (r5 + p5) / 2), key=lambda t: t[1])
    print(f"\nbest photo colour share by the mean: {best[0]:g} (library default "
          f"{HybridRecommender().photo_colour_weight:g})")


if __name__ == "__main__":
    main()
