"""Query-side expansion: pseudo-relevance feedback at query time, catalog vectors untouched.

A query is ranked once (the hybrid score at its weight); its best ``k`` results (the *feedback rows*) are
added to it, each weighted ``max(cos, 0) ** alpha`` by its cosine to the query on that side, and the
candidates are re-scored against the expanded query: ``q' = normalise(q + sum_j w_j x_j)`` on the image side
(average query expansion, as :func:`~recommender.features.postprocess.average_query_expansion`) and the same
on the sparse metadata row.
Unlike database-side augmentation (docs/ranking.md 9.1) nothing in the catalog changes, so no two products
can come to share a vector. The re-scoring uses the candidate rows the first pass already chose (on a large
catalog the ANN and postings top-K): no second index search.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from recommender.index.exact import l2_normalise
from recommender.ranking.hybrid import Ranking, rank_candidates, standout_weight
from recommender.scoring import sparse_scores


def feedback_weights(cosines: np.ndarray, alpha: float) -> np.ndarray:
    """``max(cos, 0) ** alpha`` per feedback row (``alpha = 0``: every row counts 1), float32."""
    cos = np.nan_to_num(np.asarray(cosines, dtype=np.float32), nan=0.0)
    return np.maximum(cos, 0.0) ** alpha if alpha else np.ones_like(cos)


def feedback_scale(n: int, decay: float = 1.0, mass: float = 1.0) -> np.ndarray | None:
    """Per-row multipliers of ``n`` feedback rows given best first: ``mass * decay ** j`` for the ``j``-th
    (rank-weighted feedback); ``None`` when every multiplier is 1 (today's expansion, bit for bit)."""
    if decay == 1.0 and mass == 1.0:
        return None
    return (np.float32(mass) * np.float32(decay) ** np.arange(n, dtype=np.float32)).astype(np.float32)


def expand_dense(q: np.ndarray, vectors: np.ndarray, rows: np.ndarray, alpha: float,
                 scale: np.ndarray | None = None) -> np.ndarray:
    """``normalise(q + sum_j w_j v_j)`` over ``vectors[rows]``, weights by their cosine to ``q`` (times ``scale[j]``
    when given: :func:`feedback_scale`)."""
    q = np.asarray(q, dtype=np.float32).ravel()
    x = np.asarray(vectors[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
    if not len(x):
        return q
    w = feedback_weights(x @ q, alpha)
    if scale is not None:
        w = w * np.asarray(scale, dtype=np.float32)
    return l2_normalise(q + w @ x)


def expand_sparse(q: sp.csr_matrix, matrix: sp.csr_matrix, rows: np.ndarray, alpha: float,
                  scale: np.ndarray | None = None) -> sp.csr_matrix:
    """The same for a sparse (metadata) query row over ``matrix[rows]``; the result is L2-normalised. Works on
    the CSR arrays directly: 0.12 ms for 2 rows against 0.8 ms through scipy's operators (a 200k-row matrix)."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return q
    q = sp.csr_matrix(q)
    if not q.has_canonical_format:  # on a copy: never the caller's row
        q = q.copy()
        q.sum_duplicates()
    cols, vals = [q.indices], [q.data.astype(np.float32)]
    for r in rows.tolist():
        lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
        cols.append(matrix.indices[lo:hi])
        vals.append(matrix.data[lo:hi].astype(np.float32))
    w = feedback_weights(sparse_scores(matrix, q, rows), alpha)  # each feedback row's cosine to the query
    if scale is not None:
        w = w * np.asarray(scale, dtype=np.float32)
    vals = [vals[0], *(v * wj for v, wj in zip(vals[1:], w, strict=True))]
    out_cols, inverse = np.unique(np.concatenate(cols), return_inverse=True)
    out = np.bincount(inverse, weights=np.concatenate(vals)).astype(np.float32)
    norm = np.float32(np.sqrt(out @ out))
    return sp.csr_matrix((out / norm if norm > 0 else out, out_cols, [0, len(out_cols)]), shape=q.shape)


#: ``qe_k="auto"``: this many feedback rows when the catalog is scanned exactly, none on the ANN path.
AUTO_QE_K = 2


def check_params(k: int | str, alpha: float) -> None:
    """Raise ``ValueError`` for settings that cannot be used (checked at fit, never in ``__init__``)."""
    if k == "auto":
        pass
    elif isinstance(k, bool) or not isinstance(k, int | float) or int(k) != k or k < 0:
        raise ValueError(f"qe_k must be 'auto' or a whole number >= 0, got {k!r}")
    if not alpha >= 0:
        raise ValueError(f"qe_alpha must be >= 0, got {alpha!r}")


def resolved_k(k: int | str, ann: bool) -> int:
    """The feedback rows a fitted recommender uses: ``auto`` is :data:`AUTO_QE_K` when every allowed row is scored
    exactly (no ANN index), 0 with an ANN index. There the feedback of a filtered query needs a second, unfiltered
    candidate search, and expansion re-scores every candidate: at 1M products item p50 +4 ms unfiltered and
    +15 ms filtered on this 2-core machine (docs/index.md, session 13), against targets it already misses; its
    gain was measured on catalogs of 89 and 1,000 products. An explicit ``qe_k`` applies at any size."""
    return (0 if ann else AUTO_QE_K) if k == "auto" else int(k)


class ExpansionMixin:
    """The façade's side (mixed into :class:`~recommender.querying.QueryMixin`): reads ``qe_k``, ``qe_alpha`` and
    the fitted vectors; every method runs under the recommender's read lock, inside ``recommend``."""

    #: Opt-in variants of the feedback, measured for issue 12 (``bench/bench_suite_levers.py``, rows ``qe-decay*``
    #: and ``qe-mass*``); class attributes, not yet façade parameters, whose defaults are today's expansion exactly.
    #: ``qe_decay``: the ``j``-th feedback row (0 = the first ranking's best) weighs ``qe_decay ** j``
    #: (rank-weighted feedback; 1 = every row alike). ``qe_side_mass``: ``(image, metadata)`` multipliers of the
    #: feedback rows' weights on each side (``(1, 0)``: only the image vector is expanded). Measured on the suite
    #: (2026-11-26, paired to today's qe_k=2): decay 0.5, mass (.5, .5), (0, 1), (1, 0), (1, 2) all left demo
    #: leave-one-out P@5 lower (-.002 to -.013, none significant) and Fashion-MNIST within +-.005: none adopted.
    qe_decay: float = 1.0
    qe_side_mass: tuple[float, float] = (1.0, 1.0)
    #: With ``adaptive_weight``, an expanded item query's weight moves towards the side whose best match stands out
    #: of its ``standout_k + 1`` best (:func:`~recommender.ranking.hybrid.standout_weight`), measured on the first,
    #: unfiltered pass, so a filter does not change a product's score. 5 was the first value tried; 3 and 10 move
    #: the suite the same way, less (docs/evaluation.md, "Session 18").
    standout_k: int = 5

    @property
    def qe_k_(self) -> int:
        """The feedback rows in use (:func:`resolved_k` of ``qe_k`` for this fit's index; follows ``set_params``)."""
        return resolved_k(self.qe_k, ann=getattr(self, "image_index_", None) is not None)

    def expands(self, photo: bool = False) -> bool:
        """Whether an item query (``photo``: an uploaded photo) is expanded: ``qe_k_ > 0`` (photos only with
        ``qe_photos``), and never with a label projection (not measured together: leave-one-out scores a projection
        out of fold, which an expanded query's in-fold vectors would leak)."""
        return (self.qe_k_ > 0 and (not photo or self.qe_photos)
                and getattr(self, "label_projection_", None) is None)

    def expanded_query(self, q_img, q_meta, feedback: np.ndarray) -> tuple[np.ndarray | None, sp.csr_matrix | None]:
        """The query plus its ``feedback`` rows: its image vector with those that have an image, its metadata row
        with all of them (``qe_alpha`` weighting); the catalog's vectors are only read."""
        feedback = np.asarray(feedback, dtype=np.int64)  # best first
        mass_img, mass_meta = self.qe_side_mass
        if q_img is not None:
            has = self.has_image_[feedback]
            scale = feedback_scale(len(feedback), self.qe_decay, mass_img)  # by rank among all feedback rows
            q_img = expand_dense(q_img, self.image_vectors_, feedback[has], self.qe_alpha,
                                 None if scale is None else scale[has])
        if q_meta is not None:
            q_meta = expand_sparse(q_meta, self.metadata_matrix_, feedback, self.qe_alpha,
                                   feedback_scale(len(feedback), self.qe_decay, mass_meta))
        return q_img, q_meta

    def query_weight(self, w: float, c: float, meta_ref, first) -> float:
        """The image weight of an expanded item query, from its first pass ``(rows, image, metadata)`` raw scores."""
        if not getattr(self, "adaptive_weight", False) or not self.standout_k:
            return w
        _, f_img, f_meta = first
        if f_img is None or f_meta is None:
            return w
        return standout_weight(w, self.image_reference(c)(f_img), meta_ref(f_meta), self.standout_k)

    def _expanded_scores(self, q_img, q_col, q_meta, c, w, meta_ref, rows, img, meta, first, gathered=None):
        """Both sides' raw scores of the candidate ``rows`` for the query expanded by the best ``qe_k`` of its
        ``first`` ranking (``(rows, image, metadata)`` scores: the query's own candidates, or without the filters
        when a filter narrowed them): the same rows re-scored, with their image vectors as the first pass
        ``gathered`` them (float32, ``(len(rows), d)``) when given, else gathered again."""
        f_rows, f_img, f_meta = first
        ref = self.image_reference(c) if f_img is not None else None
        top = rank_candidates(f_rows, f_img, f_meta, self.qe_k_, w, ref, meta_ref).positions
        q_img, q_meta = self.expanded_query(q_img, q_meta, top)
        if img is not None:
            img = self._image_raw(q_img, q_col, c, rows, gathered)
            img = np.nan_to_num(img, nan=self.references_["image"].unrelated)
        if meta is not None:
            meta = sparse_scores(self.metadata_matrix_, q_meta, rows, self.metadata_postings_)
        return img, meta

    def _own_scores(self, ranking: Ranking, q_img, q_col, q_meta, c) -> Ranking:
        """The results' raw per-side scores (``image_score``, ``metadata_score``) against the query itself, not its
        expansion: an identical photo still shows 1.0. ``score`` and the contributions stay the expanded ranking's."""
        pos = ranking.positions
        img = ranking.image_raw if q_img is None else np.nan_to_num(self._image_raw(q_img, q_col, c, pos),
                                                                       nan=self.references_["image"].unrelated)
        meta = ranking.metadata_raw if q_meta is None else sparse_scores(self.metadata_matrix_, q_meta, pos)
        return replace(ranking, image_raw=np.asarray(img, np.float32), metadata_raw=np.asarray(meta, np.float32))
