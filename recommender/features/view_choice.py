"""``features="auto"``: choose the image feature view (pooled head or spatial grid) from the catalog's own labels.

The pooled head (``"gap"``) is translation-invariant and wins on real photos (demo hybrid P@5 .762 vs
.602 with the grid); the ``block10_add`` grid (``"grid"``) keeps *where* things are and wins on centred,
aligned packshots (Fashion-MNIST P@10 .812 -> .858). Neither is right everywhere, so, like the
shop-photo adapter, the choice is learned from the shop's own labels:

1. A **label column**: the first of :data:`LABEL_COLUMNS` (finest first) where at least
   :data:`MIN_CLASSES` classes have at least :data:`MIN_CLASS_SIZE` products with an image, and those
   products are most (>= half) of the labelled ones. No such column: ``gap``.
2. A **bounded sample**: at most :data:`SAMPLE_SIZE` of those products (seeded, in catalog order), so
   the choice costs the same at 1M products as at 10k. Both views of the sample come from ONE forward
   pass (:class:`TwoViewEmbedder`) and are written to both views' caches; only the chosen view is
   embedded for the rest of the catalog (the sample's vectors are reused from the cache).
3. **Leave-one-out P@10 by that label** on the sample, image side only (the façade's semantic and
   flip settings, nothing after them). ``grid`` is kept only when its paired bootstrap 95% interval
   over the sample's queries lies above 0; otherwise ``gap`` (the safe default for unaligned photos).

Only catalogs of at most :data:`GRID_MAX_PRODUCTS` products with an image are considered for the grid.
Its vectors are 6,488-d against the pooled head's 2,280 (2.8x the float32 a fit holds, the bfloat16 file
and the index), and a fit holds them as float32: at 100k products 2.6 GB, over the scale issue's 1 GB
warm-fit and 2 GB build budgets, and ~10% fewer images/s in the build (105 vs 115, docs/index.md).
Past the cap ``auto`` keeps ``gap`` without sampling; ``features="grid"`` still forces it. The cap is
the project's small-catalog tier (the exact index and the MiniLM text side stop at the same size).

The decision, its figures and its reason are in ``HybridRecommender.features_note_``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recommender.catalog.loader import Catalog, split_values
from recommender.errors import RecommenderError
from recommender.features.embedders import ImageEmbedder
from recommender.index.exact import l2_normalise
from recommender.store.artifacts import ArtifactStore, StoredEmbeddings

log = logging.getLogger(__name__)
FEATURE_MODES = ("auto", "gap", "grid")
LABEL_COLUMNS = ("sub_category", "category")  # finest first: the first that qualifies is used
MIN_CLASS_SIZE = 5  # products a class needs to count (a query then has >= 4 relevant neighbours)
MIN_CLASSES = 2
SAMPLE_SIZE = 2000
CHOICE_K = 10
BOOTSTRAP = 2000
GRID_BACKBONE = "efficientnet_lite0"
GRID_MAX_PRODUCTS = 20_000  # products with an image; larger catalogs keep gap (docstring: the memory budget)


@dataclass
class FeatureChoice:
    """The view the catalog is embedded with, a one-line reason, and the figures behind it."""

    features: str
    note: str
    scores: dict | None = None  # {"label", "n", "k", "gap", "grid", "diff": [lo, hi]} when measured


class TwoViewEmbedder(ImageEmbedder):
    """An :class:`ImageEmbedder` returning both views of each image from one forward pass:
    ``[gap vector | grid vector]``, each L2-normalised on its own (split with :meth:`split`)."""

    def _views(self) -> tuple[str, ...]:
        return ("gap", "grid")

    def fit(self, X: object = None, y: object = None) -> TwoViewEmbedder:
        super().fit()
        self.view_dims_ = (self.view_embedder("gap").identity().feature_dim,
                           self.view_embedder("grid").identity().feature_dim)
        self.feature_dim_ = sum(self.view_dims_)
        return self

    def view_embedder(self, features: str) -> ImageEmbedder:
        """The single-view embedder (same settings) whose cache a view's vectors belong to."""
        return ImageEmbedder(**{**self.get_params(), "features": features})

    def split(self, both: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(gap, grid)`` rows, each re-normalised: ``embed_arrays`` (and flip-TTA) normalise the joined
        row, which scales each half by its own factor; per half the result is the single view's vector."""
        cut = self.view_dims_[0]
        return l2_normalise(both[:, :cut]), l2_normalise(both[:, cut:])


def qualified_labels(catalog: Catalog, rows: np.ndarray) -> tuple[str, np.ndarray] | str:
    """``(column, labels)`` for the first qualifying column (labels "" outside a qualified class), or the
    reason none qualifies. ``rows``: products with an image."""
    reasons = []
    for col in LABEL_COLUMNS:
        if col not in catalog.items.columns:
            continue
        labels = np.array(["|".join(split_values(v)) for v in catalog.items[col].to_numpy()[rows]], dtype=object)
        labelled = labels != ""
        values, counts = np.unique(labels[labelled], return_counts=True)
        big = set(values[counts >= MIN_CLASS_SIZE])
        in_big = np.array([lab in big for lab in labels], dtype=bool)
        if len(big) >= MIN_CLASSES and in_big.sum() * 2 >= labelled.sum():
            return col, np.where(in_big, labels, "")
        reasons.append(f"{col}: {len(big)} class(es) of >= {MIN_CLASS_SIZE} products covering "
                       f"{int(in_big.sum())}/{int(labelled.sum())} labelled")
    return "; ".join(reasons) or f"no label column ({', '.join(LABEL_COLUMNS)})"


def loo_precision(vectors: np.ndarray, labels: np.ndarray, k: int = CHOICE_K, block: int = 512) -> np.ndarray:
    """Per-query leave-one-out P@k: each row with a label against every other row, relevant = same label."""
    queries = np.flatnonzero(labels != "")
    out = np.empty(len(queries))
    k = min(k, len(vectors) - 1)
    for start in range(0, len(queries), block):
        q = queries[start:start + block]
        sim = vectors[q] @ vectors.T
        sim[np.arange(len(q)), q] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        out[start:start + len(q)] = (labels[top] == labels[q][:, None]).mean(axis=1)
    return out


def paired_interval(diff: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``diff``."""
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(BOOTSTRAP)])
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def fill_both_views(catalog: Catalog, hashes: list[str | None], two: TwoViewEmbedder, cache_dir: Path) -> int:
    """Embed (one forward pass) the images of ``catalog`` missing from either view's cache and append them
    to both caches. Returns how many were embedded; unreadable images are left to the normal build."""
    from recommender.store.build import decoded_batches

    store = ArtifactStore(cache_dir)
    idents = [two.view_embedder(v).identity() for v in ("gap", "grid")]
    stored = [store.load(i.folder, i.name, i.preprocess, i.weights, i.feature_dim)
              or StoredEmbeddings(i.folder, i.name, i.feature_dim, i.preprocess, i.weights) for i in idents]
    todo: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h is not None and h not in todo and any(h not in s.vectors and h not in s.failures for s in stored):
            todo[h] = i
    if not todo:
        return 0
    if not hasattr(two, "view_dims_"):
        two.fit()
    keys = list(todo)
    items, rows = [], []
    for batch in decoded_batches([catalog.image_path(todo[h]) for h in keys], two.input_size_, two.batch_size):
        ok = [(j, px) for j, px, _ in batch if px is not None]
        if ok:
            rows.append(two.embed_arrays(np.stack([px for _, px in ok])))
            items += [{"sha256": keys[j], "id": str(catalog.ids[todo[keys[j]]]),
                       "image": str(catalog.items["image"].iat[todo[keys[j]]])} for j, _ in ok]
    if items:
        for s, part in zip(stored, two.split(np.concatenate(rows)), strict=True):
            new = [j for j, item in enumerate(items) if item["sha256"] not in s.vectors]  # no duplicate entries
            s.catalog_fingerprint = catalog.fingerprint()
            try:
                store.append(s, [items[j] for j in new], np.ascontiguousarray(part[new]))
                store.compact(s)
            except OSError as exc:  # a read-only cache: the normal build embeds the chosen view again
                log.warning("feature choice: cache %s not written (%s)", store.folder(s.folder), exc)
    return len(items)


def choose_features(mode: str, catalog: Catalog, hashes: list[str | None],
                    make_embedder: Callable[[str], ImageEmbedder], cache_dir: Path | str) -> FeatureChoice:
    """Apply the ``auto`` rule (module docstring); ``gap``/``grid`` are taken as given."""
    from recommender.store.build import build_embeddings

    if mode not in FEATURE_MODES:
        raise RecommenderError(f"features must be one of {', '.join(FEATURE_MODES)}, got {mode!r}")
    if mode != "auto":
        return FeatureChoice(mode, f"features {mode} (requested)")
    gap = make_embedder("gap")
    if gap.identity().name != GRID_BACKBONE:
        return FeatureChoice("gap", f"features gap (auto): grid is defined for {GRID_BACKBONE} only")
    rows = np.flatnonzero([h is not None for h in hashes])
    if len(rows) > GRID_MAX_PRODUCTS:
        return FeatureChoice("gap", f"features gap (auto): {len(rows):,} products with an image, over the "
                             f"{GRID_MAX_PRODUCTS:,} up to which the grid view (6,488-d) is considered: "
                             "its memory and build time at scale; features='grid' forces it")
    found = qualified_labels(catalog, rows)
    if isinstance(found, str):
        return FeatureChoice("gap", f"features gap (auto): no label to choose by ({found})")
    column, labels = found
    pool = rows[labels != ""]
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(pool, SAMPLE_SIZE, replace=False)) if len(pool) > SAMPLE_SIZE else pool
    sub = _subset(catalog, sample)
    sub_hashes = [hashes[i] for i in sample]
    two = TwoViewEmbedder(**gap.get_params())
    embedded = fill_both_views(sub, sub_hashes, two, Path(cache_dir))  # the build report counts only the rest
    per_view = {}
    for view in ("gap", "grid"):
        vecs, ok, _, _ = build_embeddings(sub, make_embedder(view), cache_dir, hashes=sub_hashes)
        per_view[view] = (vecs, ok)
    ok = per_view["gap"][1] & per_view["grid"][1]
    sample_labels = np.where(ok, labels[np.searchsorted(rows, sample)], "")
    p = {v: loo_precision(per_view[v][0][ok], sample_labels[ok]) for v in per_view}
    lo, hi = paired_interval(p["grid"] - p["gap"])
    scores = {"label": column, "n": len(p["gap"]), "k": CHOICE_K, "gap": round(float(p["gap"].mean()), 4),
              "grid": round(float(p["grid"].mean()), 4), "diff": [round(lo, 4), round(hi, 4)], "embedded": embedded}
    figures = (f"leave-one-out P@{CHOICE_K} by {column} on {scores['n']} sampled products: grid {scores['grid']:.3f} "
               f"vs gap {scores['gap']:.3f}, difference {lo:+.3f}..{hi:+.3f}")
    cost = f"; {embedded} sampled image(s) embedded in both views" if embedded else ""
    if lo > 0:
        return FeatureChoice("grid", f"features grid (auto): {figures}{cost}", scores)
    why = "includes 0" if hi > 0 else "grid worse"
    return FeatureChoice("gap", f"features gap (auto): {figures} ({why}){cost}", scores)


def _subset(catalog: Catalog, rows: np.ndarray) -> Catalog:
    from recommender.catalog.loader import catalog_from_frame

    frame = catalog.items.iloc[rows].reset_index(drop=True)
    return catalog_from_frame(frame, catalog.root, catalog.source, catalog.image_roots)

