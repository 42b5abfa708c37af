"""CLI for customers: ``recommend --user ID`` and ``evaluate --interactions FILE``.

:func:`register` adds the options to the existing ``recommend`` and ``evaluate`` subcommands and routes
to the functions here when they are given; everything else goes on to the original commands. Thin over
:mod:`recommender.ranking.blend` and :mod:`recommender.evaluation.cf_protocols`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recommender.errors import RecommenderError

INTERACTION_FILES = ("interactions.parquet", "interactions.csv", "interactions.csv.gz")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``--user``/``--interactions``/``--weight-cf``/``--include-bought`` to ``recommend`` and
    ``--interactions``/``--cold-fraction`` to ``evaluate``."""
    rec = sub.choices["recommend"]
    rec.add_argument("--user", help="id of a customer: recommendations from their history (needs interactions)")
    rec.add_argument("--interactions", type=Path, help="purchases/ratings file (default: interactions.parquet, "
                     ".csv or .csv.gz beside the catalog)")
    rec.add_argument("--weight-cf", type=float, help="with --user: behaviour (CF) weight in [0, 1]; "
                     "1 = what similar customers bought, 0 = like what they bought (default 0.8)")
    rec.add_argument("--include-bought", action="store_true", help="with --user: also show products already bought")
    _route(rec, "user", cmd_recommend_user)
    ev = sub.choices["evaluate"]
    ev.add_argument("--interactions", type=Path, help="evaluate customer recommendations on this purchases/"
                    "ratings file instead: temporal split (last 20%% of time as test), anchors vs the blend, "
                    "cold start")
    ev.add_argument("--cold-fraction", type=float, default=0.1, help="with --interactions: share of products "
                    "held out of training in the cold-start protocol (default 0.1)")
    _route(ev, "interactions", cmd_evaluate_interactions)


def _route(parser: argparse.ArgumentParser, option: str, handler) -> None:
    original = parser.get_default("func")

    def run(args) -> int:
        return handler(args) if getattr(args, option, None) else original(args)

    parser.set_defaults(func=run)


def _interactions_path(args) -> Path:
    if args.interactions:
        return args.interactions
    folder = Path(args.catalog).resolve().parent
    for name in INTERACTION_FILES:
        if (folder / name).is_file():
            return folder / name
    raise RecommenderError(f"no interactions file beside {args.catalog} (looked for {', '.join(INTERACTION_FILES)});"
                           " give --interactions FILE")


def cmd_recommend_user(args) -> int:
    from recommender.catalog.interactions import load_interactions
    from recommender.catalog.loader import load_catalog
    from recommender.ranking.blend import CustomerRecommender
    from recommender.ranking.hybrid import Filters

    if args.item or args.image or args.text:
        raise RecommenderError("give --user alone, or --item/--image/--text: not both")
    if args.weight_cf is not None and not 0.0 <= args.weight_cf <= 1.0:
        raise RecommenderError(f"--weight-cf must be between 0 and 1, got {args.weight_cf}")
    catalog = load_catalog(args.catalog)
    interactions = load_interactions(_interactions_path(args), catalog)
    rec = CustomerRecommender().fit(catalog, interactions)
    filters = Filters(category=args.category, sub_category=args.sub_category, brand=args.brand,
                      colour=args.colour, price_min=args.price_min, price_max=args.price_max)
    result = rec.recommend(args.user, k=args.k, weight_cf=args.weight_cf, filters=filters,
                           exclude_bought=not args.include_bought)
    if args.json:
        out = result.to_dict()
        for row, r in zip(out["results"], result.items, strict=True):
            row.update(cf_score=round(r.cf_score, 6), cf_contribution=round(r.cf_contribution, 6),
                       because=r.because)
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"{result.query} - CF weight {result.weight:.2f}, {result.n_candidates} candidates")
    for note in result.notes:
        print(f"note: {note}")
    if not result.items:
        print(f"no results: {result.empty_reason}")
        return 0
    for rank, r in enumerate(result.items, 1):
        print(f"{rank:>3}  {r.id:<10} {r.name[:45]:<45} {r.score:.3f}  (cf {r.cf_contribution:.2f} + content "
              f"{r.metadata_contribution:.2f})  {r.why()}")
    return 0


def cmd_evaluate_interactions(args) -> int:
    from recommender.catalog.interactions import load_interactions
    from recommender.catalog.loader import load_catalog
    from recommender.evaluation.cf_protocols import anchor_systems, evaluate_cold_start, evaluate_customers
    from recommender.features.metadata import MetadataEncoder
    from recommender.ranking.blend import CustomerRecommender

    catalog = load_catalog(args.catalog)
    interactions = load_interactions(args.interactions, catalog)
    content = MetadataEncoder().fit_transform(catalog.items)
    k = 10 if 10 in args.k else max(args.k)
    anchors = anchor_systems()
    best_anchor = "ALS (64 f, reg .05, 15 it)"
    systems = {**anchors, "blend (defaults)": CustomerRecommender()}
    print(f"evaluating {len(systems)} systems on {len(interactions)} interactions...", file=sys.stderr)
    results = {"temporal": evaluate_customers(catalog, interactions, systems, k=k, content=content,
                                              compare_to=best_anchor)}
    results["cold_start"] = evaluate_cold_start(
        catalog, interactions, {best_anchor: anchors[best_anchor], "blend (defaults)": CustomerRecommender()},
        k=k, cold_fraction=args.cold_fraction, content=content)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0
