"""The hybrid recommender: catalog -> features -> indexes -> ranker, behind one ``recommend`` call.

The CLI, the Streamlit app and the API are thin shells over :class:`HybridRecommender`. Fitting
lives here; answering a query in :mod:`recommender.querying`; live updates (upsert / patch /
remove) in :mod:`recommender.live`.
"""

from __future__ import annotations

import logging
import numbers
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from recommender.blas import find_blas_libraries
from recommender.catalog.loader import Catalog, load_catalog, split_values
from recommender.customers import CustomersMixin
from recommender.errors import RecommenderError
from recommender.features.embedders import ColourEmbedder, ImageEmbedder, has_classifier_head, resolve_backbone
from recommender.features.inference import plan_inference
from recommender.features.postprocess import self_dominant_dba
from recommender.features.projection import LabelProjection, out_of_fold_similarity
from recommender.features.view_choice import FeatureChoice, choose_features
from recommender.indexing import IndexMixin
from recommender.live import LiveUpdatesMixin, ReadWriteLock
from recommender.metadata_side import MetadataSideMixin
from recommender.querying import QueryMixin
from recommender.ranking.calibration import (
    SideReference,
    dense_reference,
)
from recommender.ranking.expansion import check_params as check_expansion
from recommender.ranking.filters import AttributeIndex
from recommender.ranking.hybrid import Filters, HybridRanker
from recommender.ranking.results import Recommendation, Recommendations
from recommender.scoring import rows_against_all
from recommender.shop_photos import fit_catalog_adapter
from recommender.store.build import BuildReport, Progress, build_embeddings, default_cache_dir, image_hashes
from recommender.store.vector_file import BFLOAT16

__all__ = ["Filters", "HybridRecommender", "Recommendation", "Recommendations"]
log = logging.getLogger(__name__)
#: The image weight of a catalog item query ("more like this"): chosen on two catalogs' leave-one-out (demo by
#: sub-category, grocery by category) in session 18, when the metadata side had its sentence embedding. An
#: uploaded photo keeps 0.7: its metadata side is only borrowed from its closest image matches (docs/evaluation.md).
DEFAULT_WEIGHT = 0.5
DEFAULT_PHOTO_WEIGHT = 0.7
DEFAULT_PHOTO_COLOUR_WEIGHT = 0.3
#: The sentence embedding's share of the metadata side: the plain mean of the two cosines, chosen before
#: measuring (bench/bench_minilm.py's "mean of both"), not tuned on the suite (docs/evaluation.md).
DEFAULT_TEXT_EMBEDDING_WEIGHT = 0.5
#: A result list whose best score is below this is flagged ``weak`` ("no good match"), on the calibrated
#: [0, 1] score where 0.8 is a typical best match and 0 a random pair. Set by that scale and checked on
#: the demo queries of docs/ranking.md; not yet tuned on a labelled set of "no good match" queries.
DEFAULT_WEAK_SCORE = 0.25
#: Query expansion's feedback rows for "more like this" item queries (ranking/expansion.py): 2 chosen on the
#: Fashion-MNIST slice's image P@10 (1: +.002, 2: +.005, 3: +.001; alpha 0 vs 3 within .001), then checked on the
#: suite: objective .7393 -> .7467, demo leave-one-out P@5 .710 -> .742 (+.032*), nothing worse (docs/evaluation.md).
DEFAULT_QE_K = "auto"  # 2 when scanned exactly, 0 on the ANN path (expansion.resolved_k)
PROJECTION_FOLDS = 5  # folds for out-of-fold similarities when a label projection is evaluated
_EMBEDDER_LOCK = threading.Lock()


class HybridRecommender(IndexMixin, MetadataSideMixin, QueryMixin, LiveUpdatesMixin, CustomersMixin, BaseEstimator):
    """Recommend catalog products by a weighted mix of image and metadata similarity.

    Parameters
    ----------
    backbone: ``auto`` | ``vgg16`` | ``resnet50`` | ``efficientnet_lite0``.
    weight: default image weight ``w`` of catalog-item queries (``score = w * image + (1 - w) * metadata``,
        each side calibrated to [0, 1] against the catalog's own distribution of pair similarities).
    photo_weight: the same for uploaded photos, whose metadata side (when no text comes with the photo) is
        borrowed from their closest image matches, so the image side leads.
    adaptive_weight: an item query asked with the default weight moves it towards the side whose best match
        stands out of its top few (query-adaptive fusion, :func:`~recommender.ranking.hybrid.standout_weight`),
        measured on query expansion's first, unfiltered pass, so where items are expanded (``qe_k``); the weight
        used is each result list's ``weight``. An explicit ``recommend(weight=...)`` is used as given.
    cache_dir: where embeddings are cached (default: ``.cache`` beside the catalog file).
    text_fields, categorical_fields, exclude_fields, text_weighting: passed to :class:`MetadataEncoder`
        (``text_weighting``: ``"tfidf"`` or ``"bm25"``).
    n_inferred: for an uploaded photo without text, how many closest image matches lend their
        metadata to the query.
    flip_tta: embed every image also mirrored and average the two (cached separately; twice the
        embedding cost of a cold build). Off by default since it stopped making a measurable difference
        on the benchmark suite (docs/evaluation.md, "Session 17").
    features: ``"auto"`` | ``"gap"`` | ``"grid"`` image features (see :class:`ImageEmbedder`); ``auto`` scores
        both on a sample of the catalog by its own category labels and keeps the grid only when it is
        significantly better (:mod:`recommender.features.view_choice`); ``features_`` is the view used,
        ``features_note_`` what was decided and why.
    semantic: share of the image vector given to ImageNet class probabilities ("what is it"),
        see :class:`ImageEmbedder`; used with EfficientNet-Lite0 (the only bundled classifier head),
        ignored for other backbones.
    dba_k, dba_alpha, dba_mix: database-side augmentation (0 = off): each catalog vector gets its
        ``dba_k`` nearest neighbours (found through the index) added, weighted ``cos ** dba_alpha``
        and together at most ``dba_mix`` of its own weight, so no two products become one; see
        :func:`~recommender.features.postprocess.self_dominant_dba`. Item and photo queries both
        score against these vectors (one copy kept).
    colour_weight: default share of the image side given to colour-histogram similarity (0 = the
        CNN alone) for catalog-item queries ("more like this").
    photo_colour_weight: the same for uploaded-photo queries ("what matches this photo").
    diversity: default MMR diversity in [0, 1] (0 = plain relevance order); see ``recommend``.
    label_projection, projection_mix: opt-in label projection, see :class:`LabelProjection`.
    index: image index backend passed to :func:`~recommender.index.factory.make_index`
        (``"auto"`` chooses by catalog size; ``"exact"`` scans every row; ``"milvus"`` a Milvus collection).
    index_options: the backend's options, e.g. ``{"uri": "http://host:19530", "token": SecretStr(...)}``
        for Milvus (see :class:`~recommender.index.milvus.MilvusIndex`).
    weak_score: a result list whose best calibrated score is below this is flagged ``weak``.
    refit_fraction: live updates re-fit the metadata vocabulary once the rows added or changed since
        the last fit exceed this fraction of the catalog (see :mod:`recommender.live`).
    adapter: ``"auto"`` | ``"on"`` | ``"off"``: learn from the catalog's own labelled photos (``views.csv``
        beside it, or ``fit(photos=...)``) how its products look in shop photos; ``auto`` only when there
        are enough to cross-validate and the out-of-fold score beats the plain pipeline. Photo queries and
        catalog image vectors then go through it; ``adapter_note_`` says what was decided and why
        (see :mod:`recommender.shop_photos`).
    text_embedding: ``"auto"`` | ``"minilm"`` | ``"off"``: add a sentence embedding (all-MiniLM-L6-v2) of the
        text fields to the metadata side, so "sneakers" finds a running shoe; ``auto`` = on when the model
        is installed (``requirements-text.txt``) and the catalog has at most
        :data:`~recommender.features.text_embedder.AUTO_MAX_PRODUCTS` products (``text_embedding_note_`` says
        which and why); ``minilm`` without the model installed is a one-line error.
    text_embedding_weight: the embedding's share of the metadata similarity (the rest is TF-IDF/BM25 words).
    image_runtime: what runs the image network, see :class:`ImageEmbedder` (``auto``: OpenVINO where
        installed, else TensorFlow).
    qe_k, qe_alpha, qe_photos: query-side expansion (pseudo-relevance feedback; ``qe_k=0`` is off; ``"auto"``, the
        default, is 2 when every allowed row is scored exactly, i.e. without an ANN index, which ``index="auto"``
        builds from 20,000 products, and 0 with one; ``qe_k_`` is the value in use): a
        catalog item query (and an uploaded photo with ``qe_photos``, off: grocery R@1 -.139) is ranked once, then
        its image vector and metadata row each get its best ``qe_k`` results added, weighted
        ``max(cos, 0) ** qe_alpha``, and the same candidates are re-scored; catalog vectors never change
        (:mod:`recommender.ranking.expansion`). Text queries are never expanded, nor anything with a
        ``label_projection`` (not measured together); filters do not change the feedback rows, so a product
        scores the same with or without them.
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
        flip_tta: bool = False,
        features: str = "auto",
        semantic: float = 0.5,
        dba_k: int = 0,
        dba_alpha: float = 3.0,
        dba_mix: float = 0.5,
        colour_weight: float = 0.0,
        photo_colour_weight: float = DEFAULT_PHOTO_COLOUR_WEIGHT,
        diversity: float = 0.0,
        label_projection: str | None = None,
        projection_mix: float = 0.5,
        index: str = "auto",
        index_options: Mapping[str, object] | None = None,
        weak_score: float = DEFAULT_WEAK_SCORE,
        refit_fraction: float = 0.2,
        adapter: str = "auto",
        text_embedding: str = "auto",
        text_embedding_weight: float = DEFAULT_TEXT_EMBEDDING_WEIGHT,
        image_runtime: str = "auto",
        qe_k: int | str = DEFAULT_QE_K,
        qe_alpha: float = 0.0,
        qe_photos: bool = False,
        photo_weight: float = DEFAULT_PHOTO_WEIGHT,  # after the older parameters: positional calls keep working
        adaptive_weight: bool = True,
    ) -> None:
        self.backbone = backbone
        self.weight = weight
        self.photo_weight = photo_weight
        self.adaptive_weight = adaptive_weight
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
        self.dba_alpha = dba_alpha
        self.dba_mix = dba_mix
        self.colour_weight = colour_weight
        self.photo_colour_weight = photo_colour_weight
        self.diversity = diversity
        self.label_projection = label_projection
        self.projection_mix = projection_mix
        self.index = index
        self.index_options = index_options
        self.weak_score = weak_score
        self.refit_fraction = refit_fraction
        self.adapter = adapter
        self.text_embedding = text_embedding
        self.text_embedding_weight = text_embedding_weight
        self.image_runtime = image_runtime
        self.qe_k = qe_k
        self.qe_alpha = qe_alpha
        self.qe_photos = qe_photos

    # -- fitting -----------------------------------------------------------------------------
    def _image_embedder(self, backbone: str, features: str | None = None) -> ImageEmbedder:
        """The image model of this configuration; ``features`` defaults to the view chosen at fit
        (before a fit, ``auto`` means the pooled head)."""
        semantic = self.semantic if has_classifier_head(resolve_backbone(backbone).name) else 0.0
        features = features or getattr(self, "features_", None) or ("gap" if self.features == "auto" else self.features)
        return ImageEmbedder(backbone, batch_size=self.batch_size, flip_tta=self.flip_tta, semantic=semantic,
                             features=features, runtime=self.image_runtime)

    def fit(self, catalog: Catalog | Path | str, progress: Progress | None = None, photos=None) -> HybridRecommender:
        """Embed (cached) and index the catalog. ``photos``: labelled shop photos for the adapter, an
        ``id,image`` CSV path or table (default: ``views.csv`` beside the catalog; ``False``: none)."""
        self._check_settings()  # before the slow part
        catalog = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
        hashes = image_hashes(catalog)  # read every image file once for both caches
        self.choose_features(catalog, hashes)
        image_embedder = self._image_embedder(self.backbone)
        # Served from a bfloat16 file (an ANN catalog): built as bfloat16 at once, half the float32 matrix.
        mapped = self._serves_mapped(len(catalog), image_embedder.identity().feature_dim, catalog)
        vectors, has_image, report, embedder = build_embeddings(
            catalog, image_embedder, self.cache_dir, progress=progress, hashes=hashes,
            dtype=BFLOAT16 if mapped else np.float32)
        choice, embedder = fit_catalog_adapter(self.adapter, catalog, vectors, has_image, photos, embedder,
                                               lambda: self._image_embedder(self.backbone), self.cache_dir)
        if mapped and choice.adapter is None and not self.dba_k and not self.label_projection:
            vectors = self._serving_vectors(vectors, catalog)  # written now: this frame stops holding the rows
        # Colour histograms need no model: cheap, cached beside the CNN vectors; at scale served from a file too
        # (512-d float32 is 2 KB a product: 2 GB of a million-product process), built once the CNN rows are
        # on disk so the two in-memory copies are never held at once.
        colours, _, _, _ = build_embeddings(catalog, ColourEmbedder(), self.cache_dir, hashes=hashes,
                                            dtype=BFLOAT16 if mapped else np.float32)
        if mapped:
            colours = self._serving_vectors(colours, catalog, "colours")
        self._fit_vectors(catalog, vectors, colours, has_image, report, embedder, choice)
        self._image_rows = {h: i for i, h in enumerate(hashes) if h is not None and has_image[i]}  # see live.py
        return self

    def choose_features(self, catalog: Catalog, hashes: list[str | None] | None = None) -> FeatureChoice:
        """Decide the image view by ``features`` (embedding a sample of at most 2,000 products, cached) and set
        ``features_``, ``features_note_``, ``features_scores_``; ``fit`` calls it, ``build --engine ray`` first."""
        self.features_ = None  # a refit chooses again
        choice = choose_features(self.features, catalog, image_hashes(catalog) if hashes is None else hashes,
                                 lambda f: self._image_embedder(self.backbone, f),
                                 self.cache_dir or default_cache_dir(catalog))
        self.features_, self.features_note_, self.features_scores_ = choice.features, choice.note, choice.scores
        return choice

    def fit_vectors(
        self, catalog: Catalog, image_vectors: np.ndarray, colour_vectors: np.ndarray | None = None,
        has_image: np.ndarray | None = None,
    ) -> HybridRecommender:
        """Fit on image vectors computed elsewhere (one L2-normalised row per product, in catalog order).

        For catalogs embedded by another process, and for benchmarks; photo queries still need the
        image model of ``backbone``. ``colour_vectors`` default to zeros (no colour side).
        """
        self._check_settings()
        n = len(catalog)
        image_vectors = np.asarray(image_vectors)
        if image_vectors.dtype not in (np.float16, np.float32):  # float16 is kept: no 2x copy of a large catalog
            image_vectors = image_vectors.astype(np.float32)
        if image_vectors.ndim != 2 or len(image_vectors) != n:
            raise RecommenderError(f"need one image vector per product ({n}), got shape {image_vectors.shape}")
        colours = np.zeros((n, 1), np.float32) if colour_vectors is None else np.asarray(colour_vectors, np.float32)
        has_image = np.ones(n, dtype=bool) if has_image is None else np.asarray(has_image, dtype=bool)
        report = BuildReport(self.backbone, "vectors given to fit_vectors", False, n, reused=n)
        self.features_ = "gap" if self.features == "auto" else self.features  # what photo queries are embedded with
        self.features_note_, self.features_scores_ = f"features {self.features_}: vectors given to fit_vectors", None
        return self._fit_vectors(catalog, image_vectors, colours, has_image, report, None)

    def _fit_vectors(self, catalog, vectors, colours, has_image, report, embedder,
                     adapted=None) -> HybridRecommender:
        self.adapter_ = adapted.adapter if adapted else None
        self.adapter_note_ = adapted.note if adapted else "adapter off: vectors given to fit_vectors"
        if vectors.dtype == BFLOAT16 and (self.adapter_ is not None or self.dba_k > 0 or self.label_projection):
            vectors = vectors.astype(np.float32)  # these steps compute in float32 (fit() builds bfloat16 at scale)
        if self.adapter_ is not None:  # catalog images move into the adapted space photo queries are mapped to
            vectors = vectors.copy()
            vectors[has_image] = self.adapter_.catalog_vectors_
        if self.dba_k > 0 and has_image.sum() > 1:
            knn_kind = "auto" if self.index == "milvus" else self.index  # neighbours in-process, not in a collection
            vectors[has_image] = self_dominant_dba(vectors[has_image], k=self.dba_k, alpha=self.dba_alpha,
                                                   mix=self.dba_mix, index_kind=knn_kind)
        self.label_projection_ = self.projection_labels_ = None
        self.unprojected_vectors_: tuple[np.ndarray, np.ndarray] | None = None
        if self.label_projection:
            self.projection_labels_ = self._projection_labels(catalog)
            self.unprojected_vectors_ = (vectors, vectors)
            rows = has_image & (self.projection_labels_ != "")
            try:
                self.label_projection_ = LabelProjection(mix=self.projection_mix).fit(
                    vectors[rows], self.projection_labels_[rows])
            except ValueError as exc:
                raise RecommenderError(f"label projection on {self.label_projection!r}: {exc}") from None
            vectors = self.label_projection_.transform(vectors)
        self.catalog_ = catalog
        self.build_report_: BuildReport = report
        self.backbone_ = report.backbone if report.backbone != "auto" else resolve_backbone("auto").name
        self.backbone_reason_ = report.reason
        self.backbone_fallback_ = report.fallback
        vectors = self._serving_vectors(vectors)  # bfloat16, memory-mapped, when an ANN index serves
        self.image_vectors_ = vectors  # the one copy: item and photo queries both score against it
        self.colour_vectors_ = colours
        self.has_image_ = has_image
        self.alive_ = np.ones(len(catalog), dtype=bool)
        self._embedder = embedder
        self._colour_embedder = ColourEmbedder().fit()
        self._fit_metadata(catalog)
        self.attributes_ = AttributeIndex.from_items(catalog.items)
        self.image_index_ = self._build_index(vectors, has_image)
        rows = np.flatnonzero(has_image)
        self.references_.update(image=dense_reference(vectors, rows, nearest=self._index_nearest(vectors, rows)),
                                colour=dense_reference(colours, rows))
        self.ranker_ = HybridRanker(self.weight, self.references_["image"], self.references_["metadata"])
        self.changed_since_metadata_fit_ = 0
        self._lock = ReadWriteLock()
        find_blas_libraries()  # queries limit BLAS to one thread; finding the libraries is a first query's 17 ms
        return self

    def _check_settings(self) -> None:
        """One-line errors for settings that would otherwise fail only at the first query."""
        try:
            check_expansion(self.qe_k, self.qe_alpha)
        except ValueError as exc:
            raise RecommenderError(str(exc)) from None
        for name in ("weight", "photo_weight", "colour_weight", "photo_colour_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise RecommenderError(f"{name} must be a number between 0 and 1, got {value!r}")
        if not isinstance(self.adaptive_weight, (bool, np.bool_)):  # "false" from a settings file would be truthy
            raise RecommenderError(f"adaptive_weight must be true or false, got {self.adaptive_weight!r}")

    def _prepare_rows(self, new, report):
        """Live-added rows enter the adapted space too (their raw vectors whitened like a photo query).
        Exact with the defaults; with a label projection or DBA as well the adapter would have to run
        before them, inside live.py (not done: products are then added unadapted, with a warning)."""
        rows = super()._prepare_rows(new, report)
        if getattr(self, "adapter_", None) is not None and rows.has_image.any():
            if self.label_projection_ is not None or self.dba_k > 0:
                log.warning("shop-photo adapter with label projection/DBA: live-added images are not adapted")
            else:
                rows.vectors[rows.has_image] = self.adapter_.transform_queries(rows.vectors[rows.has_image])
        return rows

    def _projection_labels(self, catalog: Catalog) -> np.ndarray:
        col = self.label_projection
        if col not in catalog.items.columns:
            raise RecommenderError(f"label projection: column {col!r} is not in the catalog "
                                   f"(columns: {', '.join(catalog.items.columns)})")
        # Multi-valued labels count as their joined text, as in evaluation.
        return np.array(["|".join(split_values(v)) for v in catalog.items[col]], dtype=object)

    @property
    def raw_image_vectors_(self) -> np.ndarray:
        """The vectors photo queries score against: the same single copy as ``image_vectors_``."""
        return self.image_vectors_

    @property
    def embedder(self) -> ImageEmbedder:
        """The image model, loaded on first use (a fully cached catalog does not need it)."""
        with _EMBEDDER_LOCK:  # two app sessions uploading at once must not load the model twice
            if self._embedder is None:
                self._embedder = self._image_embedder(self.backbone_).fit()
        return self._embedder

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_lock", None)  # a lock does not pickle; a fresh one is made on load
        state.pop("_column_cache", None)  # views of catalog_.items, rebuilt on the first query
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "catalog_" in state:
            self._lock = ReadWriteLock()

    def default_weight(self, photo: bool = False) -> float:
        """The default image weight ``w``: for uploaded photos or for catalog items (and text, where it is moot)."""
        return float(self.photo_weight if photo else self.weight)

    def default_colour_weight(self, photo: bool = False) -> float:
        """Colour's default share of the image side: for uploaded photos or for catalog items."""
        return float(self.photo_colour_weight if photo else self.colour_weight)

    def image_reference(self, colour_weight: float) -> SideReference:
        """The calibration of the image side with ``colour_weight`` of colour in it."""
        return self.references_["image"].mixed(self.references_["colour"], colour_weight)

    def image_similarity_rows(
        self, rows: np.ndarray, colour_weight: float | None = None, photo: bool = False, out_of_fold: bool = False
    ) -> np.ndarray:
        """Image-side similarity of catalog ``rows`` to every catalog image: ``(len(rows), n)``.

        ``photo=True``: as each image would score uploaded as a photo (the photo colour default).
        ``out_of_fold=True`` (evaluation): with a label projection, row ``i`` comes from a projection
        fitted without item ``i``'s label (k-fold), so its own label cannot help it.
        """
        rows = np.asarray(rows)
        c = self.default_colour_weight(photo) if colour_weight is None else colour_weight
        if out_of_fold and self.label_projection_ is not None:
            base = self.unprojected_vectors_[0]
            labels = np.where(self.has_image_, self.projection_labels_, "")
            sim = out_of_fold_similarity(self.label_projection_, base, labels, base, base,
                                         folds=min(PROJECTION_FOLDS, len(labels)))[rows]
        else:
            sim = rows_against_all(self.image_vectors_, rows)
        if not c:
            return sim
        colour = self.colour_vectors_  # float32 in memory; bfloat16 mapped beside an ANN index (converted blockwise)
        return (1 - c) * sim + c * (colour[rows] @ colour.T if colour.dtype == np.float32
                                    else rows_against_all(colour, rows))

    def image_similarity_matrix(
        self, colour_weight: float | None = None, photo: bool = False, out_of_fold: bool = False
    ) -> np.ndarray:
        """Similarity between every pair of catalog images (N x N: small catalogs and tests only;
        evaluation goes blockwise through :meth:`image_similarity_rows`)."""
        return self.image_similarity_rows(np.arange(len(self.catalog_)), colour_weight, photo, out_of_fold)

    def image_pipeline_description(self) -> str:
        semantic = self._embedder_semantic()
        plan = plan_inference(self.image_runtime)
        parts = [self.backbone_, f"{plan.runtime} {plan.precision}",
                 "grid features" if getattr(self, "features_", self.features) == "grid" else None,
                 "flip-TTA" if self.flip_tta else None,
                 f"semantic {semantic:g}" if semantic else None,
                 f"DBA k={self.dba_k}" if self.dba_k else None,
                 f"label projection {self.label_projection!r} {self.projection_mix:g}"
                 if self.label_projection else None,
                 "shop-photo adapter" if getattr(self, "adapter_", None) is not None else None,
                 f"colour {self.colour_weight:g}" if self.colour_weight else None,
                 f"photo colour {self.photo_colour_weight:g}" if self.photo_colour_weight else None]
        return " + ".join(p for p in parts if p)

    def _embedder_semantic(self) -> float:
        return self.semantic if has_classifier_head(self.backbone_) else 0.0
