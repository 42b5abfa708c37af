"""End-to-end behaviour on the real demo catalog with the real EfficientNet-Lite0 weights."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from recommender import Filters, ImageError, QueryError


def _mirrored(path) -> bytes:
    buf = io.BytesIO()
    ImageOps.mirror(Image.open(path).convert("RGBA")).save(buf, "PNG")
    return buf.getvalue()


def test_fitted_state(demo_recommender, demo_catalog):
    rec = demo_recommender
    assert rec.backbone_ == "efficientnet_lite0"
    # Default pipeline: pooled features (1280) + ImageNet class probabilities (1000), flip-TTA, DBA.
    assert rec.image_vectors_.shape == (89, 1280 + 1000) and rec.image_vectors_.dtype == np.float32
    assert rec.image_pipeline_description() == (
        "efficientnet_lite0 + flip-TTA + semantic 0.5 + DBA k=2 + photo colour 0.3")
    assert rec.colour_vectors_.shape == (89, 512)
    np.testing.assert_allclose(np.linalg.norm(rec.image_vectors_, axis=1), 1.0, rtol=1e-5)
    assert rec.has_image_.all()
    assert rec.build_report_.embedded + rec.build_report_.reused == 89


def test_own_image_ranks_first(demo_recommender, demo_catalog):
    """Every product's own photo finds it first (or tied first with a product sharing that photo)."""
    for i, pid in enumerate(demo_catalog.ids):
        res = demo_recommender.recommend(image=demo_catalog.image_path(i), k=3)
        top = res.items[0]
        assert top.id == pid or top.image_score > 0.9999, (pid, res.ids)


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


def test_filters_apply_before_ranking(demo_recommender, demo_catalog):
    f = Filters(category=["Home & Garden"], price_max=50)
    res = demo_recommender.recommend(item="laptop", k=20, filters=f)
    rows = demo_catalog.items.set_index("id").loc[res.ids]
    assert len(res) > 0 and (rows["category"] == "Home & Garden").all() and (rows["price"] <= 50).all()
    assert res.n_candidates == int(f.mask(demo_catalog).sum())


def test_empty_result_names_the_filter(demo_recommender):
    res = demo_recommender.recommend(item="laptop", filters=Filters(category=["Groceries"], brand=["Nike"]))
    assert len(res) == 0
    assert "brand in ['Nike']" in res.empty_reason and "category" in res.empty_reason


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
