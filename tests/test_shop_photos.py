"""The façade's shop-photo adapter hook (``HybridRecommender(adapter=...)``) on the real demo catalog and weights."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from recommender import HybridRecommender
from recommender.catalog.loader import DEMO_CATALOG
from recommender.errors import CatalogError, RecommenderError
from recommender.features.adapter import ShopPhotoAdapter
from recommender.features.images import open_image
from recommender.shop_photos import MIN_PRODUCTS, choose_adapter

DEMO_DIR = DEMO_CATALOG.parent


def _rec(demo_recommender, **params) -> HybridRecommender:
    # The session recommender's cache: catalog vectors and the demo's 15 extra shots are embedded already.
    return HybridRecommender(backbone="efficientnet_lite0", cache_dir=demo_recommender.cache_dir, **params)


def test_demo_extra_shots_are_too_few_for_auto(demo_recommender, demo_catalog):
    # The default fit finds views.csv beside the demo catalog and refuses, saying why. (A fit of its own:
    # the session's demo_recommender is refitted by evaluation tests with photos=False.)
    rec = _rec(demo_recommender).fit(demo_catalog)
    assert rec.adapter == "auto"
    assert rec.adapter_ is None
    assert "15 usable labelled photo(s)" in rec.adapter_note_
    assert f"auto needs {MIN_PRODUCTS}" in rec.adapter_note_
    assert "shop-photo adapter" not in rec.image_pipeline_description()


def test_adapter_off_and_no_photos(demo_recommender, demo_catalog):
    assert _rec(demo_recommender, adapter="off").fit(demo_catalog).adapter_note_ == "adapter off"
    rec = _rec(demo_recommender).fit(demo_catalog, photos=False)
    assert rec.adapter_ is None and "declares no labelled photos" in rec.adapter_note_


def test_adapter_on_maps_catalog_and_photo_queries(demo_recommender, demo_catalog):
    rec = _rec(demo_recommender, adapter="on").fit(demo_catalog)
    assert rec.adapter_ is not None and rec.adapter_note_.startswith("adapter on (on): 15 labelled photos")
    assert "shop-photo adapter" in rec.image_pipeline_description()
    np.testing.assert_allclose(rec.image_vectors_[rec.has_image_], rec.adapter_.catalog_vectors_)
    shot = DEMO_DIR / "images" / "seaman-lager_2.png"
    raw = rec.embedder.embed_query(open_image(shot))[None]
    vec, _ = rec._embed_upload(shot)
    np.testing.assert_allclose(vec, rec.adapter_.transform_queries(raw)[0], atol=1e-5)
    assert len(rec.recommend(image=shot, k=5).items) == 5


def _nuisance_photos(catalog_vectors: np.ndarray, n_products: int, per_product: int, seed: int = 0):
    """Photos = the product's catalog vector plus a strong shared nuisance (light, clutter) in a few
    directions every product shares: what within-product whitening is for."""
    rng = np.random.default_rng(seed)
    d = catalog_vectors.shape[1]
    basis = np.linalg.qr(rng.normal(size=(d, 4)))[0].T
    rows, labels = [], []
    for j in range(n_products):
        for _ in range(per_product):
            rows.append(catalog_vectors[j] + rng.normal(scale=10.0, size=4) @ basis + rng.normal(scale=0.01, size=d))
            labels.append(j)
    X = np.asarray(rows, np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), np.asarray(labels)


def test_auto_adopts_an_adapter_that_beats_plain_out_of_fold(demo_recommender, tmp_path):
    C = demo_recommender.image_vectors_
    ids = np.asarray(demo_recommender.catalog_.ids, dtype=object)
    X, j = _nuisance_photos(C, MIN_PRODUCTS + 5, 3)
    choice = choose_adapter("auto", X, ids[j], C, ids, cache_dir=tmp_path)
    assert choice.adapter is not None, choice.note
    assert choice.cv["diff"][0] > 0 and choice.cv["adapter"] > choice.cv["plain"]
    # The decision is cached by content: a second call reads it, a corrupt file is recomputed, not trusted.
    cached = list((tmp_path / "adapter").glob("cv-*.json"))
    assert len(cached) == 1
    cached[0].write_text("{not json", encoding="utf-8")
    again = choose_adapter("auto", X, ids[j], C, ids, cache_dir=tmp_path)
    assert again.cv == choice.cv


def test_auto_refuses_what_does_not_beat_plain(demo_recommender):
    C = demo_recommender.image_vectors_
    ids = np.asarray(demo_recommender.catalog_.ids, dtype=object)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3 * (MIN_PRODUCTS + 5), C.shape[1])).astype(np.float32)  # nothing to learn
    labels = ids[np.repeat(np.arange(MIN_PRODUCTS + 5), 3)]
    choice = choose_adapter("auto", X, labels, C, ids)
    assert choice.adapter is None and "includes 0" in choice.note


def test_too_few_products_for_auto(demo_recommender):
    C = demo_recommender.image_vectors_
    ids = np.asarray(demo_recommender.catalog_.ids, dtype=object)
    X, j = _nuisance_photos(C, MIN_PRODUCTS - 1, 3)
    assert choose_adapter("auto", X, ids[j], C, ids).adapter is None
    assert choose_adapter("on", X, ids[j], C, ids).adapter is not None


# -- hostile inputs ------------------------------------------------------------------------------


def _small(small_catalog_dir, rows: list[dict]):
    pd.DataFrame(rows, columns=["id", "image"]).to_csv(small_catalog_dir / "views.csv", index=False)
    return small_catalog_dir / "catalog.csv"


def test_photos_of_unknown_products_are_a_clear_error(demo_recommender, small_catalog_dir):
    csv = _small(small_catalog_dir, [{"id": "laptop", "image": "images/laptop.jpg"},
                                     {"id": "no-such-thing", "image": "images/laptop.jpg"}])
    with pytest.raises(CatalogError, match="unknown product.*no-such-thing"):
        _rec(demo_recommender).fit(csv)
    # ...and off means the file is not even read.
    assert _rec(demo_recommender, adapter="off").fit(csv).adapter_ is None


def test_a_single_labelled_photo_is_refused_even_when_forced(demo_recommender, small_catalog_dir):
    shutil.copy(DEMO_DIR / "images" / "laptop.jpg", small_catalog_dir / "images" / "laptop-2.jpg")
    csv = _small(small_catalog_dir, [{"id": "laptop", "image": "images/laptop-2.jpg"}])
    rec = _rec(demo_recommender, adapter="on").fit(csv)
    assert rec.adapter_ is None and "1 usable labelled photo(s)" in rec.adapter_note_
    assert len(rec.recommend(image=small_catalog_dir / "images" / "laptop-2.jpg", k=3).items) == 3


def test_unreadable_and_escaping_photos_are_skipped(demo_recommender, small_catalog_dir, tmp_path_factory):
    (small_catalog_dir / "images" / "broken.jpg").write_bytes(b"not an image at all")
    outside = tmp_path_factory.mktemp("outside") / "secret.jpg"
    shutil.copy(DEMO_DIR / "images" / "orchid.jpg", outside)
    csv = _small(small_catalog_dir, [{"id": "laptop", "image": "images/broken.jpg"},
                                     {"id": "orchid", "image": str(outside)},
                                     {"id": "orchid", "image": "../" * 8 + "etc/passwd"},
                                     {"id": "t-shirt", "image": "images/missing.jpg"},
                                     {"id": "red-wine", "image": "images/red-wine.png"}])
    rec = _rec(demo_recommender, adapter="on").fit(csv)
    assert rec.adapter_ is None
    assert "1 usable labelled photo(s)" in rec.adapter_note_ and "4 photo(s) skipped" in rec.adapter_note_


def test_bad_photo_tables_and_modes(demo_recommender, small_catalog_dir, demo_catalog):
    (small_catalog_dir / "views.csv").write_text("product,picture\nlaptop,images/laptop.jpg\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="missing column"):
        _rec(demo_recommender).fit(small_catalog_dir / "catalog.csv")
    (small_catalog_dir / "views.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    with pytest.raises(CatalogError):
        _rec(demo_recommender).fit(small_catalog_dir / "catalog.csv")
    with pytest.raises(RecommenderError, match="adapter must be one of"):
        _rec(demo_recommender, adapter="sometimes").fit(demo_catalog)


def test_upload_protocol_never_learns_from_its_own_queries(demo_recommender, demo_catalog):
    """photo_to_product uploads the catalog's extra shots: even a forced adapter must not see them."""
    from recommender.evaluation.protocols import photo_to_product

    out = photo_to_product(demo_catalog, DEMO_DIR / "views.csv", (1,), recommender=_rec(demo_recommender, adapter="on"))
    assert "declares no labelled photos" in out["adapter"] and out["n_queries"] == 15


def test_live_added_products_enter_the_adapted_space(demo_recommender, demo_catalog):
    rec = _rec(demo_recommender, adapter="on").fit(demo_catalog)
    # The demo's CV picks the identity (mix 0, no whitening); a real whitening makes the check able to fail.
    ids = np.asarray(demo_catalog.ids, dtype=object)
    X, j = _nuisance_photos(demo_recommender.image_vectors_, MIN_PRODUCTS, 3)
    rec.adapter_ = ShopPhotoAdapter(mix=0.0, shrinkage=1.0).fit(X, ids[j], demo_recommender.image_vectors_, ids)
    row = demo_catalog.items.set_index("id").loc[["orchid"]].reset_index().assign(id="orchid-again")
    rec.upsert(row)
    pos = rec.catalog_.position("orchid-again")
    raw = demo_recommender.image_vectors_[demo_catalog.position("orchid")][None]  # same image, unadapted
    np.testing.assert_allclose(rec.image_vectors_[pos], rec.adapter_.transform_queries(raw)[0], atol=1e-5)
    assert not np.allclose(rec.image_vectors_[pos], raw[0] / np.linalg.norm(raw), atol=1e-3)


def test_cli_build_says_what_the_adapter_decided(demo_recommender, capsys):
    from recommender.cli import main

    assert main(["build", "--catalog", str(DEMO_DIR / "catalog.csv"), "--cache", str(demo_recommender.cache_dir),
                 "--backbone", "efficientnet_lite0"]) == 0
    assert "adapter off: 15 usable labelled photo(s)" in capsys.readouterr().out
