"""MMR re-ranking: the relevance order at lam = 1, diversity as lam falls, and the three similarity forms."""

import numpy as np
import pytest

from recommender.evaluation.metrics import intra_list_diversity
from recommender.ranking.mmr import mmr_rerank


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sym(n: int, pairs: dict[tuple[int, int], float]) -> np.ndarray:
    s = np.eye(n)
    for (i, j), v in pairs.items():
        s[i, j] = s[j, i] = v
    return s


def test_lam_one_is_the_relevance_order_with_ties_to_lower_index():
    rng = np.random.default_rng(0)
    rel = rng.integers(0, 5, size=50) / 4  # many ties
    sim = np.abs(rng.standard_normal((50, 50)))
    got = mmr_rerank(rel, sim, 20, 1.0)
    np.testing.assert_array_equal(got, np.argsort(-rel, kind="stable")[:20])
    # Same order when going through the generic greedy loop with a lam that is not exactly 1.
    np.testing.assert_array_equal(mmr_rerank(rel, np.zeros((50, 50)), 20, 0.7), got)


def test_near_duplicate_is_pushed_down_at_half_lambda():
    rel = np.array([1.0, 0.95, 0.7])
    sim = sym(3, {(0, 1): 0.99, (0, 2): 0.1, (1, 2): 0.1})
    assert mmr_rerank(rel, sim, 3, 1.0).tolist() == [0, 1, 2]
    # After 0: item 1 scores 0.5*0.95 - 0.5*0.99 = -0.02, item 2 scores 0.5*0.7 - 0.5*0.1 = 0.30.
    assert mmr_rerank(rel, sim, 3, 0.5).tolist() == [0, 2, 1]


def test_lam_zero_first_by_relevance_then_by_dissimilarity():
    rel = np.array([0.2, 0.9, 0.5, 0.6])
    sim = sym(4, {(1, 0): 0.3, (1, 2): 0.0, (1, 3): 0.8, (2, 0): 0.9, (2, 3): 0.1, (0, 3): 0.5})
    # First: 1 (most relevant). Max sim to {1}: 0 -> 0.3, 2 -> 0.0, 3 -> 0.8: pick 2.
    # Max sim to {1, 2}: 0 -> 0.9, 3 -> 0.8: pick 3, then 0. Relevance plays no part after the first.
    assert mmr_rerank(rel, sim, 4, 0.0).tolist() == [1, 2, 3, 0]


def test_candidates_mask_is_respected():
    rng = np.random.default_rng(1)
    emb = unit_rows(rng, 40, 8)
    rel = rng.random(40)
    mask = rng.random(40) < 0.5
    for lam in (0.0, 0.3, 1.0):
        got = mmr_rerank(rel, emb @ emb.T, 10, lam, mask)
        assert mask[got].all()
        assert len(set(got.tolist())) == len(got) == 10
    # The most relevant candidate comes first even when a masked-out item is more relevant.
    rel[~mask] += 10
    assert mmr_rerank(rel, emb @ emb.T, 3, 0.5, mask)[0] == np.flatnonzero(mask)[np.argmax(rel[mask])]


def test_k_larger_than_candidates_returns_only_the_candidates():
    rel = np.array([0.1, 0.9, 0.5, 0.3])
    mask = np.array([True, False, True, False])
    got = mmr_rerank(rel, np.eye(4), 10, 0.5, mask)
    assert got.tolist() == [2, 0]
    assert mmr_rerank(rel, np.eye(4), 10, 0.5).size == 4
    assert mmr_rerank(rel, np.eye(4), 0, 0.5).size == 0
    assert mmr_rerank(rel, np.eye(4), 3, 0.5, np.zeros(4, dtype=bool)).size == 0


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("masked", [False, True])
def test_matrix_callable_and_embedding_forms_agree(lam, masked):
    rng = np.random.default_rng(2)
    emb = unit_rows(rng, 60, 12)
    rel = rng.random(60)
    mask = rng.random(60) < 0.6 if masked else None
    sim = emb @ emb.T
    by_matrix = mmr_rerank(rel, sim, 15, lam, mask)
    by_callable = mmr_rerank(rel, lambda i: emb @ emb[i], 15, lam, mask)
    by_embeddings = mmr_rerank(rel, k=15, lam=lam, candidates=mask, embeddings=emb)
    np.testing.assert_array_equal(by_matrix, by_callable)
    np.testing.assert_array_equal(by_matrix, by_embeddings)


def test_diversity_rises_as_lam_falls():
    rng = np.random.default_rng(3)
    lams = [1.0, 0.75, 0.5, 0.25, 0.0]
    ild = np.zeros(len(lams))
    n_queries = 30
    for _ in range(n_queries):
        emb = unit_rows(rng, 200, 16)
        query = unit_rows(rng, 1, 16)[0]
        score = emb @ query
        rel = (score - score.min()) / (score.max() - score.min())  # min-max to [0, 1], as the ranker does
        sim = emb @ emb.T
        for a, lam in enumerate(lams):
            ild[a] += intra_list_diversity(mmr_rerank(rel, k=10, lam=lam, embeddings=emb), sim)
    ild /= n_queries
    assert np.all(np.diff(ild) >= -1e-9), ild
    assert ild[-1] > ild[0] + 0.1, ild


def test_invalid_arguments_raise():
    rel = np.array([0.5, 0.2])
    with pytest.raises(ValueError):
        mmr_rerank(rel, np.eye(2), 2, 1.5)
    with pytest.raises(ValueError):
        mmr_rerank(rel, np.eye(2), 2, -0.1)
    with pytest.raises(ValueError):
        mmr_rerank(rel, np.eye(2), 2, float("nan"))
    with pytest.raises(ValueError):
        mmr_rerank(rel, np.eye(3), 2, 0.5)  # wrong matrix shape
    with pytest.raises(ValueError):
        mmr_rerank(rel, k=2, lam=0.5)  # neither similarity nor embeddings
    with pytest.raises(ValueError):
        mmr_rerank(rel, np.eye(2), 2, 0.5, embeddings=np.eye(2))  # both
    with pytest.raises(ValueError):
        mmr_rerank(rel, np.eye(2), 2, 0.5, np.array([1, 0]))  # mask must be boolean
    with pytest.raises(ValueError):
        mmr_rerank(rel, np.eye(2), -1, 0.5)


def test_no_quadratic_work_for_callable_and_embeddings():
    # One similarity vector per pick after the first (k - 1 calls), never an n x n matrix.
    rng = np.random.default_rng(4)
    emb = unit_rows(rng, 500, 8)
    calls = []

    def sim_to(i: int) -> np.ndarray:
        calls.append(i)
        return emb @ emb[i]

    got = mmr_rerank(rng.random(500), sim_to, 7, 0.5)
    assert calls == got[:-1].tolist()
