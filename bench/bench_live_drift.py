"""Metadata quality as the vocabulary drifts under live updates: frozen TF-IDF vocabulary vs re-fitted.

A catalog is fitted on a random ``--fitted`` share of its products; the rest arrive through
``upsert``. Metadata-only leave-one-out by a label (the label and its hierarchy excluded from the
features, as in ``evaluate``): P@5 [95% bootstrap interval] for
- ``full fit``: every product present at fit (the reference);
- ``frozen``: the late products encoded with the early vocabulary (``refit_fraction`` never reached);
- ``refitted``: the same, then the drift threshold crossed (the default behaviour past 20%).

    python bench/bench_live_drift.py                                     # demo, sub_category
    python bench/bench_live_drift.py --catalog ../shared/data/grocery/catalog.csv --label category
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import HybridRecommender, load_catalog  # noqa: E402
from recommender.catalog.loader import DEMO_CATALOG  # noqa: E402
from recommender.evaluation.metrics import summarise  # noqa: E402
from recommender.evaluation.protocols import leaking_columns  # noqa: E402


def metadata_p5(rec: HybridRecommender, label: str) -> dict:
    items = rec.catalog_.items
    live = np.flatnonzero(rec.alive_)
    labels = items[label].to_numpy()[live]
    m = rec.metadata_matrix_[live]
    sim = (m @ m.T).toarray()
    np.fill_diagonal(sim, -np.inf)
    p5 = []
    for i in range(len(live)):
        if labels[i] == "" or (labels == labels[i]).sum() < 2:
            continue
        top = np.lexsort((np.arange(len(live)), -sim[i]))[:5]
        p5.append(float(np.mean(labels[top] == labels[i])))
    return summarise(p5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", type=Path, default=DEMO_CATALOG)
    ap.add_argument("--label", default="sub_category")
    ap.add_argument("--fitted", type=float, default=0.5)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/bench-drift-cache"))
    args = ap.parse_args()
    catalog = load_catalog(args.catalog)
    exclude = sorted({args.label, *leaking_columns(catalog, args.label)})
    rng = np.random.default_rng(0)
    early = np.zeros(len(catalog), dtype=bool)
    early[rng.permutation(len(catalog))[:int(args.fitted * len(catalog))]] = True
    from recommender.catalog.loader import catalog_from_frame
    from recommender.live import _blank_missing_prices

    def make(refit_fraction: float) -> HybridRecommender:
        return HybridRecommender(cache_dir=args.cache, exclude_fields=exclude, refit_fraction=refit_fraction)

    rows = {"full fit": make(0.2).fit(catalog)}
    first = catalog_from_frame(_blank_missing_prices(catalog.items[early]), catalog.root, catalog.source)
    frozen = make(1e9).fit(first)
    frozen.upsert(catalog.items[~early])
    rows["frozen"] = frozen
    refit = make(1e9).fit(first)
    refit.upsert(catalog.items[~early])
    refit.refit_fraction = 0.0
    refit._maybe_refit_metadata(0)
    rows["refitted"] = refit
    print(f"{args.catalog} label={args.label}: {early.sum()} products fitted, {(~early).sum()} upserted")
    for name, rec in rows.items():
        s = metadata_p5(rec, args.label)
        print(f"  {name:9s} metadata-only P@5 {s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] n={s['n']}")


if __name__ == "__main__":
    main()
