"""``features="auto"``: the image feature view chosen from the catalog's own labels, on real data.

The Fashion-MNIST slice (centred, aligned thumbnails) must choose the grid; the demo photos (unaligned
products) the pooled head; a catalog without usable labels keeps the pooled head. Measured figures (2 cores,
default pipeline: flip-TTA + semantic 0.5): slice LOO P@10 by category grid .784 vs gap .729 (paired
interval +.044..+.066); demo by sub_category (75 products) grid .348 vs gap .521 (-.221..-.125).
"""

import numpy as np
import pandas as pd
import pytest

from recommender import HybridRecommender, load_catalog
from recommender.errors import RecommenderError
from recommender.evaluation.grocery import fashion_catalog
from recommender.features.view_choice import TwoViewEmbedder, loo_precision, qualified_labels
from tests.conftest import DEMO_DIR


@pytest.fixture(scope="module")
def fashion_slice(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion-slice")
    catalog = load_catalog(fashion_catalog(root / "catalog"))
    return catalog, HybridRecommender(cache_dir=root / "cache").fit(catalog), root / "cache"


def test_fashion_slice_chooses_grid_and_says_why(fashion_slice):
    catalog, rec, _ = fashion_slice
    assert rec.features_ == "grid" and "grid features" in rec.image_pipeline_description()
    assert rec.features_note_.startswith("features grid (auto): leave-one-out P@10 by category on 1000")
    s = rec.features_scores_
    assert s["label"] == "category" and s["n"] == len(catalog) == 1000
    assert s["grid"] > s["gap"] and s["diff"][0] > 0
    assert rec.image_vectors_.shape[1] > 5000  # the 5,488-d grid (+ the semantic part)
    # A cold cache: the sample was embedded by the choice (both views), so the build embedded nothing more.
    assert s["embedded"] == 1000 and "1000 sampled image(s) embedded in both views" in rec.features_note_
    assert rec.build_report_.embedded == 0


def test_both_views_come_from_one_pass_and_are_cached_under_their_own_key(fashion_slice):
    catalog, _, cache = fashion_slice
    gap = HybridRecommender(features="gap", cache_dir=cache).fit(catalog)
    # The choice wrote both views of its sample: a fixed-view fit embeds nothing, and its vectors are
    # the pooled ones (a different width), not the grid the auto fit used.
    assert gap.build_report_.embedded == 0 and gap.build_report_.reused == 1000
    assert gap.features_note_ == "features gap (requested)"
    assert gap.image_vectors_.shape[1] < 3000
    again = HybridRecommender(cache_dir=cache).fit(catalog)  # a refit reads both views from the cache
    assert again.features_ == "grid" and again.features_scores_["embedded"] == 0
    assert again.features_scores_["grid"] == fashion_slice[1].features_scores_["grid"]
    labels = catalog.items["category"].to_numpy(dtype=object)
    assert abs(loo_precision(np.asarray(gap.image_vectors_, np.float32), labels).mean()
               - fashion_slice[1].features_scores_["gap"]) < 1e-3


def test_demo_photos_keep_the_pooled_head(demo_recommender):
    rec = demo_recommender
    assert rec.features_ == "gap" and "grid features" not in rec.image_pipeline_description()
    assert rec.features_note_.startswith("features gap (auto): leave-one-out P@10 by sub_category")
    assert rec.features_scores_["gap"] > rec.features_scores_["grid"]


def test_a_catalog_without_labels_keeps_gap(small_catalog_dir, tmp_path):
    items = pd.read_csv(small_catalog_dir / "catalog.csv", dtype=str, keep_default_na=False)
    items["category"] = items["sub_category"] = ""
    items.to_csv(small_catalog_dir / "catalog.csv", index=False)
    rec = HybridRecommender(cache_dir=tmp_path / "cache").fit(small_catalog_dir / "catalog.csv")
    assert rec.features_ == "gap" and rec.features_scores_ is None
    assert rec.features_note_.startswith("features gap (auto): no label to choose by")


def test_a_catalog_over_the_grid_cap_keeps_gap_without_sampling(demo_catalog, tmp_path, monkeypatch):
    from recommender.features import view_choice

    with_image = int(np.count_nonzero(demo_catalog.items["image"].astype(str) != ""))
    monkeypatch.setattr(view_choice, "GRID_MAX_PRODUCTS", with_image - 1)
    rec = HybridRecommender(cache_dir=tmp_path / "cache").fit(demo_catalog)
    assert rec.features_ == "gap" and rec.features_scores_ is None
    assert rec.features_note_.startswith(f"features gap (auto): {with_image} products with an image, over the "
                                         f"{with_image - 1} up to which the grid view")
    # Nothing was sampled: the grid view has no cache entry, the build embedded every image once (gap).
    folders = {v: rec._image_embedder(rec.backbone, v).identity().folder for v in ("gap", "grid")}
    assert (tmp_path / "cache" / folders["gap"]).is_dir() and not (tmp_path / "cache" / folders["grid"]).exists()
    assert rec.build_report_.embedded == with_image - len(rec.build_report_.skipped)
    monkeypatch.setattr(view_choice, "GRID_MAX_PRODUCTS", with_image)  # at the cap: the labels decide
    again = HybridRecommender(cache_dir=tmp_path / "cache").fit(demo_catalog)
    assert again.features_ == "gap" and again.features_scores_ is not None


def test_the_label_rule(demo_catalog):
    rows = np.arange(len(demo_catalog))
    column, labels = qualified_labels(demo_catalog, rows)
    # sub_category qualifies: 9 classes of >= 5 products (75 of 89); the 4 smaller classes sit out.
    assert column == "sub_category" and (labels != "").sum() == 75 and len(set(labels) - {""}) == 9
    one_class = qualified_labels(demo_catalog, rows[:8])  # the first 8 products are all Computers
    assert one_class == ("sub_category: 1 class(es) of >= 5 products covering 8/8 labelled; "
                         "category: 1 class(es) of >= 5 products covering 8/8 labelled")
    # Every other product: no sub-category keeps 5 products in most of them, so the coarser category is used.
    column, labels = qualified_labels(demo_catalog, rows[::2])
    assert column == "category" and (labels != "").sum() == 41
    # Every fourth: two categories reach 5 products but cover 10 of 23, not most: no choice.
    assert qualified_labels(demo_catalog, rows[::4]) == (
        "sub_category: 0 class(es) of >= 5 products covering 0/23 labelled; "
        "category: 2 class(es) of >= 5 products covering 10/23 labelled")


def test_unknown_features_value_is_one_line(demo_catalog, tmp_path):
    with pytest.raises(RecommenderError, match="features must be one of auto, gap, grid, got 'pixels'"):
        HybridRecommender(features="pixels", cache_dir=tmp_path).fit(demo_catalog)


def test_two_view_embedder_equals_each_single_view():
    from recommender.features.embedders import ImageEmbedder
    from recommender.features.images import load_for_model

    pixels = np.stack([load_for_model(DEMO_DIR / "images" / n, 224) for n in ("laptop.jpg", "orchid.jpg")])
    params = {"backbone": "efficientnet_lite0", "flip_tta": True, "semantic": 0.5}
    two = TwoViewEmbedder(**params).fit()
    gap_part, grid_part = two.split(two.embed_arrays(pixels))
    for view, part in (("gap", gap_part), ("grid", grid_part)):
        single = ImageEmbedder(**params, features=view).fit().embed_arrays(pixels)
        np.testing.assert_allclose(part, single, atol=2e-5)
