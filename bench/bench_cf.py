"""Customer recommendations on real interactions: anchors, the blend and its halves, side by side.

    python bench/bench_cf.py [--online-retail ../shared/data/online-retail]
                             [--movielens ../shared/data/movielens-small] [--skip-validation]

For each dataset: (1) a validation grid of the blend's two knobs (w_cf, trend weight) on a temporal
split carved from the *training* period only; (2) the temporal protocol on the real test period for the
anchors (popularity, item-kNN cosine and BM25, ALS, BPR), the blend at the library defaults and its
halves; (3) the cold-start protocol (10% of products held out of training). Every figure: mean over
customers with a bootstrap 95% interval and n; paired nDCG@10 differences against ALS. Prints Markdown.
MovieLens is read from its path and never copied into the project (licence).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.catalog.interactions import load_interactions  # noqa: E402
from recommender.catalog.loader import load_catalog  # noqa: E402
from recommender.evaluation.cf_protocols import (  # noqa: E402
    anchor_systems,
    evaluate_cold_start,
    evaluate_customers,
    temporal_split,
)
from recommender.features.metadata import MetadataEncoder  # noqa: E402
from recommender.ranking.blend import CustomerRecommender  # noqa: E402
from recommender.ranking.cf import CollaborativeFilter  # noqa: E402

ALS = "ALS (64 f, reg .05, 15 it)"
GRID_W = (0.6, 0.7, 0.8, 0.9)
GRID_TREND = (0.0, 0.3, 0.5, 0.7)


def ci(s: dict) -> str:
    return f"{s['mean']:.4f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]"


def blend(w: float | None = None, trend: float | None = None, **kw) -> CustomerRecommender:
    cf = CollaborativeFilter() if trend is None else CollaborativeFilter(trend_weight=trend)
    return CustomerRecommender(cf=cf, **kw) if w is None else CustomerRecommender(weight_cf=w, cf=cf, **kw)


def run(name: str, folder: Path, validate: bool) -> None:
    t0 = time.perf_counter()
    catalog = load_catalog(folder / "catalog.csv")
    interactions = load_interactions(folder / "interactions.csv.gz", catalog)
    content = MetadataEncoder().fit_transform(catalog.items)
    print(f"\n## {name}: {len(catalog)} products, {len(interactions)} interactions, "
          f"{len(interactions.users)} customers (loaded in {time.perf_counter() - t0:.1f} s)\n")
    if validate:
        train, _, _ = temporal_split(interactions)
        grid = {"ALS": anchor_systems()[ALS]}
        grid.update({f"w_cf {w} trend {t}": blend(w, t) for w, t in itertools.product(GRID_W, GRID_TREND)})
        res = evaluate_customers(catalog, train, grid, content=content, compare_to="ALS")
        p = res["protocol"]
        print(f"### validation (last 20% of the training period; n = {p['queries']} customers)\n")
        print("| system | nDCG@10 | vs ALS |\n|---|---|---|")
        for sys_name, entry in res["systems"].items():
            d = res["paired"].get(f"{sys_name} - ALS")
            rel = f"{d['mean_diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]" if d else ""
            print(f"| {sys_name} | {ci(entry['nDCG@10'])} | {rel} |")
        print(f"\n({time.perf_counter() - t0:.0f} s so far)")

    systems = dict(anchor_systems())
    systems["blend (defaults)"] = blend()
    systems["CF half: ALS + trend, no content (w_cf 1)"] = blend(1.0)
    systems["ALS + content, no trend"] = blend(trend=0.0)
    systems["content half only (w_cf 0)"] = blend(0.0)
    systems["blend, no short-history rule"] = blend(min_history=0)
    halves = [("blend (defaults)", "CF half: ALS + trend, no content (w_cf 1)"),
              ("blend (defaults)", "content half only (w_cf 0)"), ("blend (defaults)", "ALS + content, no trend")]
    res = evaluate_customers(catalog, interactions, systems, content=content, compare_to=ALS, extra_pairs=halves)
    p = res["protocol"]
    print(f"\n### test: temporal split (last 20% of interactions by time; cut "
          f"{time.strftime('%Y-%m-%d', time.gmtime(p['cutoff']))}); n = {p['queries']} customers\n")
    print("| system | P@10 | R@10 | nDCG@10 | MAP@10 | coverage | nDCG@10 vs ALS (paired) |")
    print("|---|---|---|---|---|---|---|")
    for sys_name, e in res["systems"].items():
        d = res["paired"].get(f"{sys_name} - {ALS}")
        rel = (f"{d['mean_diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"
               f" ({100 * d['mean_diff'] / res['systems'][ALS]['nDCG@10']['mean']:+.0f}%)") if d else ""
        print(f"| {sys_name} | {ci(e['P@10'])} | {ci(e['R@10'])} | {ci(e['nDCG@10'])} | {ci(e['MAP@10'])} "
              f"| {e['coverage']:.3f} | {rel} |")
    print("\nThe blend against its halves (paired nDCG@10 differences):\n")
    for a, b in halves:
        d = res["paired"][f"{a} - {b}"]
        pair = f"{a} - {b}"
        print(f"- {pair.replace(' - ', ' minus ')}: {d['mean_diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]")
    print(f"\n({time.perf_counter() - t0:.0f} s so far)")

    cold = evaluate_cold_start(catalog, interactions, {"ALS": anchor_systems()[ALS], "blend (defaults)": blend(),
                                                       "content only": blend(0.0)}, content=content)
    p = cold["protocol"]
    print(f"\n### cold start: {p['held_out_products']} products held out of training; n = {p['queries']} "
          "customers who bought one in the test period\n")
    print("| system | cold R@10 | cold P@10 |\n|---|---|---|")
    for sys_name, e in cold["systems"].items():
        print(f"| {sys_name} | {ci(e['cold R@10'])} | {ci(e['cold P@10'])} |")
    print(f"\n({name}: {time.perf_counter() - t0:.0f} s in all)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--online-retail", type=Path, default=Path("../shared/data/online-retail"))
    parser.add_argument("--movielens", type=Path, default=Path("../shared/data/movielens-small"))
    parser.add_argument("--skip-validation", action="store_true")
    parser.add_argument("--only", choices=["online-retail", "movielens"])
    args = parser.parse_args()
    for name, folder in (("online-retail", args.online_retail), ("movielens", args.movielens)):
        if args.only and args.only != name:
            continue
        if not (folder / "interactions.csv.gz").is_file():
            print(f"\n## {name}: skipped, {folder} has no interactions.csv.gz")
            continue
        run(name, folder, not args.skip_validation)


if __name__ == "__main__":
    main()
