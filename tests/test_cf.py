"""Customer recommendations on the committed Online Retail demo (real purchases, small fast ALS)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.catalog.interactions import interactions_from_frame, load_interactions
from recommender.catalog.loader import DEMO_CATALOG, catalog_from_frame, load_catalog
from recommender.errors import QueryError, RecommenderError
from recommender.evaluation.cf_protocols import anchor_systems, evaluate_cold_start, evaluate_customers
from recommender.features.metadata import MetadataEncoder
from recommender.ranking.blend import CustomerRecommender
from recommender.ranking.cf import CollaborativeFilter
from recommender.ranking.hybrid import Filters

RETAIL = DEMO_CATALOG.parents[1] / "online-retail"
WHITE_HEART = "85123A"  # WHITE HANGING HEART T-LIGHT HOLDER, the best seller
RED_HEART = "21733"  # RED HANGING HEART T-LIGHT HOLDER


def small_cf(**kw) -> CollaborativeFilter:
    return CollaborativeFilter(factors=16, iterations=3, **kw)


@pytest.fixture(scope="module")
def retail():
    catalog = load_catalog(RETAIL / "catalog.parquet")
    interactions = load_interactions(RETAIL / "interactions.parquet", catalog)
    return catalog, interactions, MetadataEncoder().fit_transform(catalog.items)


@pytest.fixture(scope="module")
def fitted(retail):
    catalog, interactions, content = retail
    return CustomerRecommender(cf=small_cf()).fit(catalog, interactions, content)


def bought(interactions, user: str) -> set[str]:
    f = interactions.frame
    return set(f.loc[f["user_id"] == user, "item_id"])


def test_demo_files_are_real_and_consistent(retail):
    catalog, interactions, _ = retail
    assert len(catalog) == 3660 and len(interactions) == 396_503 and len(interactions.users) == 4335
    assert (catalog.items["image"] == "").all() and catalog.items["price"].notna().all()
    customers = pd.read_parquet(RETAIL / "customers.parquet")
    assert set(customers["user_id"]) == set(interactions.users)
    assert "CC BY 4.0" in (RETAIL / "NOTICE.md").read_text()


def test_recommendations_exclude_what_was_bought_and_respect_filters(fitted, retail):
    _, interactions, _ = retail
    user = "17850"
    history = bought(interactions, user)
    result = fitted.recommend(user, k=20)
    assert len(result) == 20 and not set(result.ids) & history
    scores = [r.score for r in result.items]
    assert scores == sorted(scores, reverse=True)
    for r in result.items:  # the two contributions make up the score
        assert r.cf_contribution + r.metadata_contribution == pytest.approx(r.score, abs=1e-5)
    cheap = fitted.recommend(user, k=10, filters=Filters(price_max=1.0))
    prices = fitted.catalog_.items.set_index("id").loc[cheap.ids, "price"]
    assert len(cheap) == 10 and (prices <= 1.0).all()
    again = fitted.recommend(user, k=50, exclude_bought=False)
    assert set(again.ids) & history  # the best seller it bought comes back when allowed


def test_every_hit_explains_itself_by_a_bought_product(fitted, retail):
    catalog, interactions, _ = retail
    user = "12347"
    names = set(catalog.items.set_index("id").loc[list(bought(interactions, user)), "name"])
    result = fitted.recommend(user, k=10)
    for r in result.items:
        assert r.because and r.why() == "; ".join(r.because)
        named = [b for b in r.because if b.startswith(("because you bought", "bought together with", "similar to"))]
        assert named, r.because
        assert any(name in reason for reason in named for name in names), r.because


def test_weight_cf_moves_the_ranking_between_the_sides(fitted):
    by_cf = fitted.recommend("12347", k=10, weight_cf=1.0)
    by_content = fitted.recommend("12347", k=10, weight_cf=0.0)
    assert all(r.metadata_contribution == 0 for r in by_cf.items)
    assert all(r.cf_contribution == 0 for r in by_content.items)
    assert by_cf.ids != by_content.ids
    with pytest.raises(QueryError, match="between 0 and 1"):
        fitted.recommend("12347", weight_cf=1.5)
    with pytest.raises(QueryError, match="no customer with id 'nobody'"):
        fitted.recommend("nobody")
    with pytest.raises(QueryError, match="k must be"):
        fitted.recommend("12347", k=0)


def test_also_bought_is_behaviour_not_the_item_itself(fitted):
    also = fitted.also_bought(WHITE_HEART, k=5)
    assert len(also) == 5 and WHITE_HEART not in [i for i, _, _ in also]
    assert RED_HEART in [i for i, _, _ in also]  # its colour twin, bought by the same customers
    with pytest.raises(QueryError, match="no product"):
        fitted.also_bought("no-such-item")


def test_a_product_nobody_bought_is_reached_through_content(retail):
    catalog, interactions, content = retail
    f = interactions.frame
    without_red = interactions.subset((f["item_id"] != RED_HEART).to_numpy())
    buyers = f.loc[f["item_id"] == WHITE_HEART, "user_id"].unique()[:40]
    blend = CustomerRecommender(cf=small_cf()).fit(catalog, without_red, content)
    pure = CustomerRecommender(weight_cf=1.0, cf=small_cf(trend_weight=0.0), min_history=0,
                               cold_neighbours=0).fit(catalog, without_red, content)
    assert not blend.cf_.has_interactions_[catalog.position(RED_HEART)]
    # Half behaviour, half content: customers who bought its white twin are offered it.
    reached = [u for u in buyers if RED_HEART in blend.recommend(u, k=10, weight_cf=0.5).ids]
    assert reached and not any(RED_HEART in pure.recommend(u, k=10).ids for u in buyers)
    hit = next(r for r in blend.recommend(reached[0], k=10, weight_cf=0.5).items if r.id == RED_HEART)
    assert "no purchases yet" in hit.why() and hit.cf_score > 0


def test_a_new_purchase_changes_that_customers_list_without_a_retrain(retail):
    catalog, interactions, content = retail
    rec = CustomerRecommender(cf=small_cf()).fit(catalog, interactions, content)
    user, other = "12347", "17850"
    before, other_before = rec.recommend(user, k=10).ids, rec.recommend(other, k=10).ids
    item_factors = rec.cf_.model_.item_factors.copy()
    new = interactions_from_frame(pd.DataFrame({
        "user_id": [user] * 3, "item_id": ["22423", "21212", "84879"],  # cake stand, cake cases, bird ornament
        "weight": [1, 1, 1], "timestamp": [1323500000] * 3}), catalog)
    rec.partial_fit(new)
    after = rec.recommend(user, k=10).ids
    assert after != before and not {"22423", "21212", "84879"} & set(after)
    assert rec.recommend(other, k=10).ids == other_before
    np.testing.assert_array_equal(rec.cf_.model_.item_factors, item_factors)
    # A customer never seen before is served from their first purchase on.
    rec.partial_fit(interactions_from_frame(pd.DataFrame({
        "user_id": ["new-1"], "item_id": [WHITE_HEART], "timestamp": [1323500000]}), catalog))
    first = rec.recommend("new-1", k=5)
    assert len(first) == 5 and WHITE_HEART not in first.ids
    assert any("short history" in n for n in first.notes)
    with pytest.raises(QueryError, match="not in the fitted catalog"):
        rec.partial_fit(interactions_from_frame(pd.DataFrame({
            "user_id": ["x"], "item_id": ["nope"], "timestamp": [1]})))


def test_models_options_and_bad_settings(retail):
    catalog, interactions, content = retail
    few = interactions.subset(interactions.frame["user_id"].isin(interactions.users[:300]).to_numpy())
    for algorithm in ("bpr", "knn-cosine", "knn-bm25", "popularity"):
        rec = CustomerRecommender(cf=small_cf(algorithm=algorithm)).fit(catalog, few, content)
        user = few.users[0]
        assert len(rec.recommend(user, k=5)) == 5
    with pytest.raises(RecommenderError, match="unknown CF algorithm"):
        CollaborativeFilter(algorithm="svd").fit(few, catalog.ids)
    with pytest.raises(RecommenderError, match="trend_weight"):
        CollaborativeFilter(trend_weight=2).fit(few, catalog.ids)


def test_temporal_protocol_numbers_are_sane_and_the_blend_beats_popularity(retail):
    catalog, interactions, content = retail
    systems = {"popularity": anchor_systems()["popularity"],
               "blend": CustomerRecommender(cf=small_cf())}
    res = evaluate_customers(catalog, interactions, systems, content=content, n_boot=200)
    assert res["protocol"]["queries"] > 1000
    for entry in res["systems"].values():
        for metric in ("P@10", "R@10", "nDCG@10", "MAP@10"):
            s = entry[metric]
            assert 0.0 <= s["ci95"][0] <= s["mean"] <= s["ci95"][1] <= 1.0
            assert s["n"] == res["protocol"]["queries"]
        assert 0.0 < entry["coverage"] <= 1.0
    diff = res["paired"]["blend - popularity"]
    assert diff["lo"] > 0 and diff["significant"]
    assert res["systems"]["blend"]["coverage"] > res["systems"]["popularity"]["coverage"]


def test_cold_start_protocol_pure_cf_scores_zero_content_does_not(retail):
    catalog, interactions, content = retail
    few = interactions.subset(interactions.frame["user_id"].isin(interactions.users[:1500]).to_numpy())
    systems = {"popularity": anchor_systems()["popularity"], "content": CustomerRecommender(0.0, cf=small_cf())}
    res = evaluate_cold_start(catalog, few, systems, content=content, n_boot=200)
    assert res["protocol"]["queries"] > 50
    assert res["systems"]["popularity"]["cold R@10"]["mean"] == 0.0
    assert res["systems"]["content"]["cold R@10"]["ci95"][0] > 0.0


def test_facade_serves_customers_on_a_catalog_without_images(tmp_path, retail):
    from recommender import HybridRecommender

    catalog, interactions, _ = retail
    top = interactions.frame["item_id"].value_counts().index[:300]
    small = catalog_from_frame(catalog.items[catalog.items["id"].isin(top)], tmp_path)
    events = interactions.subset(interactions.frame["item_id"].isin(top).to_numpy())
    rec = HybridRecommender(cache_dir=tmp_path / "cache").fit(small)
    with pytest.raises(QueryError, match="fit_interactions"):
        rec.recommend_for_user("12347")
    rec.fit_interactions(events, cf=small_cf())
    result = rec.recommend_for_user("12347", k=5, weight_cf=0.5)
    assert len(result) == 5 and not set(result.ids) & bought(events, "12347")
    assert rec.recommend(user="12347", k=5, weight_cf=0.5).ids == result.ids  # recommend(user=) routes here
    with pytest.raises(QueryError, match="customer alone"):
        rec.recommend(user="12347", text="heart")
    assert rec.recommend(item=WHITE_HEART, k=3).ids  # product queries still work, by metadata


def test_facade_add_interactions_validates_and_updates_one_customer(tmp_path, retail):
    from recommender import HybridRecommender
    from recommender.catalog.interactions import InteractionsError

    catalog, interactions, _ = retail
    top = interactions.frame["item_id"].value_counts().index[:200]
    small = catalog_from_frame(catalog.items[catalog.items["id"].isin(top)], tmp_path)
    events = interactions.subset(interactions.frame["item_id"].isin(top).to_numpy())
    rec = HybridRecommender(cache_dir=tmp_path / "cache").fit(small)
    with pytest.raises(QueryError, match="fit_interactions"):
        rec.add_interactions([{"user_id": "12347", "item_id": str(top[0])}])
    rec.fit_interactions(events, cf=small_cf())
    with pytest.raises(InteractionsError, match=r"NOPE\) on event\(s\) 2"):
        rec.add_interactions([{"user_id": "u", "item_id": str(top[0])}, {"user_id": "u", "item_id": "NOPE"}])
    with pytest.raises(InteractionsError, match="weight is negative on event"):
        rec.add_interactions({"user_id": ["u"], "item_id": [str(top[0])], "weight": [-1.0]})
    before = rec.recommend_for_user("12347", k=5).ids
    added = rec.add_interactions([{"user_id": "12347", "item_id": before[0], "weight": 2.0}])
    assert len(added) == 1 and added.frame["timestamp"].iat[0] > 1_600_000_000  # no timestamp: now
    after = rec.recommend_for_user("12347", k=5).ids
    assert before[0] not in after and after != before
    rec.add_interactions([{"user_id": "newcomer", "item_id": before[1]}])
    assert before[1] not in rec.recommend_for_user("newcomer", k=5).ids


def test_an_empty_answer_says_why(fitted):
    none = fitted.recommend("12347", filters=Filters(price_max=-1.0))
    assert len(none) == 0 and none.empty_reason == "no product matches the filters"
    assert fitted.recommend("12347", filters=Filters(price_min=1e6)).empty_reason == "no product matches the filters"


def test_kind_weights_leave_purchases_binary_and_make_a_view_a_weaker_signal(retail):
    catalog, interactions, _ = retail
    few = interactions.subset(interactions.frame["user_id"].isin(interactions.users[:200]).to_numpy())
    purchases_only = small_cf(algorithm="popularity").fit(few, catalog.ids)
    binary = (few.matrix(catalog.ids) > 0).astype(np.float32)  # what the model used before kinds were weighted
    assert (purchases_only.user_items_ != binary).nnz == 0  # Online Retail: purchases only, nothing changes
    user = few.users[0]
    seen, bought_too = catalog.ids[0], catalog.ids[1]
    extra = interactions_from_frame(pd.DataFrame({
        "user_id": [user, user, user, "viewer"], "item_id": [seen, bought_too, bought_too, seen],
        "kind": ["View", "view", "purchase", "view"], "timestamp": [1323500000] * 4}), catalog)
    mixed = interactions_from_frame(pd.concat([few.frame, extra.frame], ignore_index=True), catalog)
    cf = small_cf(algorithm="popularity").fit(mixed, catalog.ids)
    row, pos = cf.user_row(user), catalog.position
    assert cf.user_items_[row, pos(seen)] == pytest.approx(0.3)  # a view only (kinds are case-blind)
    assert cf.user_items_[row, pos(bought_too)] == 1.0  # viewed, then bought: the strongest kind counts
    ignore_views = small_cf(algorithm="popularity", kind_weights="view:0").fit(mixed, catalog.ids)
    assert not ignore_views.knows("viewer") or ignore_views.user_items_[ignore_views.user_row("viewer")].nnz == 0
    assert ignore_views.user_items_[ignore_views.user_row(user), pos(seen)] == 0
    # incremental updates keep the strongest kind too: buying what was only viewed lifts the cell to 1
    cf.partial_fit(interactions_from_frame(pd.DataFrame({
        "user_id": [user], "item_id": [seen], "kind": ["purchase"], "timestamp": [1323600000]}), catalog))
    assert cf.user_items_[row, pos(seen)] == 1.0
    cf.partial_fit(interactions_from_frame(pd.DataFrame({
        "user_id": [user], "item_id": [seen], "kind": ["view"], "timestamp": [1323700000]}), catalog))
    assert cf.user_items_[row, pos(seen)] == 1.0
    for bad in ("view", "view:-1", "view:nan", ":2", {"cart": "lots"}, {"view": True}, 3):
        with pytest.raises(RecommenderError, match="kind_weights"):
            small_cf(kind_weights=bad).fit(few, catalog.ids)
