"""Query-side expansion (``qe_k``, ``qe_alpha``, ``qe_photos``; recommender/ranking/expansion.py) on the real demo.

An item query is ranked once, expanded by its best ``qe_k`` results on both sides and ranked again over the same
candidate rows; the catalog's vectors never change. Off (``qe_k=0``) is the old ranking exactly.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from recommender import Filters, HybridRecommender, querying
from recommender.errors import RecommenderError
from recommender.evaluation.protocols import leave_one_out
from recommender.index.exact import l2_normalise
from recommender.ranking.expansion import expand_dense, expand_sparse, feedback_scale, feedback_weights

LABEL_FREE = ("category", "sub_category")  # as leave-one-out by sub_category: the label is not a feature


@pytest.fixture(scope="module")
def pair(demo_catalog, demo_recommender):
    """The demo without its category labels in the metadata, fitted plain and with expansion (shared cache)."""
    params = {"backbone": "efficientnet_lite0", "cache_dir": demo_recommender.cache_dir, "exclude_fields": LABEL_FREE}
    plain = HybridRecommender(**params, qe_k=0).fit(demo_catalog)
    expanded = HybridRecommender(**params, qe_k=2).fit(demo_catalog)
    return plain, expanded


def _p_at_5(rec, catalog) -> np.ndarray:
    labels = catalog.items["sub_category"].astype(str).to_numpy()
    out = []
    for i, pid in enumerate(catalog.ids):
        got = [r.position for r in rec.recommend(item=pid, k=5).items]
        out.append(np.mean(labels[got] == labels[i]))
    return np.array(out)


def test_expansion_is_a_plain_parameter():
    rec = HybridRecommender(qe_k=3, qe_alpha=2.5, qe_photos=True)
    assert rec.get_params()["qe_k"] == 3 and rec.qe_alpha == 2.5 and rec.qe_photos is True
    assert clone(rec).get_params() == rec.get_params()
    assert HybridRecommender(qe_k=-1).qe_k == -1  # stored as given; checked at fit


def test_auto_expands_when_every_row_is_scored_exactly_and_not_on_the_ann_path(pair, demo_catalog):
    """``qe_k="auto"`` (the default): 2 feedback rows on the exact scan, none with an ANN index, where a filtered
    query's feedback needs a second candidate search (docs/index.md, session 13); an explicit ``qe_k`` applies."""
    params = {k: v for k, v in pair[1].get_params().items() if k not in ("qe_k", "index")}
    assert HybridRecommender().qe_k == "auto"
    exact = HybridRecommender(**params).fit(demo_catalog)
    assert exact.image_index_ is None and exact.qe_k_ == 2 and exact.expands()
    ann = HybridRecommender(**params, index="hnsw").fit(demo_catalog)
    assert ann.image_index_ is not None and ann.qe_k_ == 0 and not ann.expands()
    assert copy.copy(ann).set_params(qe_k=2).qe_k_ == 2  # asked for: expanded on the ANN path too
    for pid in demo_catalog.ids[::11]:  # auto on the exact path is qe_k=2 exactly
        assert exact.recommend(item=pid, k=10).ids == pair[1].recommend(item=pid, k=10).ids


@pytest.mark.parametrize("bad", [{"qe_k": -1}, {"qe_k": 1.5}, {"qe_k": "on"}, {"qe_alpha": -1.0}])
def test_bad_settings_fail_at_fit_with_one_line(demo_catalog, bad):
    rec = HybridRecommender(**bad)
    with pytest.raises(RecommenderError, match="qe_"):
        rec.fit_vectors(demo_catalog, np.eye(len(demo_catalog), 8, dtype=np.float32))


def test_expanded_item_queries_find_more_of_the_same_sub_category(pair, demo_catalog):
    """The lever's point: "more like this" ranks products of the query's own kind higher (leave-one-out by
    sub_category, labels not in the features; measured .710 -> .742 at qe_k=2 with flip-TTA, .717 -> .735 without,
    the default since session 17: docs/evaluation.md)."""
    plain, expanded = pair
    before, after = _p_at_5(plain, demo_catalog), _p_at_5(expanded, demo_catalog)
    assert after.mean() > before.mean() + 0.01, (before.mean(), after.mean())
    assert (after > before).sum() > (after < before).sum(), (after - before).tolist()  # more queries gain than lose


def test_the_protocol_scores_what_recommend_returns(pair, demo_catalog):
    """leave_one_out ranks from similarity rows; with expansion on it must give recommend(item=...)'s lists."""
    _, expanded = pair
    out = leave_one_out(demo_catalog, "sub_category", (5,), (expanded.weight,), recommender=clone(expanded),
                        per_query=True)
    assert out["n_queries"] == len(demo_catalog)  # every demo product shares its sub_category with another
    got = np.array(out["per_query"][f"hybrid_w{expanded.weight:g}"]["P@5"])
    assert np.allclose(got, _p_at_5(expanded, demo_catalog), atol=1e-6)


def test_off_is_the_old_ranking_exactly(pair, demo_catalog):
    plain, expanded = pair
    off = copy.copy(expanded).set_params(qe_k=0)  # the same fit, expansion switched off
    for pid in demo_catalog.ids[::3]:
        want, got = plain.recommend(item=pid, k=10), off.recommend(item=pid, k=10)
        assert got.ids == want.ids and [r.score for r in got.items] == [r.score for r in want.items]


def test_photo_and_text_queries_are_not_expanded_unless_asked(pair, demo_catalog):
    plain, expanded = pair
    photo = demo_catalog.image_path(demo_catalog.position("tennis-ball"))
    for query in ({"image": photo}, {"text": "black running shoe"}, {"image": photo, "text": "ball"}):
        want, got = plain.recommend(k=10, **query), expanded.recommend(k=10, **query)
        assert got.ids == want.ids and [r.score for r in got.items] == [r.score for r in want.items]
    photos_too = copy.copy(expanded).set_params(qe_photos=True)
    changed = [photos_too.recommend(image=demo_catalog.image_path(i), k=10).ids
               != plain.recommend(image=demo_catalog.image_path(i), k=10).ids for i in range(0, 89, 4)]
    assert any(changed)
    assert photos_too.recommend(text="black running shoe", k=10).ids == plain.recommend(
        text="black running shoe", k=10).ids


def test_shown_side_scores_are_against_the_query_itself(pair):
    """``score`` ranks by the expanded query; ``image_score`` / ``metadata_score`` stay the product's cosine to the
    query product itself (an identical photo still shows 1.0)."""
    plain, expanded = pair
    q = expanded.catalog_.position("football")
    res = expanded.recommend(item="football", k=8)
    vecs = np.asarray(expanded.image_vectors_, np.float32)
    for r in res.items:
        assert r.image_score == pytest.approx(float(vecs[q] @ vecs[r.position]), abs=1e-5)
        own = expanded.metadata_matrix_[q].multiply(expanded.metadata_matrix_[r.position]).sum()
        assert r.metadata_score == pytest.approx(float(own), abs=1e-5)
    assert [r.score for r in res.items] == sorted((r.score for r in res.items), reverse=True)


def test_no_catalog_vector_changes(pair):
    plain, expanded = pair
    img, meta = np.array(expanded.image_vectors_, copy=True), expanded.metadata_matrix_.copy()
    for pid in list(expanded.catalog_.ids)[:20]:
        expanded.recommend(item=pid, k=5)
    assert np.array_equal(np.asarray(expanded.image_vectors_), img)
    assert np.array_equal(np.asarray(expanded.image_vectors_), np.asarray(plain.image_vectors_))
    assert (expanded.metadata_matrix_ != meta).nnz == 0


def test_filters_and_deletions_are_respected(pair, demo_catalog):
    _, expanded = pair
    cats = demo_catalog.items.set_index("id")["category"]
    for pid in demo_catalog.ids[::7]:
        everything = {r.id: r.score for r in expanded.recommend(item=pid, k=88).items}
        res = expanded.recommend(item=pid, k=10, filters=Filters(category=cats[pid]))
        assert res.items and all(cats[r.id] == cats[pid] for r in res.items) and pid not in res.ids
        # The feedback rows ignore the filter: a product scores as it does unfiltered (docs/ranking.md 9.2).
        assert all(r.score == pytest.approx(everything[r.id], abs=1e-6) for r in res.items)
    live = HybridRecommender(**expanded.get_params()).fit(demo_catalog)  # its own copy to delete from
    query = "tennis-ball"
    gone = live.recommend(item=query, k=3).ids  # the feedback rows of the first ranking, then removed
    live.remove(gone)
    res = live.recommend(item=query, k=20)
    assert not set(gone) & set(res.ids) and query not in res.ids


def test_the_candidate_path_rescores_its_own_rows_without_a_second_search(pair, demo_catalog, monkeypatch):
    """A large catalog's path (image ANN top-K ∪ metadata postings top-K) forced on the demo: one index search
    per query, and every result is one of that search's candidates."""
    expanded = HybridRecommender(**{**pair[1].get_params(), "index": "hnsw"}).fit(demo_catalog)
    assert expanded.image_index_ is not None
    monkeypatch.setattr(querying, "EXACT_SCAN_LIMIT", 0)
    monkeypatch.setattr(querying, "MAPPED_SCAN_LIMIT", 0)
    monkeypatch.setattr(querying, "CANDIDATES_PER_SIDE", 10)
    searches: list[set[int]] = []
    real = querying.index_top

    def spy(index, q, k, allow):
        found = real(index, q, k, allow)
        searches.append(set(np.asarray(found).tolist()))
        return found

    monkeypatch.setattr(querying, "index_top", spy)
    meta_top: list[set[int]] = []
    real_sparse_top = querying.sparse_top

    def sparse_spy(*args):
        found = real_sparse_top(*args)
        meta_top.append(set(np.asarray(found).tolist()))
        return found

    monkeypatch.setattr(querying, "sparse_top", sparse_spy)
    for pid in demo_catalog.ids[::9]:
        searches.clear()
        meta_top.clear()
        res = expanded.recommend(item=pid, k=10)
        assert len(searches) == 1 and len(meta_top) == 1
        assert set(r.position for r in res.items) <= searches[0] | meta_top[0]


def test_expand_dense_and_sparse():
    rng = np.random.default_rng(0)
    x = l2_normalise(rng.normal(size=(6, 5)))
    q = x[0]
    assert np.array_equal(expand_dense(q, x, np.array([], np.int64), 3.0), q)
    got = expand_dense(q, x, np.array([1, 2]), 0.0)
    assert np.allclose(got, l2_normalise(q + x[1] + x[2]))
    w = feedback_weights(x[[1, 2]] @ q, 3.0)
    assert np.allclose(expand_dense(q, x, np.array([1, 2]), 3.0), l2_normalise(q + w @ x[[1, 2]]), atol=1e-6)
    assert np.all(feedback_weights(np.array([-0.5, np.nan, 0.5]), 2.0) == np.array([0.0, 0.0, 0.25], np.float32))
    m = sp.csr_matrix(x)
    qs = expand_sparse(m[0], m, np.array([1, 2]), 0.0)
    assert sp.issparse(qs) and np.allclose(qs.toarray().ravel(), l2_normalise(q + x[1] + x[2]), atol=1e-6)


def test_what_is_expanded(pair):
    _, expanded = pair
    assert expanded.expands() and not expanded.expands(photo=True)
    assert copy.copy(expanded).set_params(qe_photos=True).expands(photo=True)
    assert not copy.copy(expanded).set_params(qe_k=0).expands()
    projected = copy.copy(expanded)
    projected.label_projection_ = object()  # a fitted label projection: not measured with expansion, so off
    assert not projected.expands()


def test_feedback_variants_rank_decay_and_side_mass(pair, demo_catalog):
    """Opt-in variants of the feedback (``qe_decay``, ``qe_side_mass``: class attributes whose defaults are today's
    expansion): ``qe_decay=0`` keeps only the best feedback row, so ``qe_k=2`` ranks as ``qe_k=1``; a side's mass 0
    leaves that side of the query as it was."""
    _, expanded = pair
    assert expanded.qe_decay == 1.0 and expanded.qe_side_mass == (1.0, 1.0)
    assert feedback_scale(2) is None  # the default: no multiplier at all
    assert np.allclose(feedback_scale(3, 0.5, 2.0), [2.0, 1.0, 0.5])
    q = expanded.catalog_.position("football")
    q_img, q_meta = expanded.image_vectors_[q], expanded.metadata_matrix_[q]
    feedback = np.array([r.position for r in expanded.recommend(item="football", k=2).items])
    full_img, full_meta = expanded.expanded_query(q_img, q_meta, feedback)
    best_img, best_meta = expanded.expanded_query(q_img, q_meta, feedback[:1])
    assert not np.allclose(full_img, best_img)  # the second row does move the query by default

    decayed = copy.copy(expanded)
    decayed.qe_decay = 0.0
    got_img, got_meta = decayed.expanded_query(q_img, q_meta, feedback)
    assert np.allclose(got_img, best_img, atol=1e-6)
    assert np.allclose(got_meta.toarray(), best_meta.toarray(), atol=1e-6)
    one_row = copy.copy(expanded).set_params(qe_k=1)
    for pid in demo_catalog.ids[::11]:
        assert decayed.recommend(item=pid, k=10).ids == one_row.recommend(item=pid, k=10).ids

    image_only = copy.copy(expanded)
    image_only.qe_side_mass = (1.0, 0.0)
    got_img, got_meta = image_only.expanded_query(q_img, q_meta, feedback)
    assert np.allclose(got_img, full_img, atol=1e-6)
    assert np.allclose(got_meta.toarray(), l2_normalise(q_meta.toarray()), atol=1e-6)
    assert not np.allclose(got_meta.toarray(), full_meta.toarray())
    halved = copy.copy(expanded)
    halved.qe_side_mass = (0.5, 0.5)
    x = np.asarray(expanded.image_vectors_, np.float32)[feedback]
    assert np.allclose(halved.expanded_query(q_img, None, feedback)[0],
                       l2_normalise(np.asarray(q_img, np.float32) + 0.5 * x.sum(axis=0)), atol=1e-6)


def test_the_default_weight_adapts_per_item_query_and_an_explicit_one_does_not(pair, demo_catalog):
    """adaptive_weight: the default weight moves towards the side whose best match stands out on the first,
    unfiltered pass (docs/evaluation.md, session 18); an explicit weight, a photo, or no expansion keep it."""
    plain, expanded = pair
    used = {pid: expanded.recommend(item=pid, k=5).weight for pid in demo_catalog.ids[::4]}
    assert all(0.0 < w < 1.0 for w in used.values())
    assert len({round(w, 3) for w in used.values()}) > 5 and min(used.values()) < 0.4 < 0.6 < max(used.values())
    for pid in list(used)[:5]:
        assert expanded.recommend(item=pid, k=5, weight=expanded.weight).weight == expanded.weight
        assert plain.recommend(item=pid, k=5).weight == plain.weight  # qe_k=0: no first pass to measure
        fixed = copy.copy(expanded).set_params(adaptive_weight=False)
        assert fixed.recommend(item=pid, k=5).weight == expanded.weight
    photo = demo_catalog.image_path(demo_catalog.position("tennis-ball"))
    assert expanded.recommend(image=photo, k=5).weight == expanded.photo_weight
