"""The opt-in label projection on the demo catalog, scored out of fold (5-fold by product).

    python bench/bench_label_projection.py [--cache DIR]

Leave-one-out by sub_category; the projection is fitted on sub_category itself - the case it is for
(a catalog's own categories) and the one most at risk of leaking, so every query's image row comes
from a projection fitted without its fold. Per configuration: image-only and hybrid P@1 / P@5 (at
w = .7 and at the best w of the sweep), the paired-bootstrap difference to the default pipeline,
and multi-view recall@5 on the photo path. The (mix, C) grid picks on the same 89 queries it scores,
so the best row is optimistic; the default (mix .5, C 10) is a middle row, not the best one.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loo_common import ci, diff, hybrid_loo, parse_cache_args  # noqa: E402

from recommender import HybridRecommender, load_catalog  # noqa: E402
from recommender.evaluation.protocols import leaking_columns, multi_view  # noqa: E402
from recommender.features.projection import LabelProjection, out_of_fold_similarity  # noqa: E402

LABEL = "sub_category"
WEIGHTS = [round(w / 10, 1) for w in range(5, 11)]


def main() -> None:
    args = parse_cache_args(__doc__)
    catalog = load_catalog()
    exclude = sorted({LABEL, *leaking_columns(catalog, LABEL)})
    base = HybridRecommender(backbone="efficientnet_lite0", cache_dir=args.cache, exclude_fields=exclude,
                             label_projection=LABEL).fit(catalog)
    labels = base.projection_labels_
    meta = (base.metadata_matrix_ @ base.metadata_matrix_.T).toarray()
    dba, _ = base.unprojected_vectors_
    default = hybrid_loo(dba @ dba.T, meta, labels, WEIGHTS)
    rows = {"default pipeline (no projection)": default}
    for mix in (0.3, 0.5, 0.7, 1.0):
        for c in (1.0, 10.0, 100.0):
            sims = out_of_fold_similarity(LabelProjection(mix=mix, C=c), dba, labels, dba, dba, folds=5)
            rows[f"projection mix {mix:g}, C {c:g}"] = hybrid_loo(sims, meta, labels, WEIGHTS)

    print(f"leave-one-out by {LABEL}, {len(default[1.0]['P@1'])} queries; image side out of fold (5 folds)\n")
    print("| configuration | image P@1 | image P@5 | hybrid w=.7 P@1 | hybrid w=.7 P@5 | w=.7 P@5 − default "
          "| best w | best P@5 | best P@5 − default best |")
    print("|---|---|---|---|---|---|---|---|---|")
    best_default = max(WEIGHTS, key=lambda w: default[w]["P@5"].mean())
    for name, pw in rows.items():
        best = max(WEIGHTS, key=lambda w: pw[w]["P@5"].mean())
        print(f"| {name} | {ci(pw[1.0]['P@1'])} | {ci(pw[1.0]['P@5'])} | {ci(pw[0.7]['P@1'])} | "
              f"{ci(pw[0.7]['P@5'])} | {diff(pw[0.7]['P@5'], default[0.7]['P@5'])} | {best:g} | "
              f"{ci(pw[best]['P@5'])} | {diff(pw[best]['P@5'], default[best_default]['P@5'])} |", flush=True)

    print("\n| multi-view, photo path | R@5 |\n|---|---|")
    views = catalog.root / "views.csv"
    for name, params in (("default", {}), ("projection mix .5 (C 10)", {"label_projection": LABEL})):
        mv = multi_view(catalog, views, ks=(1, 5), recommender=HybridRecommender(
            backbone="efficientnet_lite0", cache_dir=args.cache, **params))
        s = mv["methods"]["photo"]["R@5"]
        print(f"| {name} | {s['mean']:.3f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] |", flush=True)


if __name__ == "__main__":
    main()
