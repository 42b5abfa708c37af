"""The hybrid recommender: catalog -> features -> indexes -> ranker, behind one ``recommend`` call.

The CLI, the Streamlit app and (later) the API are thin shells over :class:`HybridRecommender`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.base import BaseEstimator

from recommender.catalog.loader import ATTRIBUTE_COLUMNS, Catalog, load_catalog, split_values
from recommender.errors import QueryError, RecommenderError
from recommender.features.embedders import ColourEmbedder, ImageEmbedder, resolve_backbone
from recommender.features.images import ImageSource, open_image, pad_to_square
from recommender.features.metadata import MetadataEncoder
from recommender.features.postprocess import database_side_augmentation
from recommender.features.projection import LabelProjection, out_of_fold_similarity
from recommender.index.exact import ExactIndex
from recommender.ranking.hybrid import Filters, HybridRanker, Ranking
from recommender.ranking.mmr import mmr_rerank
from recommender.ranking.results import Recommendation, Recommendations, describe_attributes
from recommender.store.build import BuildReport, Progress, build_embeddings, image_hashes

log = logging.getLogger(__name__)
DEFAULT_WEIGHT = 0.7
DEFAULT_PHOTO_COLOUR_WEIGHT = 0.3
PROJECTION_FOLDS = 5  # folds for out-of-fold similarities when a label projection is evaluated
_EMBEDDER_LOCK = threading.Lock()


class HybridRecommender(BaseEstimator):
    """Recommend catalog products by a weighted mix of image and metadata similarity.

    Parameters
    ----------
    backbone: ``auto`` | ``vgg16`` | ``resnet50`` | ``efficientnet_lite0``.
    weight: default image weight ``w`` (``score = w * image + (1 - w) * metadata``).
    cache_dir: where embeddings are cached (default: ``.cache`` beside the catalog file).
    text_fields, categorical_fields, exclude_fields, text_weighting: passed to :class:`MetadataEncoder`
        (``text_weighting``: ``"tfidf"`` or ``"bm25"``).
    n_inferred: for an uploaded photo without text, how many closest image matches lend their
        metadata to the query.
    flip_tta: embed every image also mirrored and average the two (cached separately).
    features: ``"gap"`` or ``"grid"`` image features, see :class:`ImageEmbedder`.
    semantic: share of the image vector given to ImageNet class probabilities ("what is it"),
        see :class:`ImageEmbedder`; used with EfficientNet-Lite0 (the only bundled classifier head),
        ignored for other backbones.
    dba_k: database-side augmentation - each catalog vector becomes the mean of itself and its
        ``dba_k`` nearest catalog neighbours (0 = off). It sharpens product-to-product similarity;
        a query photo is scored against the raw vectors, so the exact product stays the top match.
    colour_weight: default share of the image side given to colour-histogram similarity (0 = the
        CNN alone) for catalog-item queries ("more like this": the same *kind* of product, where a
        red ball and a blue ball are equally good answers).
    photo_colour_weight: the same for uploaded-photo queries ("what matches this photo"), which
        mostly want *this product* - found in another shot by its colours as much as its shape.
        Chosen by the multi-view and leave-one-out sweeps in docs/evaluation.md.
    diversity: default MMR diversity in [0, 1] (0 = plain relevance order); see ``recommend``.
    label_projection: opt-in, for catalogs with their own category labels: the name of a catalog
        column; a :class:`LabelProjection` fitted on it appends each image's predicted label
        probabilities to its vector (``projection_mix`` of the vector, see docs/evaluation.md).
        Items with an empty label are not fitted on, but are projected like any other.

    The defaults were chosen by the weight and lever sweeps in ``docs/evaluation.md``.
    """

    def __init__(
        self,
        backbone: str = "auto",
        weight: float = DEFAULT_WEIGHT,
        cache_dir: Path | str | None = None,
        text_fields: Mapping[str, float] | None = None,
        categorical_fields: Mapping[str, float] | None = None,
        exclude_fields: Sequence[str] = (),
        text_weighting: str = "tfidf",
        n_inferred: int = 5,
        batch_size: int = 32,
        flip_tta: bool = True,
        features: str = "gap",
        semantic: float = 0.5,
        dba_k: int = 2,
        colour_weight: float = 0.0,
        photo_colour_weight: float = DEFAULT_PHOTO_COLOUR_WEIGHT,
        diversity: float = 0.0,
        label_projection: str | None = None,
        projection_mix: float = 0.5,
    ) -> None:
        self.backbone = backbone
        self.weight = weight
        self.cache_dir = cache_dir
        self.text_fields = text_fields
        self.categorical_fields = categorical_fields
        self.exclude_fields = exclude_fields
        self.text_weighting = text_weighting
        self.n_inferred = n_inferred
        self.batch_size = batch_size
        self.flip_tta = flip_tta
        self.features = features
        self.semantic = semantic
        self.dba_k = dba_k
        self.colour_weight = colour_weight
        self.photo_colour_weight = photo_colour_weight
        self.diversity = diversity
        self.label_projection = label_projection
        self.projection_mix = projection_mix

    # -- fitting -----------------------------------------------------------------------------
    def _image_embedder(self, backbone: str) -> ImageEmbedder:
        semantic = self.semantic if resolve_backbone(backbone).name == "efficientnet_lite0" else 0.0
        return ImageEmbedder(backbone, batch_size=self.batch_size, flip_tta=self.flip_tta, semantic=semantic,
                             features=self.features)

    def fit(self, catalog: Catalog | Path | str, progress: Progress | None = None) -> HybridRecommender:
        catalog = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
        hashes = image_hashes(catalog)  # read every image file once for both caches
        vectors, has_image, report, embedder = build_embeddings(
            catalog, self._image_embedder(self.backbone), self.cache_dir, progress=progress, hashes=hashes)
        # Colour histograms need no model: cheap, cached beside the CNN vectors.
        colours, _, _, _ = build_embeddings(catalog, ColourEmbedder(), self.cache_dir, hashes=hashes)
        self.raw_image_vectors_ = vectors.copy()
        if self.dba_k > 0 and has_image.sum() > 1:
            vectors[has_image] = database_side_augmentation(vectors[has_image], k=self.dba_k)
        self.label_projection_ = self.projection_labels_ = None
        self.unprojected_vectors_: tuple[np.ndarray, np.ndarray] | None = None
        if self.label_projection:
            # Fitted on the DBA vectors (what catalog items are compared by), applied to both kinds.
            self.projection_labels_ = self._projection_labels(catalog)
            self.unprojected_vectors_ = (vectors, self.raw_image_vectors_)
            rows = has_image & (self.projection_labels_ != "")
            try:
                self.label_projection_ = LabelProjection(mix=self.projection_mix).fit(
                    vectors[rows], self.projection_labels_[rows])
            except ValueError as exc:
                raise RecommenderError(f"label projection on {self.label_projection!r}: {exc}") from None
            vectors = self.label_projection_.transform(vectors)
            self.raw_image_vectors_ = self.label_projection_.transform(self.raw_image_vectors_)
        self.catalog_ = catalog
        self.build_report_: BuildReport = report
        self.backbone_ = report.backbone
        self.backbone_reason_ = report.reason
        self.backbone_fallback_ = report.fallback
        self.image_vectors_ = vectors
        self.colour_vectors_ = colours
        self.has_image_ = has_image
        rows = np.arange(len(catalog))
        self.image_index_ = ExactIndex(vectors.shape[1])
        self.image_index_.add(rows, vectors)
        self.raw_image_index_ = self.image_index_
        if self.dba_k > 0:
            self.raw_image_index_ = ExactIndex(vectors.shape[1])
            self.raw_image_index_.add(rows, self.raw_image_vectors_)
        self.colour_index_ = ExactIndex(colours.shape[1])
        self.colour_index_.add(rows, colours)
        self._embedder = embedder
        self._colour_embedder = ColourEmbedder().fit()
        self.metadata_encoder_ = MetadataEncoder(
            self.text_fields, self.categorical_fields, exclude=self.exclude_fields,
            text_weighting=self.text_weighting).fit(catalog.items)
        self.metadata_matrix_ = self.metadata_encoder_.transform(catalog.items)
        self.ranker_ = HybridRanker(self.weight)
        return self

    def _projection_labels(self, catalog: Catalog) -> np.ndarray:
        col = self.label_projection
        if col not in catalog.items.columns:
            raise RecommenderError(f"label projection: column {col!r} is not in the catalog "
                                   f"(columns: {', '.join(catalog.items.columns)})")
        # Multi-valued labels count as their joined text, as in evaluation.
        return np.array(["|".join(split_values(v)) for v in catalog.items[col]], dtype=object)

    @property
    def embedder(self) -> ImageEmbedder:
        """The image model, loaded on first use (a fully cached catalog does not need it)."""
        with _EMBEDDER_LOCK:  # two app sessions uploading at once must not load the model twice
            if self._embedder is None:
                self._embedder = self._image_embedder(self.backbone_).fit()
        return self._embedder

    def default_colour_weight(self, photo: bool = False) -> float:
        """Colour's default share of the image side: for uploaded photos or for catalog items."""
        return float(self.photo_colour_weight if photo else self.colour_weight)

    def image_similarity_matrix(
        self, colour_weight: float | None = None, photo: bool = False, out_of_fold: bool = False
    ) -> np.ndarray:
        """Similarity between every pair of catalog images, as the ranker's image side sees it.

        ``photo=True``: as each image would score if it were uploaded as a photo query - against
        the raw (not DBA-smoothed) vectors, with the photo colour default. ``out_of_fold=True``
        (for evaluation): with a label projection, row ``i`` comes from a projection fitted without
        item ``i``'s label (k-fold), so its own label cannot help it.
        """
        c = self.default_colour_weight(photo) if colour_weight is None else colour_weight
        if out_of_fold and self.label_projection_ is not None:
            dba, raw = self.unprojected_vectors_
            base = raw if photo else dba
            labels = np.where(self.has_image_, self.projection_labels_, "")
            sim = out_of_fold_similarity(self.label_projection_, dba, labels, base, base,
                                         folds=min(PROJECTION_FOLDS, len(labels)))
        else:
            vectors = self.raw_image_vectors_ if photo else self.image_vectors_
            sim = vectors @ vectors.T
        return sim if not c else (1 - c) * sim + c * (self.colour_vectors_ @ self.colour_vectors_.T)

    def image_pipeline_description(self) -> str:
        semantic = self._embedder_semantic()
        parts = [self.backbone_, "grid features" if self.features == "grid" else None,
                 "flip-TTA" if self.flip_tta else None,
                 f"semantic {semantic:g}" if semantic else None,
                 f"DBA k={self.dba_k}" if self.dba_k else None,
                 f"label projection {self.label_projection!r} {self.projection_mix:g}"
                 if self.label_projection else None,
                 f"colour {self.colour_weight:g}" if self.colour_weight else None,
                 f"photo colour {self.photo_colour_weight:g}" if self.photo_colour_weight else None]
        return " + ".join(p for p in parts if p)

    def _embedder_semantic(self) -> float:
        return self.semantic if self.backbone_ == "efficientnet_lite0" else 0.0

    def _image_scores(
        self, image_vec: np.ndarray, colour_vec: np.ndarray, colour_weight: float, photo: bool = False
    ) -> np.ndarray:
        scores = (self.raw_image_index_ if photo else self.image_index_).scores(image_vec)[0]
        if colour_weight:
            scores = (1 - colour_weight) * scores + colour_weight * self.colour_index_.scores(colour_vec)[0]
        return scores

    # -- querying ----------------------------------------------------------------------------
    def recommend(
        self,
        item: str | None = None,
        image: ImageSource | None = None,
        text: str | None = None,
        k: int = 10,
        weight: float | None = None,
        filters: Filters | None = None,
        colour_weight: float | None = None,
        diversity: float | None = None,
    ) -> Recommendations:
        """Top-``k`` products like a catalog ``item``, an uploaded ``image`` and/or a ``text``.

        Give exactly one of ``item`` and ``image``, or ``text`` alone; ``text`` may accompany an
        ``image``. Filters are applied before ranking; the query item itself is never returned.
        ``weight`` (image vs metadata), ``colour_weight`` (colour's share of the image side) and
        ``diversity`` (MMR: 0 = by score alone, 1 = mostly unlike each other) default to the
        recommender's settings; ``colour_weight`` to ``photo_colour_weight`` for an ``image`` query.
        """
        text = (text or "").strip() or None
        if item is not None and image is not None:
            raise QueryError("give a catalog item or an image, not both")
        if item is None and image is None and text is None:
            raise QueryError("nothing to search for: give an item id, an image or a text description")
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        w = self.weight if weight is None else float(weight)
        c = self.default_colour_weight(photo=image is not None) if colour_weight is None else float(colour_weight)
        d = self.diversity if diversity is None else float(diversity)
        for name, value in (("weight", w), ("colour_weight", c), ("diversity", d)):
            if not 0.0 <= value <= 1.0:
                raise QueryError(f"{name} must be between 0 and 1, got {value}")
        catalog = self.catalog_
        filters = filters or Filters()
        candidates = filters.mask(catalog)
        notes: list[str] = []
        img_scores = meta_scores = None
        attrs: dict[str, list[str]] = {}

        if item is not None:
            try:
                pos = catalog.position(item)
            except KeyError as exc:
                raise QueryError(str(exc.args[0])) from None
            candidates[pos] = False
            label = f"item {item} ({catalog.items['name'].iat[pos]})"
            attrs = catalog.attributes(pos)
            if self.has_image_[pos]:
                img_scores = self._image_scores(self.image_vectors_[pos], self.colour_vectors_[pos], c)
            else:
                notes.append("this product's image could not be read: ranked by metadata alone")
            meta_scores = self._metadata_scores(self.metadata_matrix_[pos])
            if text:
                notes.append("the text is ignored for a catalog item query")
        elif image is not None:
            img_scores = self._image_scores(*self._embed_upload(image), c, photo=True)
            if text:
                label = f"uploaded image + text {text!r}"
                qmeta, attrs = self.metadata_encoder_.transform_text(text)
                meta_scores = self._metadata_scores(qmeta)
            else:
                label = "uploaded image"
                meta_scores, attrs, n_used = self._inferred_metadata(img_scores)
                shown = ", ".join(f"{k}: {v}" for k, v in describe_attributes(attrs).items()) or "no common attribute"
                notes.append(f"no description given: the metadata side comes from the {n_used} closest "
                             f"image matches ({shown})")
        else:
            label = f"text {text!r}"
            qmeta, attrs = self.metadata_encoder_.transform_text(text)
            meta_scores = self._metadata_scores(qmeta)
            if attrs:
                notes.append("recognised in the text: "
                             + ", ".join(f"{k}: {v}" for k, v in describe_attributes(attrs).items()))
            if weight is not None and weight > 0:
                notes.append("text-only query: ranked by metadata alone")

        if d > 0:
            ranking = self._diversified(img_scores, meta_scores, k, candidates, w, d)
            notes.append(f"diversity {d:g}: results re-ranked to be less alike (MMR)")
        else:
            ranking = self.ranker_.rank(img_scores, meta_scores, k, candidates, w)
        result = Recommendations(label, ranking.weight, self._items(ranking, attrs), ranking.n_candidates,
                                 attrs, notes)
        if not result.items:
            result.empty_reason = self._empty_reason(filters, item)
        return result

    def _embed_upload(self, image: ImageSource) -> tuple[np.ndarray, np.ndarray]:
        """CNN and colour vectors of an uploaded photo, decoded once."""
        img = open_image(image)
        emb, colour = self.embedder, self._colour_embedder
        vec = emb.embed_arrays(pad_to_square(img, emb.input_size_)[None])
        if self.label_projection_ is not None:
            vec = self.label_projection_.transform(vec)
        return vec[0], colour.embed_arrays(pad_to_square(img, colour.input_size_)[None])[0]

    def _diversified(self, img_scores, meta_scores, k, candidates, w, d) -> Ranking:
        """Maximal marginal relevance over the ranked candidates, with image similarity as redundancy."""
        full = self.ranker_.rank(img_scores, meta_scores, int(candidates.sum()), candidates, w)
        relevance = np.zeros(len(candidates), dtype=np.float32)
        relevance[full.positions] = full.final
        pool = np.zeros(len(candidates), dtype=bool)
        pool[full.positions] = True
        picked = mmr_rerank(relevance, k=k, lam=1.0 - d, candidates=pool, embeddings=self.image_vectors_)
        where = {int(p): j for j, p in enumerate(full.positions)}
        order = np.array([where[int(p)] for p in picked], dtype=int)
        return replace(full, positions=full.positions[order], final=full.final[order],
                       image_norm=full.image_norm[order], metadata_norm=full.metadata_norm[order],
                       image_raw=full.image_raw[order], metadata_raw=full.metadata_raw[order])

    def _metadata_scores(self, qrow) -> np.ndarray:
        return np.asarray((self.metadata_matrix_ @ qrow.T).todense(), dtype=np.float32).ravel()

    def _inferred_metadata(self, img_scores: np.ndarray) -> tuple[np.ndarray, dict[str, list[str]], int]:
        """Metadata query for a bare photo: the mean metadata of its closest image matches."""
        m = min(self.n_inferred, int(self.has_image_.sum()))
        nearest = np.argsort(-np.where(self.has_image_, img_scores, -np.inf), kind="stable")[:m]
        sims = np.clip(img_scores[nearest], 1e-6, None)
        qrow = self.metadata_matrix_[nearest].multiply(sims[:, None]).sum(axis=0)
        attrs: dict[str, list[str]] = {}
        for col in ATTRIBUTE_COLUMNS:
            if col not in self.catalog_.items.columns or col in self.exclude_fields:
                continue
            votes: Counter[str] = Counter()
            for i, s in zip(nearest, sims, strict=True):
                for v in split_values(self.catalog_.items[col].iat[i]):
                    votes[v] += s
            # A value held by the majority (similarity-weighted) of the matches.
            winners = [v for v, c in votes.most_common() if c >= 0.5 * sims.sum()]
            if winners:
                attrs[col] = winners
        return self._metadata_scores(csr_matrix(qrow, dtype=np.float32)), attrs, m

    def _items(self, ranking: Ranking, query_attrs: Mapping[str, list[str]]) -> list[Recommendation]:
        out = []
        for j, pos in enumerate(ranking.positions):
            mine = self.catalog_.attributes(int(pos))
            shared = {}
            for col, qvals in query_attrs.items():
                q = {v.lower() for v in qvals}
                common = [v for v in mine.get(col, []) if v.lower() in q]
                if common:
                    shared[col] = common
            out.append(Recommendation(
                id=str(self.catalog_.ids[pos]), name=str(self.catalog_.items["name"].iat[pos]),
                position=int(pos), score=float(ranking.final[j]),
                image_score=float(ranking.image_raw[j]), metadata_score=float(ranking.metadata_raw[j]),
                image_contribution=float(ranking.weight * ranking.image_norm[j]),
                metadata_contribution=float((1 - ranking.weight) * ranking.metadata_norm[j]),
                shared=shared))
        return out

    def _empty_reason(self, filters: Filters, item: str | None) -> str:
        keep = np.ones(len(self.catalog_), dtype=bool)
        if item is not None:
            keep[self.catalog_.position(item)] = False
        applied = []
        for desc, m in filters.steps(self.catalog_):
            before = int(keep.sum())
            keep &= m
            applied.append(desc)
            if not keep.any():
                if len(applied) == 1:
                    return f"no product matches {desc}"
                return (f"no product matches {desc} together with {' and '.join(applied[:-1])} "
                        f"({before} matched before it)")
        return "the catalog has no other product"

    # -- customers: collaborative filtering blended with content (recommender/ranking/blend.py) ----
    def fit_interactions(self, interactions, **params) -> HybridRecommender:
        """Learn from purchases/ratings (an :class:`Interactions` or a file path) over the fitted catalog;
        ``params`` go to :class:`~recommender.ranking.blend.CustomerRecommender`."""
        from recommender.catalog.interactions import Interactions, load_interactions
        from recommender.ranking.blend import CustomerRecommender

        if not isinstance(interactions, Interactions):
            interactions = load_interactions(interactions, self.catalog_)
        self.customers_ = CustomerRecommender(**params).fit(self.catalog_, interactions, self.metadata_matrix_)
        return self

    def recommend_for_user(self, user: str, k: int = 10, weight_cf: float | None = None,
                           filters: Filters | None = None, exclude_bought: bool = True) -> Recommendations:
        """Top-``k`` products for a customer: ``w_cf * behaviour + (1 - w_cf) * content``, with reasons."""
        if getattr(self, "customers_", None) is None:
            raise QueryError("no interactions fitted: call fit_interactions(...) first")
        return self.customers_.recommend(user, k, weight_cf, filters, exclude_bought)
