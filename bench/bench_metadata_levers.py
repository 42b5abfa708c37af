"""Metadata text weighting on the demo catalog: TF-IDF (the default) against BM25.

    python bench/bench_metadata_levers.py [--cache DIR]

Leave-one-out by sub_category (the label and the columns that give it away are excluded from the
features, as in ``python -m recommender evaluate``). First metadata-only P@1 / P@5 for TF-IDF and a
grid of BM25 (k1, b), each with its paired-bootstrap difference to TF-IDF; then the hybrid at the
default weight and at its best weight with TF-IDF and with BM25 at the default (k1 = 1.2, b = .75).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loo_common import ci, diff, hybrid_loo, parse_cache_args  # noqa: E402

from recommender import HybridRecommender, load_catalog  # noqa: E402
from recommender.evaluation.protocols import labels_of, leaking_columns, leave_one_out  # noqa: E402
from recommender.features.metadata import MetadataEncoder  # noqa: E402

LABEL = "sub_category"
GRID = [(k1, b) for k1 in (0.5, 1.2, 2.0) for b in (0.0, 0.5, 0.75, 1.0)]


def metadata_only(catalog, encoder: MetadataEncoder, image_sims: np.ndarray) -> dict[str, np.ndarray]:
    m = encoder.fit_transform(catalog.items)
    labels = np.array(["|".join(v) for v in labels_of(catalog, LABEL)], dtype=object)
    return hybrid_loo(image_sims, (m @ m.T).toarray(), labels, [0.0])[0.0]


def main() -> None:
    args = parse_cache_args(__doc__)
    catalog = load_catalog()
    exclude = sorted({LABEL, *leaking_columns(catalog, LABEL)})
    image_sims = HybridRecommender(backbone="efficientnet_lite0", cache_dir=args.cache).fit(
        catalog).image_similarity_matrix()
    t0 = time.perf_counter()
    base = metadata_only(catalog, MetadataEncoder(exclude=exclude), image_sims)
    print(f"metadata-only, leave-one-out by {LABEL} ({len(base['P@1'])} queries; excluded: {', '.join(exclude)})\n")
    print("| text weighting | P@1 | P@5 | P@1 − TF-IDF | P@5 − TF-IDF |\n|---|---|---|---|---|")
    print(f"| TF-IDF (default) | {ci(base['P@1'])} | {ci(base['P@5'])} | | |")
    for k1, b in GRID:
        pq = metadata_only(catalog, MetadataEncoder(exclude=exclude, text_weighting="bm25", bm25_k1=k1, bm25_b=b),
                           image_sims)
        print(f"| BM25 k1={k1:g} b={b:g} | {ci(pq['P@1'])} | {ci(pq['P@5'])} | "
              f"{diff(pq['P@1'], base['P@1'])} | {diff(pq['P@5'], base['P@5'])} |")
    print(f"\n({time.perf_counter() - t0:.1f} s)\n")

    weights = [round(w / 10, 1) for w in range(11)]
    print("| text weighting | metadata P@5 | hybrid w=.7 P@1 | hybrid w=.7 P@5 | best w | best hybrid P@5 |")
    print("|---|---|---|---|---|---|")
    for name in ("tfidf", "bm25"):
        rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=args.cache, text_weighting=name)
        loo = leave_one_out(catalog, LABEL, ks=(1, 5), weights=weights, recommender=rec)
        m, best = loo["methods"], loo["best"]
        print(f"| {name} | {ci(m['metadata']['P@5'])} | {ci(m['hybrid_w0.7']['P@1'])} | "
              f"{ci(m['hybrid_w0.7']['P@5'])} | {best['weight']:g} | {ci(m[best['method']]['P@5'])} |", flush=True)


if __name__ == "__main__":
    main()
