"""Ranking metrics against hand-computed values, their edge cases, and the bootstrap helpers."""

import json
import math

import numpy as np
import pytest

from recommender.evaluation.metrics import (
    average_precision,
    bootstrap_ci,
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    mean_average_precision,
    ndcg_at_k,
    paired_bootstrap_diff,
    precision_at_k,
    recall_at_k,
    summarise,
)

L2, L3, L4 = math.log2(2), math.log2(3), math.log2(4)


def test_precision_at_k():
    assert precision_at_k([1, 0, 1, 1], 3) == pytest.approx(2 / 3)  # 2 hits in [1, 0, 1]
    assert precision_at_k([True, True], 5) == pytest.approx(2 / 5)  # 3 missing results are misses
    assert precision_at_k([], 3) == 0.0
    assert precision_at_k([0, 0, 0], 2) == 0.0


def test_recall_at_k():
    assert recall_at_k([1, 0, 1, 1], 3, 4) == pytest.approx(2 / 4)
    assert recall_at_k([0, 1], 10, 1) == 1.0  # k beyond the list: whole list counts
    assert recall_at_k([], 3, 2) == 0.0
    assert recall_at_k([0, 0], 2, 0) == 0.0  # no relevant items: 0.0 by convention


def test_ndcg_at_k():
    # [0, 1, 1], 2 relevant: DCG = 1/log2(3) + 1/log2(4); ideal = 1/log2(2) + 1/log2(3).
    assert ndcg_at_k([0, 1, 1], 3, 2) == pytest.approx((1 / L3 + 1 / L4) / (1 / L2 + 1 / L3))
    # 5 relevant but k = 2: ideal has only min(2, 5) = 2 items, so a perfect top-2 scores 1.
    assert ndcg_at_k([1, 1, 0], 2, 5) == pytest.approx(1.0)
    # [1, 0, 1] at k = 2 with 3 relevant: DCG = 1; ideal = 1 + 1/log2(3).
    assert ndcg_at_k([1, 0, 1], 2, 3) == pytest.approx(1 / (1 + 1 / L3))
    # Short list, k = 4, 3 relevant: DCG = 1/log2(3); ideal = 1 + 1/log2(3) + 1/log2(4).
    assert ndcg_at_k([0, 1], 4, 3) == pytest.approx((1 / L3) / (1 + 1 / L3 + 1 / L4))
    assert ndcg_at_k([], 3, 2) == 0.0
    assert ndcg_at_k([0, 0], 2, 0) == 0.0


def test_average_precision():
    # [1, 0, 1, 0, 1], 4 relevant: (P@1 + P@3 + P@5) / 4 = (1 + 2/3 + 3/5) / 4.
    assert average_precision([1, 0, 1, 0, 1], 4) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    # AP@3 of the same list: (1 + 2/3) / min(3, 4) = (5/3) / 3.
    assert average_precision([1, 0, 1, 0, 1], 4, k=3) == pytest.approx((1 + 2 / 3) / 3)
    # AP@2 with a perfect top-2 and 10 relevant: normaliser min(2, 10) = 2, so 1.0.
    assert average_precision([1, 1, 0], 10, k=2) == pytest.approx(1.0)
    # [0, 1], 1 relevant: P@2 / 1 = 1/2.
    assert average_precision([0, 1], 1) == pytest.approx(0.5)
    assert average_precision([], 3) == 0.0
    assert average_precision([0, 0], 0) == 0.0
    assert average_precision([0, 1], 1, k=1) == 0.0


def test_mean_average_precision():
    lists = [[1, 0, 1], [0, 1], [0, 0]]
    # AP: (1 + 2/3) / 2, 1/2 / 1, 0 / 1.
    expected = ((1 + 2 / 3) / 2 + 0.5 + 0.0) / 3
    assert mean_average_precision(lists, [2, 1, 1]) == pytest.approx(expected)
    # MAP@1: AP@1 = 1/min(1, 2), 0, 0.
    assert mean_average_precision(lists, [2, 1, 1], k=1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        mean_average_precision(lists, [2, 1])
    with pytest.raises(ValueError):
        mean_average_precision([], [])


def test_hit_rate_at_k():
    assert hit_rate_at_k([0, 0, 1], 3) == 1.0
    assert hit_rate_at_k([0, 0, 1], 2) == 0.0
    assert hit_rate_at_k([], 5) == 0.0


@pytest.mark.parametrize("fn", [lambda k: precision_at_k([1], k), lambda k: recall_at_k([1], k, 1),
                                lambda k: ndcg_at_k([1], k, 1), lambda k: average_precision([1], 1, k=k),
                                lambda k: hit_rate_at_k([1], k)])
def test_k_below_one_raises(fn):
    for k in (0, -1):
        with pytest.raises(ValueError):
            fn(k)


def test_counts_that_disagree_raise():
    with pytest.raises(ValueError):
        recall_at_k([1, 1, 1], 3, 2)  # three hits, two relevant items
    with pytest.raises(ValueError):
        ndcg_at_k([1, 1], 2, 1)
    with pytest.raises(ValueError):
        average_precision([1], -1)


def test_catalog_coverage():
    # Items {0, 1, 3, 4} of 10 appear: 4/10.
    assert catalog_coverage([[0, 1, 3], [3, 4], []], 10) == pytest.approx(0.4)
    assert catalog_coverage([], 5) == 0.0
    assert catalog_coverage([np.arange(5)], 5) == 1.0
    with pytest.raises(ValueError):
        catalog_coverage([[0, 5]], 5)
    with pytest.raises(ValueError):
        catalog_coverage([[0]], 0)


def test_intra_list_diversity():
    sim = np.array([[1.0, 0.8, 0.2, 0.0],
                    [0.8, 1.0, 0.4, 0.1],
                    [0.2, 0.4, 1.0, 0.5],
                    [0.0, 0.1, 0.5, 1.0]])
    # Pairs (0,1)=0.8, (0,2)=0.2, (1,2)=0.4: 1 - 1.4/3.
    assert intra_list_diversity([0, 1, 2], sim) == pytest.approx(1 - 1.4 / 3)
    assert intra_list_diversity([3, 0], sim) == pytest.approx(1.0)  # orthogonal pair
    # Order does not matter: unordered pairs.
    assert intra_list_diversity([2, 0, 1], sim) == pytest.approx(intra_list_diversity([0, 1, 2], sim))
    # Fewer than 2 items: no pairs, undefined -> nan.
    assert math.isnan(intra_list_diversity([2], sim))
    assert math.isnan(intra_list_diversity([], sim))


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    values = np.random.default_rng(1).random(200)
    mean, lo, hi = bootstrap_ci(values)
    assert mean == pytest.approx(values.mean())
    assert lo < mean < hi
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_bootstrap_ci_shrinks_with_more_data():
    rng = np.random.default_rng(2)
    widths = []
    for n in (50, 500, 5000):
        _, lo, hi = bootstrap_ci(rng.random(n))
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # The standard error falls like 1/sqrt(n): 10x the data, about 1/sqrt(10) the width.
    assert widths[2] / widths[1] == pytest.approx(1 / math.sqrt(10), rel=0.25)


def test_bootstrap_ci_constant_vector_has_zero_width():
    assert bootstrap_ci(np.full(40, 0.3)) == pytest.approx((0.3, 0.3, 0.3), abs=0)
    mean, lo, hi = bootstrap_ci([0.7])
    assert mean == lo == hi == 0.7


def test_bootstrap_ci_chunked_matches_size_and_bounds(monkeypatch):
    # Force tiny blocks so several chunks are drawn; results must stay sane and deterministic.
    import recommender.evaluation.metrics as m
    values = np.random.default_rng(3).random(100)
    monkeypatch.setattr(m, "_MAX_BLOCK", 250)
    a = m.bootstrap_ci(values, n_boot=1000)
    assert a == m.bootstrap_ci(values, n_boot=1000)
    assert a[1] < a[0] < a[2]


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([0.1, float("nan")])
    with pytest.raises(ValueError):
        bootstrap_ci([0.1, 0.2], alpha=1.5)
    with pytest.raises(ValueError):
        bootstrap_ci([0.1, 0.2], n_boot=0)


def test_paired_bootstrap_diff():
    rng = np.random.default_rng(4)
    base = rng.random(300)
    better = base + 0.1 + 0.02 * rng.standard_normal(300)
    res = paired_bootstrap_diff(better, base)
    assert set(res) == {"mean_diff", "lo", "hi", "significant"}
    assert res["significant"] is True
    assert res["lo"] > 0 and res["mean_diff"] == pytest.approx(0.1, abs=0.01)
    assert paired_bootstrap_diff(base, better)["hi"] < 0  # sign follows a - b

    same = paired_bootstrap_diff(base, base)
    assert same == {"mean_diff": 0.0, "lo": 0.0, "hi": 0.0, "significant": False}

    # Zero-mean noise: no significant difference.
    noisy = base + 0.05 * rng.standard_normal(300)
    noisy -= (noisy - base).mean()
    assert paired_bootstrap_diff(noisy, base)["significant"] is False

    with pytest.raises(ValueError):
        paired_bootstrap_diff([0.1, 0.2], [0.1])


def test_paired_bootstrap_uses_the_same_indices_for_both():
    # Strongly correlated systems differing by a small constant: an unpaired test would drown
    # the 0.01 gap in the between-query spread, the paired one sees it exactly.
    base = np.random.default_rng(5).random(50)
    res = paired_bootstrap_diff(base + 0.01, base)
    assert res["lo"] == pytest.approx(0.01) and res["hi"] == pytest.approx(0.01)
    assert res["significant"] is True


def test_summarise_is_json_ready():
    s = summarise([0.5, 0.25, 1.0, 0.0])
    assert s["n"] == 4 and s["mean"] == 0.4375
    lo, hi = s["ci95"]
    assert lo <= s["mean"] <= hi
    assert all(round(v, 4) == v for v in (lo, hi))
    assert json.loads(json.dumps(s)) == s
    assert summarise([]) == {"mean": None, "ci95": [None, None], "n": 0}
