"""Answering one query: candidates, exact re-scoring, evidence (the façade's read side; what a result shows
and why, in :mod:`recommender.explaining`).

Mixed into :class:`~recommender.recommender.HybridRecommender`; every method reads fitted state
under the recommender's read lock, so a live update is either wholly visible or not at all.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
from scipy.sparse import csr_matrix

from recommender.blas import one_blas_thread
from recommender.catalog.loader import ATTRIBUTE_COLUMNS, split_values
from recommender.errors import QueryError
from recommender.explaining import ExplainMixin
from recommender.features.images import ImageSource, open_image
from recommender.ranking.expansion import ExpansionMixin
from recommender.ranking.filters import Filters
from recommender.ranking.hybrid import Ranking, rank_candidates
from recommender.ranking.mmr import mmr_rerank
from recommender.ranking.query_text import parse_query
from recommender.ranking.results import Recommendations, describe_attributes
from recommender.scoring import dense_scores, index_top, posting_scores, sparse_scores, sparse_top

#: Above this many allowed rows (and with an ANN index) a query re-scores a candidate set instead of
#: every allowed row; below it the exact scan is cheap and the candidate set *is* the allowed set.
EXACT_SCAN_LIMIT = 20_000
#: The same for 16-bit vectors memory-mapped from the cache (the façade's vectors beside an in-process ANN):
#: a scan converts every allowed row to float32 (20k rows: ~200-300 ms on these cores against ~50 ms for
#: float32 in memory; bench_scale at 20k), so the index's filtered search (exact in its reduced space for
#: a selective filter) gives the candidates from far fewer allowed rows on.
MAPPED_SCAN_LIMIT = 2_000
#: Image top-K from the index and metadata top-K from the postings. 384 rather than 512: at 100k, item
#: queries 7.8 -> 5.2 ms CPU for recall@10 .991 -> .985 against the exact scan (256: 4.3 ms, .971);
#: bench/bench_candidates.py, docs/index.md "Serving vectors in bfloat16; 384 candidates per side".
CANDIDATES_PER_SIDE = 384
#: Query expansion keeps the candidates' image vectors (float32) from the first pass when there are at most this
#: many (the candidate path: ~768; 4,096 x 1,280 floats = 21 MB), else gathers them again.
GATHER_LIMIT = 4096
MMR_POOL = 200  # diversity re-ranks the best this-many results (at least 10 x k), not the catalog
#: Words recognised in a text query that become filters (and stop being words to match).
TEXT_FILTER_COLUMNS = ("category", "sub_category", "brand", "colour")
#: A text query's result needs a word or attribute in common with it, or (with a text embedding) a
#: sentence-embedding cosine of at least this much: on the demo the 90th percentile of product-pair cosines
#: is .27 and "sneakers"~running shoes .41-.50, nonsense words ("xyzzy") and "cheap" top out at .27-.30.
SEMANTIC_EVIDENCE = 0.35


class QueryMixin(ExpansionMixin, ExplainMixin):
    """``recommend`` and its parts; see :class:`~recommender.recommender.HybridRecommender`."""

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
        user: str | None = None,
        weight_cf: float | None = None,
    ) -> Recommendations:
        """Top-``k`` products like a catalog ``item``, an uploaded ``image`` and/or a ``text``, or for a ``user``.

        Give exactly one of ``item`` and ``image``, or ``text`` alone; ``text`` may accompany an
        ``image``. Filters are applied during the search; the query item itself is never returned.
        In a text query, a price phrase ("under 50", "between 20 and 40") becomes a price filter and
        a named brand, colour, category or sub-category a filter on it (dropped, with a note, when
        nothing would pass). Only results with evidence are returned: a text query's results share
        a word or an attribute with it. ``weak`` flags a list whose best score is below ``weak_score``.
        ``user`` (after :meth:`fit_interactions`): that customer's recommendations, ``weight_cf`` being
        the behaviour side's share (see :meth:`recommend_for_user`).
        """
        if user is not None:  # "recommended for you": behaviour blended with content (ranking/blend.py)
            if item is not None or image is not None or text:
                raise QueryError("give a customer alone, not with an item, image or text")
            return self.recommend_for_user(user, k, weight_cf, filters)
        text = (text or "").strip() or None
        if item is not None and image is not None:
            raise QueryError("give a catalog item or an image, not both")
        if item is None and image is None and text is None:
            raise QueryError("nothing to search for: give an item id, an image or a text description")
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        w = self.default_weight(photo=image is not None) if weight is None else float(weight)
        c = self.default_colour_weight(photo=image is not None) if colour_weight is None else float(colour_weight)
        d = self.diversity if diversity is None else float(diversity)
        for name, value in (("weight", w), ("colour_weight", c), ("diversity", d)):
            if not 0.0 <= value <= 1.0:
                raise QueryError(f"{name} must be between 0 and 1, got {value}")
        q_image = None
        if image is not None:  # embed outside the lock: the slow part, and it reads no fitted state
            q_image = self._embed_upload(image)
        with self._lock.reading(), one_blas_thread():
            return self._recommend(item, q_image, text, k, w, filters or Filters(), c, d, weight)

    def _recommend(self, item, q_image, text, k, w, filters, c, d, weight_given) -> Recommendations:
        notes: list[str] = []
        attrs: dict[str, list[str]] = {}
        allowed = filters.mask(None, self.attributes_) & self.alive_
        q_img = q_col = q_meta = None
        meta_ref = self.references_["metadata"]
        evidence_row = None  # text queries: the words a result must share with the query
        query_pos = None
        text_filters: Filters | None = None

        if item is not None:
            query_pos = self._live_position(item)
            allowed[query_pos] = False
            cells = self._cells(np.array([query_pos]), ("name", *ATTRIBUTE_COLUMNS))
            label = f"item {item} ({cells['name'][0]})"
            attrs = {col: vals for col in ATTRIBUTE_COLUMNS if col in cells and (vals := split_values(cells[col][0]))}
            if self.has_image_[query_pos]:
                q_img = np.asarray(self.image_vectors_[query_pos], dtype=np.float32)  # a 16-bit row when mapped
                q_col = self.colour_vectors_[query_pos]
            else:
                notes.append("this product's image could not be read: ranked by metadata alone")
            q_meta = self.metadata_matrix_[query_pos]
            if text:
                notes.append("the text is ignored for a catalog item query")
        elif q_image is not None:
            q_img, q_col = q_image
            if text:
                label = f"uploaded image + text {text!r}"
                q_meta, attrs = self.metadata_encoder_.transform_text(text)
            else:
                label = "uploaded image"
                q_meta, attrs, n_used = self._inferred_metadata(q_img, q_col, c)
                shown = ", ".join(f"{k}: {v}" for k, v in describe_attributes(attrs).items()) or "no common attribute"
                notes.append(f"no description given: the metadata side comes from the {n_used} closest "
                             f"image matches ({shown})")
        else:
            label = f"text {text!r}"
            meta_ref = self.references_["text"]  # a text query's 0 is "no word in common"
            parsed = parse_query(text)
            if parsed.describe():
                allowed &= Filters(price_min=parsed.price_min, price_max=parsed.price_max).mask(None, self.attributes_)
                notes.append(f"read as a filter: {parsed.describe()} (from {', '.join(map(repr, parsed.phrases))})")
            q_meta, attrs = self.metadata_encoder_.transform_text(parsed.text)
            named = {col: vals for col, vals in attrs.items() if col in TEXT_FILTER_COLUMNS}
            if named:
                text_filters = Filters(**named)
                notes.append("recognised in the text: "
                             + ", ".join(f"{k}: {v}" for k, v in describe_attributes(named).items()))
            words = _without_phrases(parsed.text, [v for vals in named.values() for v in vals])
            if self.metadata_encoder_.text_words(words):
                evidence_row = self.metadata_encoder_.transform_text_fields(words, semantic=False)
            if weight_given is not None and weight_given > 0:
                notes.append("text-only query: ranked by metadata alone")

        strict = allowed if text_filters is None else allowed & text_filters.mask(None, self.attributes_)
        # Query expansion (qe_k): "more like this" items, and uploaded photos only with qe_photos; never text. Its
        # feedback rows ignore the filters, so a product scores the same with or without them (docs/ranking.md 9.2).
        feedback = None
        if (item is not None and self.expands()) or (q_image is not None and self.expands(photo=True)):
            feedback = allowed if not filters.active() else self.alive_.copy()
            if feedback is not allowed and query_pos is not None:
                feedback[query_pos] = False
        ranking = self._ranked(q_img, q_col, q_meta, strict, w, c, meta_ref, evidence_row, k, d, feedback,
                               adapt=weight_given is None)
        if text_filters is not None and not len(ranking.positions) and allowed.any():
            ranking = self._ranked(q_img, q_col, q_meta, allowed, w, c, meta_ref, evidence_row, k, d)
            if len(ranking.positions):
                named_desc = " and ".join(desc for desc, _ in text_filters.steps(None, self.attributes_))
                notes.append(f"no product matches {named_desc} (with the other filters): "
                             "those words count as text instead")
        if d > 0 and len(ranking.positions):
            notes.append(f"diversity {d:g}: results re-ranked to be less alike (MMR)")
        items = self._items(ranking, attrs, text if q_img is None else None)
        result = Recommendations(label, ranking.weight, items, ranking.n_candidates, attrs, notes)
        result.weak = bool(items) and items[0].score < self.weak_score
        if not items:
            result.empty_reason = self._empty_reason(filters, query_pos, text if q_img is None else None, allowed)
        return result

    def _live_position(self, item: str) -> int:
        try:
            pos = self.catalog_.position(item)
        except KeyError as exc:
            raise QueryError(str(exc.args[0])) from None
        if not self.alive_[pos]:
            raise QueryError(f"no product with id {item!r} in the catalog")
        return pos

    # -- scoring -----------------------------------------------------------------------------
    def _candidates(self, q_img, q_meta, allowed: np.ndarray,
                    hits: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows to score exactly: every allowed row on a small catalog or under a selective filter;
        otherwise the image top-K (filter applied in the index) and the metadata top-K (postings).
        Also the metadata scores of every row when the postings were walked for them (else None);
        ``hits``: those scores from an earlier pass of the same query (they do not depend on the filter)."""
        n_allowed = int(np.count_nonzero(allowed))  # not .sum(): 0.3 ms over 1M bools, 0.03
        limit = MAPPED_SCAN_LIMIT if self.image_vectors_.dtype.itemsize == 2 else EXACT_SCAN_LIMIT
        if self.image_index_ is None or n_allowed <= limit:
            return np.flatnonzero(allowed), None
        parts, hits = [], None
        if q_img is not None:
            parts.append(index_top(self.image_index_, q_img, CANDIDATES_PER_SIDE, allowed))
        if q_meta is not None:
            top = getattr(self.image_index_, "metadata_top", None)  # Milvus: the collection holds metadata too
            if top is not None:
                parts.append(top(q_meta, CANDIDATES_PER_SIDE, allowed))
            else:
                if hits is None:
                    hits = posting_scores(self.metadata_postings_, q_meta, self.metadata_matrix_)
                parts.append(sparse_top(self.metadata_postings_, q_meta, CANDIDATES_PER_SIDE, allowed, hits))
        return (np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)), hits

    def _image_raw(self, q_img, q_col, c: float, rows: np.ndarray, gathered: np.ndarray | None = None) -> np.ndarray:
        """Image-side raw scores of ``rows``; ``gathered``: their vectors already in float32 (query expansion)."""
        scores = dense_scores(self.image_vectors_, q_img, rows) if gathered is None else gathered @ q_img
        if c:
            scores = (1 - c) * scores + c * dense_scores(self.colour_vectors_, q_col, rows)
        # A product without a readable image has a zero vector: no image evidence, not "unrelated".
        return np.where(self.has_image_[rows], scores, np.float32(np.nan))

    def _scored(self, q_img, q_col, q_meta, c, allowed, with_hits=False, gathered=None, hits=None):
        """The candidate rows of a query with both sides' raw scores (a missing image scores as unrelated), and
        with ``with_hits`` the metadata scores of every row when the postings were walked for them (else None).
        ``gathered``: a list that receives the rows' float32 image vectors when they are few (query expansion
        re-scores them: a second gather of 768 bfloat16 rows cost 0.65-2.5 ms, the kept block 0.05-0.17)."""
        rows, hits = self._candidates(q_img, q_meta, allowed, hits)
        block = None
        if gathered is not None and q_img is not None and len(rows) <= GATHER_LIMIT:
            block = np.asarray(self.image_vectors_[rows], dtype=np.float32)
            gathered.append(block)
        img = None if q_img is None else self._image_raw(q_img, q_col, c, rows, block)
        if hits is not None:
            meta = hits[rows]
        elif q_meta is not None:
            meta = sparse_scores(self.metadata_matrix_, q_meta, rows, self.metadata_postings_)
        else:
            meta = None
        if img is not None and np.isnan(img).any():
            img = np.nan_to_num(img, nan=self.references_["image"].unrelated)
        return (rows, hits, img, meta) if with_hits else (rows, img, meta)

    def _ranked(self, q_img, q_col, q_meta, allowed, w, c, meta_ref, evidence_row, k, d, feedback=None,
                adapt: bool = False) -> Ranking:
        """Exact hybrid ranking of the candidates, results without evidence cut, MMR if asked; with a ``feedback``
        mask (query expansion), ranked against the query expanded by the best ``qe_k`` of those rows, and with
        ``adapt`` (the default weight) at the weight its first pass suggests (``adaptive_weight``)."""
        gathered: list[np.ndarray] = []
        rows, hits, img, meta = self._scored(q_img, q_col, q_meta, c, allowed, True,
                                             None if feedback is None else gathered)
        n_candidates = int(np.count_nonzero(allowed))
        encoder = self.metadata_encoder_
        semantic = q_meta is not None and getattr(encoder, "semantic_", False)
        if evidence_row is not None and hits is not None:  # the postings path: a few words' inverted lists
            keep = posting_scores(self.metadata_postings_, evidence_row, self.metadata_matrix_)[rows] > 0
        elif evidence_row is not None:
            keep = sparse_scores(self.metadata_matrix_, evidence_row, rows, self.metadata_postings_) > 0
        elif q_img is None and semantic:  # some attribute in common (the embedding block left out)
            keep = sparse_scores(self.metadata_matrix_, encoder.without_semantic(q_meta), rows) > 0
        elif q_img is None:
            keep = meta > 0  # a text query's evidence: some word or attribute in common
        else:
            keep = np.ones(len(rows), dtype=bool)
        if q_img is None and semantic:  # ... or a meaning close enough ("sneakers" ~ "running shoe")
            keep |= self._semantic_cosines(q_meta, rows) >= SEMANTIC_EVIDENCE
        rows, img, meta = rows[keep], None if img is None else img[keep], None if meta is None else meta[keep]
        if feedback is not None and len(rows):
            # Filtered: the feedback rows are the best of the unfiltered ranking (its own candidates, so the same
            # rows as the unfiltered query's), reusing the postings walk if there was one: it ignores the filter.
            first = (rows, img, meta) if feedback is allowed else self._scored(q_img, q_col, q_meta, c, feedback,
                                                                               hits=hits)
            if adapt:
                w = self.query_weight(w, c, meta_ref, first)
            block = None if not gathered else gathered[0] if keep.all() else gathered[0][keep]
            img, meta = self._expanded_scores(q_img, q_col, q_meta, c, w, meta_ref, rows, img, meta, first, block)
        pool = k if d <= 0 else max(MMR_POOL, 10 * k)
        ranking = rank_candidates(rows, img, meta, pool, w, self.image_reference(c) if img is not None else None,
                                  meta_ref, n_candidates)
        # Evidence: closer than a random pair of this catalog on some side, or a word / attribute in common
        # (the embedding block is left out of "in common": nearly every pair has a positive cosine there).
        words_raw = np.nan_to_num(ranking.metadata_raw)
        expanded = feedback is not None and q_meta is not None  # evidence is the query's own words
        if (semantic or expanded) and q_img is not None and len(ranking.positions):
            words_raw = sparse_scores(self.metadata_matrix_, encoder.without_semantic(q_meta), ranking.positions)
        if q_img is None and semantic:
            words_raw = np.ones(len(ranking.positions), np.float32)  # text evidence was required above
        ranking = ranking.take(np.flatnonzero((ranking.final > 0) | (words_raw > 0)))
        if d > 0 and len(ranking.positions) > 1:
            emb = self.image_vectors_[ranking.positions].astype(np.float32, copy=False)  # the pool only
            picked = mmr_rerank(ranking.final, k=k, lam=1.0 - d, embeddings=emb)
            ranking = ranking.take(picked)
        ranking = ranking.take(np.arange(min(k, len(ranking.positions))))
        return ranking if feedback is None else self._own_scores(ranking, q_img, q_col, q_meta, c)

    def _semantic_cosines(self, q_meta, rows: np.ndarray) -> np.ndarray:
        """Sentence-embedding cosine of a query row with catalog ``rows``, from the embedding blocks of the
        metadata rows (a product row's block has norm sqrt(m), the query's is measured)."""
        q_sem = self.metadata_encoder_.semantic_only(q_meta)
        q_norm = float(np.sqrt(q_sem.multiply(q_sem).sum())) if q_sem is not None else 0.0
        if not q_norm:
            return np.zeros(len(rows), np.float32)
        dots = sparse_scores(self.metadata_matrix_, q_sem, rows, self.metadata_postings_)
        return dots / (q_norm * np.float32(np.sqrt(self.metadata_encoder_.semantic_weight)))

    def _embed_upload(self, image: ImageSource) -> tuple[np.ndarray, np.ndarray]:
        """CNN and colour vectors of an uploaded photo, decoded once."""
        img = open_image(image)
        emb, colour = self.embedder, self._colour_embedder
        # embed_query: the whole photo, plus its centre crops where the embedder is set to (opt-in).
        vec = emb.embed_query(img)[None]
        if getattr(self, "adapter_", None) is not None:  # the space the catalog vectors were adapted into
            vec = self.adapter_.transform_queries(vec)
        if self.label_projection_ is not None:
            vec = self.label_projection_.transform(vec)
        return vec[0], colour.embed_query(img)

    def _inferred_metadata(self, q_img, q_col, c) -> tuple[csr_matrix, dict[str, list[str]], int]:
        """Metadata query for a bare photo: the mean metadata of its closest image matches."""
        with_image = self.has_image_ & self.alive_
        m = min(self.n_inferred, int(with_image.sum()))
        rows, _ = self._candidates(q_img, None, with_image)
        scores = self._image_raw(q_img, q_col, c, rows)
        nearest = rows[np.lexsort((rows, -scores))[:m]]
        sims = np.clip(np.sort(scores)[::-1][:m], 1e-6, None)
        qrow = self.metadata_matrix_[nearest].multiply(sims[:, None]).sum(axis=0)
        attrs: dict[str, list[str]] = {}
        cells = self._cells(nearest, [c for c in ATTRIBUTE_COLUMNS if c not in self.exclude_fields])
        for col, values in cells.items():
            votes: Counter[str] = Counter()
            for cell, s in zip(values, sims, strict=True):
                for v in split_values(cell):
                    votes[v] += s
            # A value held by the majority (similarity-weighted) of the matches.
            winners = [v for v, n in votes.most_common() if n >= 0.5 * sims.sum()]
            if winners:
                attrs[col] = winners
        return csr_matrix(qrow, dtype=np.float32), attrs, m


def _without_phrases(text: str, phrases: list[str]) -> str:
    """``text`` without the recognised attribute phrases (whole words, case-insensitive)."""
    for p in sorted(phrases, key=len, reverse=True):
        text = re.sub(rf"(?i)\b{re.escape(p)}s?\b", " ", text)
    return " ".join(text.split())

