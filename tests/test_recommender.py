"""End-to-end behaviour on the real demo catalog with the real EfficientNet-Lite0 weights."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from recommender import Filters, HybridRecommender, ImageError, QueryError, RecommenderError
from recommender.features.inference import plan_inference


def _mirrored(path) -> bytes:
    buf = io.BytesIO()
    ImageOps.mirror(Image.open(path).convert("RGBA")).save(buf, "PNG")
    return buf.getvalue()


def test_fitted_state(demo_recommender, demo_catalog):
    rec = demo_recommender
    assert rec.backbone_ == "efficientnet_lite0"
    # Default pipeline: pooled features (1280) + ImageNet class probabilities (1000); no flip-TTA, no DBA.
    assert rec.image_vectors_.shape == (89, 1280 + 1000) and rec.image_vectors_.dtype == np.float32
    plan = plan_inference("auto")
    assert rec.image_pipeline_description() == (
        f"efficientnet_lite0 + {plan.runtime} {plan.precision} + semantic 0.5 + photo colour 0.3")
    assert rec.colour_vectors_.shape == (89, 512)
    np.testing.assert_allclose(np.linalg.norm(rec.image_vectors_, axis=1), 1.0, rtol=1e-5)
    assert rec.has_image_.all()
    assert rec.build_report_.embedded + rec.build_report_.reused == 89


def test_own_image_ranks_first(demo_recommender, demo_catalog):
    """Every product's own photo finds it first (or tied first with a product sharing that photo)."""
    for i, pid in enumerate(demo_catalog.ids):
        res = demo_recommender.recommend(image=demo_catalog.image_path(i), k=3)
        top = res.items[0]
        shares_the_photo = (demo_catalog.image_path(demo_catalog.position(top.id)).read_bytes()
                            == demo_catalog.image_path(i).read_bytes())
        assert top.id == pid or (shares_the_photo and pid in res.ids), (pid, res.ids)


@pytest.mark.parametrize("pid", ["ultraboost-running-shoe", "laptop", "tennis-ball", "white-plimsolls", "orchid"])
def test_mirror_image_within_top3(demo_recommender, demo_catalog, pid):
    res = demo_recommender.recommend(image=_mirrored(demo_catalog.image_path(demo_catalog.position(pid))), k=3)
    assert pid in res.ids


def test_mirror_image_within_top3_across_catalog(demo_recommender, demo_catalog):
    # Near-identical renders (Saleor's juice bottles) may swap places; nearly all must hold.
    hits = sum(pid in demo_recommender.recommend(image=_mirrored(demo_catalog.image_path(i)), k=3).ids
               for i, pid in enumerate(demo_catalog.ids))
    assert hits / len(demo_catalog) >= 0.95


def test_item_query_excludes_itself_and_explains(demo_recommender):
    res = demo_recommender.recommend(item="freerun-running-shoe", k=5)
    assert "freerun-running-shoe" not in res.ids and len(res) == 5
    top = res.items[0]
    assert top.shared.get("sub_category") == ["Footwear"]
    assert top.score == pytest.approx(top.image_contribution + top.metadata_contribution, abs=1e-6)
    assert 0 <= top.score <= 1


def test_weight_changes_the_order(demo_recommender):
    by_image = demo_recommender.recommend(item="laptop", k=10, weight=1.0).ids
    by_meta = demo_recommender.recommend(item="laptop", k=10, weight=0.0).ids
    assert by_image != by_meta


def test_items_and_photos_have_their_own_default_weight(demo_recommender, demo_catalog):
    # An item brings its own metadata; a photo only borrows its matches', so its image side leads.
    item = demo_recommender.recommend(item="laptop", k=5)
    photo = demo_recommender.recommend(image=demo_catalog.image_path(0), k=5)
    assert (demo_recommender.weight, demo_recommender.photo_weight) == (0.5, 0.7)
    assert 0.0 < item.weight < 1.0  # the item default adapts per query (adaptive_weight; tests/test_query_expansion)
    assert photo.weight == 0.7
    assert demo_recommender.recommend(image=demo_catalog.image_path(0), k=5, weight=0.2).weight == 0.2
    assert demo_recommender.recommend(item="laptop", k=5, weight=0.2).weight == 0.2
    # The breakdown follows the weight used: each side's contribution is its weight times a score in [0, 1].
    assert all(r.image_contribution <= 0.7 + 1e-6 and r.metadata_contribution <= 0.3 + 1e-6 for r in photo.items)
    assert photo.items[0].image_contribution > 0.5  # the photo's own product: its image side is near 1


def test_filters_apply_before_ranking(demo_recommender, demo_catalog):
    f = Filters(category=["Home & Garden"], price_max=50)
    res = demo_recommender.recommend(item="laptop", k=20, filters=f)
    rows = demo_catalog.items.set_index("id").loc[res.ids]
    assert len(res) > 0 and (rows["category"] == "Home & Garden").all() and (rows["price"] <= 50).all()
    assert res.n_candidates == int(f.mask(demo_catalog).sum())


def test_empty_result_names_the_filter(demo_recommender):
    res = demo_recommender.recommend(item="laptop", filters=Filters(category=["Groceries"], brand=["Nike"]))
    assert len(res) == 0
    assert "brand 'Nike'" in res.empty_reason and "category" in res.empty_reason


def test_upload_without_text_infers_metadata_from_neighbours(demo_recommender, demo_catalog):
    """The description is borrowed from the photo's closest image matches as ranked: by shape alone
    they are sports equipment (the photo colour default lets other yellow things join them)."""
    ball = demo_catalog.image_path(demo_catalog.position("tennis-ball"))
    shape = demo_recommender.recommend(image=ball, k=5, colour_weight=0.0)
    assert shape.ids[0] == "tennis-ball"
    assert shape.query_attributes.get("sub_category") == ["Equipment"]
    assert any("closest image matches (" in n and "Equipment" in n for n in shape.notes)
    assert demo_recommender.recommend(image=ball, k=5).ids[0] == "tennis-ball"


def test_upload_with_text(demo_recommender, demo_catalog):
    shoe = demo_catalog.image_path(demo_catalog.position("runx-running-shoe"))
    res = demo_recommender.recommend(image=shoe.read_bytes(), text="black Adidas running shoe", k=3)
    assert res.query_attributes == {"brand": ["adidas"], "colour": ["black"]}
    assert res.ids[0] == "runx-running-shoe"


def test_text_only_query(demo_recommender, demo_catalog):
    res = demo_recommender.recommend(text="indoor plant in a pot", k=5)
    subs = demo_catalog.items.set_index("id").loc[res.ids, "sub_category"]
    assert (subs == "Plants").sum() >= 4
    assert res.weight == 0.0 and np.isnan(res.items[0].image_score)


@pytest.mark.parametrize("bad", [{"weight": 1.5}, {"photo_weight": -0.1}, {"photo_weight": float("nan")},
                                 {"colour_weight": "0.3"}, {"photo_colour_weight": True}, {"adaptive_weight": "false"},
                                 {"adaptive_weight": 1}])
def test_bad_weights_fail_at_fit_with_one_line(demo_catalog, bad):
    name = next(iter(bad))
    with pytest.raises(RecommenderError, match=f"^{name} must be (a number between 0 and 1|true or false)"):
        HybridRecommender(**bad).fit_vectors(demo_catalog, np.eye(len(demo_catalog), 8, dtype=np.float32))


def test_bad_queries(demo_recommender):
    with pytest.raises(QueryError, match="no product with id"):
        demo_recommender.recommend(item="no-such-thing")
    with pytest.raises(QueryError, match="nothing to search for"):
        demo_recommender.recommend(text="   ")
    with pytest.raises(QueryError, match="weight"):
        demo_recommender.recommend(item="laptop", weight=1.5)
    with pytest.raises(ImageError, match="not an image"):
        demo_recommender.recommend(image=b"%PDF-1.4 not a photo")


def test_results_serialise(demo_recommender, demo_catalog):
    res = demo_recommender.recommend(text="camera", k=3)
    d = res.to_dict()
    assert [r["id"] for r in d["results"]] == res.ids and d["results"][0]["image_score"] is None
    frame = res.to_frame(demo_catalog)
    assert list(frame["id"]) == res.ids and "brand" in frame.columns


def test_colour_weight_finds_the_same_product_in_another_shot(demo_recommender, demo_catalog):
    """The yellow plimsolls' side view: by shape alone the white pair (same shot angle) competes;
    with colour on, the yellow pair's other shots win."""
    side = demo_catalog.root / "images" / "yellow-plimsolls_3.png"
    plain = demo_recommender.recommend(image=side, k=1, weight=1.0, colour_weight=0.0)
    coloured = demo_recommender.recommend(image=side, k=1, weight=1.0, colour_weight=0.5)
    assert coloured.ids == ["yellow-plimsolls"]
    assert coloured.items[0].image_score >= plain.items[0].image_score - 1  # a valid cosine mix


def test_photo_queries_default_to_colour_and_item_queries_do_not(demo_recommender, demo_catalog):
    """The back view of the yellow plimsolls, uploaded: colour (the photo default, 0.3) finds the
    product; by shape alone boxing gloves and paint tins come first. An item query keeps colour off."""
    back = demo_catalog.root / "images" / "yellow-plimsolls_4.png"
    assert demo_recommender.default_colour_weight(photo=True) == 0.3
    assert demo_recommender.default_colour_weight() == 0.0
    default = demo_recommender.recommend(image=back, k=5)
    assert default.ids[0] == "yellow-plimsolls"
    assert default.ids == demo_recommender.recommend(image=back, k=5, colour_weight=0.3).ids
    assert "yellow-plimsolls" not in demo_recommender.recommend(image=back, k=3, colour_weight=0.0).ids
    item = demo_recommender.recommend(item="yellow-plimsolls", k=5)
    assert item.ids == demo_recommender.recommend(item="yellow-plimsolls", k=5, colour_weight=0.0).ids


def test_diversity_trades_similarity_for_variety(demo_recommender):
    plain = demo_recommender.recommend(item="nebula-night-sky-paint", k=5, weight=1.0)
    varied = demo_recommender.recommend(item="nebula-night-sky-paint", k=5, weight=1.0, diversity=0.7)
    assert plain.ids[0] == varied.ids[0]  # the first pick is always the most relevant
    assert plain.ids != varied.ids
    sim = demo_recommender.image_similarity_matrix()

    def mean_pairwise(res):
        p = [r.position for r in res.items]
        return np.mean([sim[a, b] for i, a in enumerate(p) for b in p[i + 1:]])
    assert mean_pairwise(varied) < mean_pairwise(plain)
    assert any("diversity" in n for n in varied.notes)


# -- issue 9: results a shopper can trust ---------------------------------------------------------

def _distinct_photo_pairs(catalog):
    import hashlib

    digests = np.array([hashlib.sha256(catalog.image_path(i).read_bytes()).hexdigest() for i in range(len(catalog))])
    return digests[:, None] != digests[None, :]


@pytest.mark.parametrize("dba", [{}, {"dba_k": 2}, {"dba_k": 5, "dba_mix": 1.0}])
def test_no_two_different_products_share_an_image_vector(demo_recommender, demo_catalog, dba):
    """Issue 9.1: the default (and the DBA settings offered) never make two different photos one vector."""
    from recommender import HybridRecommender

    rec = demo_recommender if not dba else HybridRecommender(
        backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir, **dba).fit(demo_catalog)
    v = rec.image_vectors_
    sim = v @ v.T
    assert sim[_distinct_photo_pairs(demo_catalog)].max() < 0.999


def test_more_like_the_football_finds_balls_not_statues(demo_recommender):
    ids = demo_recommender.recommend(item="football", k=6).ids
    assert "basketball" in ids[:3] and "guardian-lion-statue" not in ids


def test_a_filtered_query_scores_products_as_the_unfiltered_one_does(demo_recommender):
    """Issue 9.2: scores are calibrated catalog-wide, not over what the filters leave."""
    plain = {r.id: r for r in demo_recommender.recommend(item="laptop", k=88).items}
    # The list filter first: the pre-issue code read a string filter as its letters and failed on that.
    for f in (Filters(sub_category=["Computers"], price_max=200), Filters(category="Electronics")):
        filtered = demo_recommender.recommend(item="laptop", k=88, filters=f)
        assert len(filtered) > 1
        for r in filtered.items:
            assert r.score == pytest.approx(plain[r.id].score, abs=1e-6)
            assert r.image_contribution == pytest.approx(plain[r.id].image_contribution, abs=1e-6)
    one = demo_recommender.recommend(item="laptop", filters=Filters(brand="Samsung", price_min=300))
    assert one.ids == ["32-inch-monitor"] and one.items[0].score == pytest.approx(plain["32-inch-monitor"].score)
    assert 0 < one.items[0].score < 1


def test_a_nonsense_text_query_returns_nothing_and_says_why(demo_recommender):
    """Issue 9.3: no evidence, no results."""
    for text in ("zzqx blorf", "Schuhe"):
        res = demo_recommender.recommend(text=text)
        assert len(res) == 0 and res.empty_reason == f"no product matches {text!r}"


def test_text_results_all_have_evidence_and_never_look_similar(demo_recommender):
    res = demo_recommender.recommend(text="wireless mouse", k=12)
    assert res.ids[0] == "cordless-mouse"
    for r in res.items:  # no filler: every result shares a word with the query
        assert r.matched and "looks similar" not in r.why()


def test_a_result_with_no_image_evidence_never_looks_similar(demo_catalog, tmp_path):
    """Issue 9.3 on a 5-product catalog of one's own: a result kept only for a word in common (its image
    no closer than a random pair) is not labelled "looks similar"; the sneaker's first match is a shoe."""
    import shutil

    from recommender import HybridRecommender, load_catalog

    ids = ["allstar-sneakers", "white-plimsolls", "black-hoodie", "t-shirt", "laptop"]
    items = demo_catalog.items.set_index("id").loc[ids].reset_index()
    (tmp_path / "images").mkdir()
    for rel in items["image"]:
        shutil.copy(demo_catalog.root / rel, tmp_path / rel)
    items.to_csv(tmp_path / "catalog.csv", index=False)
    # Scores against the query itself (qe_k=0): expanded by its two best matches (the default), every result
    # of this 5-product catalog has some image evidence and the check below would be vacuous.
    rec = HybridRecommender(backbone="efficientnet_lite0", cache_dir=tmp_path / "cache", qe_k=0).fit(
        load_catalog(tmp_path / "catalog.csv"))
    assert rec.recommend(item="allstar-sneakers", k=1).ids == ["white-plimsolls"]
    expanded = HybridRecommender(**{**rec.get_params(), "qe_k": 2}).fit(load_catalog(tmp_path / "catalog.csv"))
    assert expanded.recommend(item="allstar-sneakers", k=1).ids == ["white-plimsolls"]
    no_image_evidence = [r for q in ids for r in rec.recommend(item=q).items if r.image_contribution <= 0]
    assert no_image_evidence  # this catalog has such results: the check below is not vacuous
    assert all(r.why() != "looks similar" for r in no_image_evidence), [(r.id, r.why()) for r in no_image_evidence]


def test_weak_flags_a_list_whose_best_match_is_poor(demo_recommender):
    strong = demo_recommender.recommend(text="wireless mouse")
    assert not strong.weak and strong.items[0].score >= demo_recommender.weak_score
    # (Was "cheap nike shoes under 50": with the text embedding its best match - a $44.95 running shoe -
    # scores .36, no longer "poor". A hand trowel for a garden hose is poor either way: .14 / .16 without.)
    weak = demo_recommender.recommend(text="garden hose")
    assert weak.weak and 0 < weak.items[0].score < demo_recommender.weak_score


def test_black_running_shoe(demo_recommender, demo_catalog):
    """Issue 9.4: 'black' is a colour filter; the words left ('running shoe') must match."""
    res = demo_recommender.recommend(text="black running shoe", k=6)
    rows = demo_catalog.items.set_index("id").loc[res.ids]
    assert len(res) >= 3 and all("black" in c for c in rows["colour"])
    assert all("Running Shoe" in n for n in rows["name"][:3]) and "black-eaves-chair" not in res.ids
    # Word matches first; after them (text embedding on) only black footwear close in meaning (sneakers).
    assert set(rows["sub_category"]) == {"Footwear"}
    assert all(r.matched for r in res.items[:3])
    assert res.query_attributes == {"colour": ["black"]}


def test_cheap_nike_shoes_under_50(demo_recommender, demo_catalog):
    """'under 50' is a price filter; no Nike product is under 50, so 'nike' falls back to a word
    (said in the notes) and a shoe under 50 comes first - not the Football."""
    res = demo_recommender.recommend(text="cheap nike shoes under 50", k=6)
    rows = demo_catalog.items.set_index("id").loc[res.ids]
    assert len(res) >= 1 and (rows["price"] <= 50).all() and "football" not in res.ids
    assert "Shoe" in rows["name"].iat[0]
    assert any("price <= 50" in n for n in res.notes) and any("brand 'nike'" in n for n in res.notes)
    nike = demo_recommender.recommend(text="nike shoes", k=6)
    assert set(nike.ids) == {"freerun-running-shoe", "hi-top-basketball-shoe"}


def test_price_words_become_filters(demo_recommender, demo_catalog):
    res = demo_recommender.recommend(text="camera between 100 and 700", k=20)
    prices = demo_catalog.items.set_index("id").loc[res.ids, "price"]
    assert len(res) >= 2 and prices.between(100, 700).all()
    assert demo_recommender.recommend(text="t-shirt over 5000").empty_reason.startswith("no product matches")


def test_ties_go_to_the_other_side_then_catalog_order(demo_recommender):
    """Text-only ties on the metadata score (identical descriptions) are broken by catalog order."""
    res = demo_recommender.recommend(text="paint", k=10)
    scores = [r.score for r in res.items]
    assert scores == sorted(scores, reverse=True)
    for a, b in zip(res.items, res.items[1:], strict=False):
        if a.score == b.score:
            assert a.position < b.position


def test_a_string_filter_is_one_value(demo_recommender, demo_catalog):
    as_str = Filters(category="Electronics", brand="apple")
    as_list = Filters(category=["Electronics"], brand=["Apple"])
    np.testing.assert_array_equal(as_str.mask(demo_catalog), as_list.mask(demo_catalog))
    assert as_str.mask(demo_catalog).sum() == 2


def test_vectorised_filter_masks_equal_a_row_by_row_check(demo_catalog):
    from recommender.catalog.loader import ATTRIBUTE_COLUMNS, split_values

    items = demo_catalog.items
    for col in ATTRIBUTE_COLUMNS:
        for value in demo_catalog.values(col):
            expected = items[col].map(lambda cell, v=value: v.lower() in [x.lower() for x in split_values(cell)])
            np.testing.assert_array_equal(Filters(**{col: value}).mask(demo_catalog), expected.to_numpy(bool))


def test_k_is_clamped_to_the_catalog(demo_recommender):
    res = demo_recommender.recommend(item="laptop", k=10_000, weight=1.0)
    assert 0 < len(res) <= 88 and len(set(res.ids)) == len(res)
