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

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import HybridRecommender, load_catalog  # noqa: E402
from recommender.evaluate import leaking_columns, multi_view, per_query_metrics  # noqa: E402
from recommender.metrics import paired_bootstrap_diff, summarise  # noqa: E402
from recommender.projection import LabelProjection, out_of_fold_similarity  # noqa: E402
from recommender.ranker import HybridRanker  # noqa: E402

LABEL = "sub_category"
WEIGHTS = [round(w / 10, 1) for w in range(5, 11)]


def ci(x: np.ndarray) -> str:
    s = summarise(x)
    return f"{s['mean']:.3f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"


def diff(a: np.ndarray, b: np.ndarray) -> str:
    d = paired_bootstrap_diff(a, b)
    return f"{d['mean_diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def per_weight(image_sims: np.ndarray, meta_sims: np.ndarray, labels: np.ndarray) -> dict[float, dict]:
    """Per-query P@1 / P@5 of the hybrid at each weight, ranked as the evaluate command ranks."""
    ranker, n = HybridRanker(), len(labels)
    queries = [i for i in range(n) if labels[i] and (labels == labels[i]).sum() > 1]
    out = {}
    for w in WEIGHTS:
        ranked, relevant, n_rel = [], [], []
        for i in queries:
            cand = np.ones(n, dtype=bool)
            cand[i] = False
            pos = ranker.rank(image_sims[i], meta_sims[i], 5, cand, w).positions
            ranked.append(pos)
            relevant.append(labels[pos] == labels[i])
            n_rel.append(int((labels == labels[i]).sum()) - 1)
        out[w] = per_query_metrics(ranked, relevant, n_rel, (1, 5))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recommender-bench-cache")
    args = ap.parse_args()
    catalog = load_catalog()
    exclude = sorted({LABEL, *leaking_columns(catalog, LABEL)})
    base = HybridRecommender(backbone="efficientnet_lite0", cache_dir=args.cache, exclude_fields=exclude,
                             label_projection=LABEL).fit(catalog)
    labels = base.projection_labels_
    meta = (base.metadata_matrix_ @ base.metadata_matrix_.T).toarray()
    dba, _ = base.unprojected_vectors_
    default = per_weight(dba @ dba.T, meta, labels)
    rows = {"default pipeline (no projection)": default}
    for mix in (0.3, 0.5, 0.7, 1.0):
        for c in (1.0, 10.0, 100.0):
            sims = out_of_fold_similarity(LabelProjection(mix=mix, C=c), dba, labels, dba, dba, folds=5)
            rows[f"projection mix {mix:g}, C {c:g}"] = per_weight(sims, meta, labels)

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
