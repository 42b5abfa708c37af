"""Maximal marginal relevance (MMR) re-ranking: trade a little relevance for less redundancy.

Greedy selection (Carbonell & Goldstein, 1998): the first pick is the most relevant candidate;
each later pick is the remaining candidate maximising

    lam * relevance[i] - (1 - lam) * max_{j selected} similarity[i, j]

``lam = 1`` is the plain relevance order, ``lam = 0`` picks for dissimilarity alone after the
first. The two terms are subtracted, so they must be on comparable scales: relevance should lie in
[0, 1] like cosine similarity (the hybrid ranker's score is min-max normalised to [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

SimilarityTo = Callable[[int], ArrayLike]


def _similarity_getter(
    n: int,
    pos: np.ndarray | None,
    similarity: np.ndarray | SimilarityTo | None,
    embeddings: np.ndarray | None,
) -> Callable[[int], np.ndarray]:
    """``get(j)``: similarities of the candidates (rows ``pos``, or all items when None) to item ``j``.

    Only candidate rows are computed, so a small mask over a large catalog stays cheap.
    """
    if (similarity is None) == (embeddings is None):
        raise ValueError("give exactly one of similarity (matrix or callable) and embeddings")
    if embeddings is not None:
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embeddings must have shape ({n}, d), got {emb.shape}")
        rows = emb if pos is None else emb[pos]
        return lambda j: rows @ emb[j]
    if callable(similarity):
        def from_callable(j: int) -> np.ndarray:
            s = np.asarray(similarity(j))
            if s.shape != (n,):
                raise ValueError(f"similarity({j}) must have shape ({n},), got {s.shape}")
            return s if pos is None else s[pos]
        return from_callable
    mat = np.asarray(similarity)
    if mat.shape != (n, n):
        raise ValueError(f"similarity must have shape ({n}, {n}), got {mat.shape}")
    # Column j: similarity[i, j] for every candidate i, as in the MMR objective.
    return (lambda j: mat[:, j]) if pos is None else (lambda j: mat[pos, j])


def mmr_rerank(
    relevance: np.ndarray,
    similarity: np.ndarray | SimilarityTo | None = None,
    k: int = 10,
    lam: float = 0.5,
    candidates: np.ndarray | None = None,
    *,
    embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Positions (indices into ``relevance``) of up to ``k`` items chosen greedily by MMR, in order.

    Args:
        relevance: (n,) scores, ideally in [0, 1] (see the module docstring); finite for candidates.
        similarity: an (n, n) item x item matrix, or a callable ``sim_to(i)`` returning the (n,)
            similarities of item i to all items (assumed symmetric). Give this or ``embeddings``.
        k: how many to pick; fewer come back when fewer candidates exist; 0 gives an empty result.
        lam: relevance weight in [0, 1]; ``lam = 1`` reproduces the relevance order exactly.
        candidates: (n,) boolean mask; False items are never chosen. None means all items.
        embeddings: keyword-only alternative to ``similarity``: (n, d) L2-normalised rows; the
            cosine ``embeddings @ embeddings[i]`` is computed only for the items picked.

    Ties go to the lower index. Cost is O(k * n) time and O(n) extra memory (plus O(k * n * d) for
    embeddings): one similarity column per pick folds into a running max-similarity vector.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    if rel.ndim != 1:
        raise ValueError(f"relevance must be 1-D, got shape {rel.shape}")
    n = rel.size
    if not 0.0 <= lam <= 1.0:  # also rejects nan
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if candidates is None:
        pos = None
        rel_c = rel
    else:
        mask = np.asarray(candidates)
        if mask.dtype != bool or mask.shape != (n,):
            raise ValueError(f"candidates must be a boolean mask of shape ({n},), got {mask.dtype} {mask.shape}")
        pos = np.flatnonzero(mask)  # ascending, so "lower index wins" survives the compression
        rel_c = rel[pos]
    get = _similarity_getter(n, pos, similarity, embeddings)
    if not np.isfinite(rel_c).all():
        raise ValueError("relevance must be finite for every candidate")
    m = rel_c.size
    k = min(k, m)
    to_item = (lambda c: c) if pos is None else (lambda c: int(pos[c]))
    if k == 0:
        return np.empty(0, dtype=np.intp)
    if lam == 1.0:
        # The diversity term vanishes; skip the similarity work. Stable sort keeps lower index first.
        order = np.argsort(-rel_c, kind="stable")[:k]
        return order if pos is None else pos[order]

    chosen = np.empty(k, dtype=np.intp)
    weighted = lam * rel_c
    max_sim = np.zeros(m)
    score = rel_c  # first pick: most relevant (nothing selected yet, no penalty)
    for step in range(k):
        c = int(np.argmax(score))
        chosen[step] = c
        if step == k - 1:
            break
        s = np.asarray(get(to_item(c)), dtype=np.float64)
        if not np.isfinite(s).all():
            raise ValueError(f"non-finite similarity to item {to_item(c)}")
        max_sim = s if step == 0 else np.maximum(max_sim, s)
        score = weighted - (1.0 - lam) * max_sim
        # Already-chosen entries are set to -inf after the update, so they can never win again.
        score[chosen[: step + 1]] = -np.inf
    return chosen if pos is None else pos[chosen]
