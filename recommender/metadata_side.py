"""The façade's metadata side: its encoder (words, attributes and, where chosen, a sentence embedding),
the matrix every query scores against, and the two calibration references of that side.

Mixed into :class:`~recommender.recommender.HybridRecommender`; live updates (:mod:`recommender.live`)
re-fit through :meth:`MetadataSideMixin._new_metadata_encoder` so a refit keeps the same settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recommender.catalog.loader import Catalog
from recommender.features.metadata import MetadataEncoder
from recommender.features.text_embedder import TextEmbedder, resolve_text_embedding
from recommender.ranking.calibration import DEFAULT_PROBES, self_match_reference, sparse_reference


class MetadataSideMixin:
    """``_fit_metadata`` and its parts; see :class:`~recommender.recommender.HybridRecommender`."""

    def _new_metadata_encoder(self) -> MetadataEncoder:
        """An unfitted encoder with this recommender's settings (and its text embedder, if one was chosen)."""
        embedder = getattr(self, "text_embedder_", None)
        return MetadataEncoder(self.text_fields, self.categorical_fields, exclude=self.exclude_fields,
                               text_weighting=self.text_weighting, text_embedder=embedder,
                               semantic_weight=self.text_embedding_weight if embedder is not None else 0.0)

    def _choose_text_embedder(self, catalog: Catalog) -> None:
        """``text_embedder_`` (None: words only) and ``text_embedding_note_`` by ``text_embedding``."""
        from recommender.store.build import default_cache_dir

        on, self.text_embedding_note_ = resolve_text_embedding(self.text_embedding, len(catalog), self.index)
        if not on:
            self.text_embedder_ = None
            return
        cache = Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir(catalog)
        previous = getattr(self, "text_embedder_", None)  # a refit keeps the loaded model and its memory
        self.text_embedder_ = previous if previous is not None and previous.cache_dir == cache else TextEmbedder(cache)

    def _fit_metadata(self, catalog: Catalog) -> None:
        """The metadata encoder, matrix (CSR for rows, CSC for postings) and its score reference."""
        self._choose_text_embedder(catalog)
        encoder = self._new_metadata_encoder()
        partial = hasattr(self, "alive_") and not self.alive_.all()  # then fitted on the live rows only
        self.metadata_matrix_ = (encoder.fit(catalog.items[self.alive_]).transform(catalog.items) if partial
                                 else encoder.fit_transform(catalog.items))  # a fresh fit: one tokenising pass
        self.metadata_encoder_ = encoder
        self.metadata_postings_ = self.metadata_matrix_.tocsc()
        live_rows = np.flatnonzero(self.alive_)
        probes = live_rows[np.random.default_rng(0).permutation(len(live_rows))[:DEFAULT_PROBES]]
        names = self.metadata_encoder_.transform_text_fields(
            catalog.items["name"].iloc[probes].astype(str).tolist(), catalog=True)  # product names: cached
        self.references_ = {**getattr(self, "references_", {}),
                            "metadata": sparse_reference(self.metadata_matrix_, live_rows),
                            "text": self_match_reference(self.metadata_matrix_, names, probes,
                                                     random_floor=self.metadata_encoder_.semantic_)}
