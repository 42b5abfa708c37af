"""SparseIndex (the metadata side's inverted index) against the dense ``items @ q.T`` it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.index.exact import top_k
from recommender.index.sparse import SparseIndex

K = 10


def dense_top_k(items, q, k=K, allow=None):
    s = np.asarray((items @ q.T).todense()).T.astype(np.float32)
    s = np.where(s > 0, s, -np.inf)  # items sharing no term are not results
    if allow is not None:
        s = np.where(allow[None, : s.shape[1]], s, -np.inf)
    return top_k(s, k)


@pytest.fixture(scope="module")
def zipf_items():
    """2,000 product-name-like rows: 3-12 tokens from a Zipf(1.1) vocabulary of 3,000 words, tf-idf, L2-normalised."""
    rng = np.random.default_rng(0)
    n, vocab = 2000, 3000
    lengths = rng.integers(3, 13, n)
    p = np.arange(1, vocab + 1, dtype=float) ** -1.1
    words = rng.choice(vocab, lengths.sum(), p=p / p.sum())
    m = sp.csr_matrix((np.ones(len(words), np.float32), (np.repeat(np.arange(n), lengths), words)), shape=(n, vocab))
    m.sum_duplicates()
    idf = np.log((1 + n) / (1 + np.bincount(m.indices, minlength=vocab))) + 1
    m = sp.csr_matrix(m.multiply(idf[None, :]))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
    return sp.csr_matrix(sp.diags(1 / norms) @ m).astype(np.float32)


def assert_same_ranking(items, q, got, want):
    """Same top-k scores, and every returned id scores what the dense product says (ids may differ only in ties)."""
    (scores, ids), (ds, di) = got, want
    np.testing.assert_allclose(scores, ds, rtol=1e-5)
    dense = np.asarray((items @ q.T).todense()).T
    found = ids >= 0
    np.testing.assert_array_equal(found, di >= 0)
    rows = np.nonzero(found)[0]
    np.testing.assert_allclose(dense[rows, ids[found]], scores[found], rtol=1e-5)
    assert (np.mean(ids == di) >= 0.98), "ids differ beyond ties"


def test_matches_the_dense_product_on_the_real_demo_metadata(demo_recommender):
    items = sp.csr_matrix(demo_recommender.metadata_matrix_, dtype=np.float32)
    index = SparseIndex(items.shape[1]).fit(items)
    assert index.ntotal == items.shape[0]
    assert_same_ranking(items, items, index.search(items, K), dense_top_k(items, items))


def test_matches_dense_with_filters_on_zipfian_text(zipf_items):
    index = SparseIndex(zipf_items.shape[1]).fit(zipf_items)
    q = zipf_items[:50]
    for share in (1.0, 0.1, 0.01):
        allow = np.random.default_rng(3).random(zipf_items.shape[0]) < share
        scores, ids = index.search(q, K, allow)
        assert_same_ranking(zipf_items, q, (scores, ids), dense_top_k(zipf_items, q, allow=allow))
        assert allow[ids[ids >= 0]].all()


def test_add_replace_remove_and_compact_match_a_fresh_build(zipf_items):
    n = zipf_items.shape[0]
    index = SparseIndex(zipf_items.shape[1], compact_at=10**9).fit(zipf_items[:1500], np.arange(1500))
    index.add(np.arange(1500, n), zipf_items[1500:])  # new ids: to the delta
    index.add(np.array([7, 8]), zipf_items[[100, 101]])  # replace two rows of the main part
    index.remove(np.array([9, 1600, 10**7, -1]))  # one from main, one from the delta, two absent
    expect = sp.vstack([zipf_items[:7], zipf_items[[100, 101]], zipf_items[9:]], format="csr")
    keep = np.ones(n, bool)
    keep[[9, 1600]] = False
    q = zipf_items[95:125]
    before = index.search(q, K)
    assert_same_ranking(expect, q, before, dense_top_k(expect, q, allow=keep))
    assert index.ntotal == n - 2
    index.compact()
    assert_same_ranking(expect, q, index.search(q, K), before)
    assert index.ntotal == n - 2


def test_no_shared_term_no_result_and_padding(zipf_items):
    index = SparseIndex(zipf_items.shape[1]).fit(zipf_items[:3])
    scores, ids = index.search(zipf_items[:1], 8)
    assert ids[0, 0] == 0 and (ids[0, (scores[0] == -np.inf)] == -1).all()
    empty_q = sp.csr_matrix((1, zipf_items.shape[1]), dtype=np.float32)
    assert (index.search(empty_q, 4)[1] == -1).all()


@pytest.mark.parametrize(
    "bad",
    [
        lambda m, i: i.search(m[:1, :10], 3),  # wrong number of terms
        lambda m, i: i.search(m[:1].toarray(), 3),  # dense query
        lambda m, i: i.search(m[:1], -2),  # negative k
        lambda m, i: i.search(m[:1], 3, np.arange(5)),  # allow not boolean
        lambda m, i: i.add(np.array([-1]), m[:1]),  # negative id
        lambda m, i: i.add(np.array([1, 2]), m[:1]),  # count mismatch
        lambda m, i: i.add(np.array([1]), sp.csr_matrix(np.full((1, m.shape[1]), np.nan, np.float32))),  # NaN
        lambda m, i: SparseIndex(m.shape[1]).fit(m[:3], np.array([0, 0, 1])),  # duplicate ids in fit
    ],
)
def test_bad_input_is_a_value_error(bad, zipf_items):
    index = SparseIndex(zipf_items.shape[1]).fit(zipf_items[:50])
    with pytest.raises(ValueError):
        bad(zipf_items, index)
    assert index.ntotal == 50
