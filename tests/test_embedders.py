"""Backbone choice and the Keras (VGG16) path, beside the Lite0 tests in test_efficientnet_lite.py."""

import json

import numpy as np
import pytest

from recommender.errors import WeightsUnavailableError
from recommender.features.embedders import ImageEmbedder, resolve_backbone
from recommender.features.weights import KERAS_WEIGHT_FILES
from tests.conftest import DEMO_DIR


@pytest.fixture()
def no_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    models = tmp_path / "models"
    models.mkdir()
    return models


def test_auto_falls_back_to_lite0_and_says_why(no_keras_cache):
    choice = resolve_backbone("auto", no_keras_cache)
    assert choice.name == "efficientnet_lite0" and choice.weights.name == "efficientnet-lite0-57934424.pth"
    assert "VGG16 weights not found" in choice.reason and str(no_keras_cache) in choice.reason


def test_explicit_backbones_and_unknown_names(no_keras_cache):
    assert resolve_backbone("vgg16", no_keras_cache).weights is None  # Keras would download them
    assert resolve_backbone("resnet50", no_keras_cache).reason.endswith("download the ImageNet weights")
    with pytest.raises(ValueError, match="unknown backbone 'vgg19'"):
        resolve_backbone("vgg19", no_keras_cache)


def test_auto_uses_vgg16_weights_placed_in_models(no_keras_cache):
    """The offline route: a VGG16 weights file (here a randomly initialised one in Keras' legacy h5
    layout, the same layout Keras downloads) dropped into models/ is picked up and used."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    vgg = keras.applications.VGG16(include_top=False, weights=None, pooling="avg", input_shape=(224, 224, 3))
    with h5py.File(no_keras_cache / KERAS_WEIGHT_FILES["vgg16"], "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, vgg)
    choice = resolve_backbone("auto", no_keras_cache)
    assert choice.name == "vgg16" and "VGG16 weights found" in choice.reason
    emb = ImageEmbedder(models_dir=no_keras_cache, runtime="tensorflow").fit()  # the Keras model is compared
    assert emb.backbone_ == "vgg16" and emb.feature_dim_ == 512
    np.testing.assert_array_equal(emb.model_.get_layer("block1_conv1").get_weights()[0],
                                  vgg.get_layer("block1_conv1").get_weights()[0])
    x = emb.transform([DEMO_DIR / "images" / "laptop.jpg", DEMO_DIR / "images" / "tennis-ball.jpg"])
    assert x.shape == (2, 512) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)


def test_embedder_contract_and_batching(lite0_embedder):
    assert not hasattr(ImageEmbedder(), "model_")  # no work in __init__
    paths = [DEMO_DIR / "images" / n for n in ("laptop.jpg", "t-shirt.png", "orchid.jpg")]
    together = lite0_embedder.transform(paths)
    alone = np.stack([lite0_embedder.transform([p])[0] for p in paths])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        lite0_embedder.embed_arrays(np.zeros((1, 100, 100, 3), np.uint8))


def test_grid_features_are_the_benchmarked_ones():
    """ImageEmbedder(features="grid") computes what bench_fashion_mnist.py measures."""
    from recommender.evaluation.fashion_mnist import load_slice, to_rgb_batch
    from recommender.features.postprocess import build_feature_model, make_embed_fn

    images, _, _ = load_slice()
    pixels = to_rgb_batch(images[:4])
    grid = ImageEmbedder("efficientnet_lite0", features="grid", runtime="tensorflow").fit()
    assert grid.feature_dim_ == 112 * 49 and "grid" in grid.identity().preprocess
    plain = ImageEmbedder("efficientnet_lite0", runtime="tensorflow").fit()
    reference = make_embed_fn(build_feature_model(plain.model_))(pixels)
    np.testing.assert_allclose(grid.embed_arrays(pixels), reference, atol=1e-5)
    with pytest.raises(ValueError, match="grid features"):
        ImageEmbedder("vgg16", features="grid").identity()


def test_weights_identity_is_the_content_hash_cached_by_path_mtime_size(tmp_path, monkeypatch):
    """Issue 8 item 8: two weights files of the same name and size but different bytes must not
    share a cache folder; the digest is remembered (by path, mtime, size) between runs."""
    import os
    import shutil

    from recommender.features import weights as weights_mod
    from recommender.features.weights import LITE0_WEIGHTS_FILENAME, find_lite0_weights

    monkeypatch.setenv("RECOMMENDER_HASH_CACHE", str(tmp_path / "hashes.json"))
    monkeypatch.setattr(weights_mod, "_HASH_MEMO", {})
    models = tmp_path / "models"
    models.mkdir()
    local = models / LITE0_WEIGHTS_FILENAME
    shutil.copy(find_lite0_weights(), local)
    first = ImageEmbedder("efficientnet_lite0", models_dir=models).identity()
    assert first.weights.startswith("sha256:5793442")  # torch hub names files by their hash prefix
    assert (tmp_path / "hashes.json").is_file()

    # Same size, one byte flipped, mtime moved on: a new identity and a new cache folder.
    data = bytearray(local.read_bytes())
    data[-1] ^= 0xFF
    local.write_bytes(bytes(data))
    st = local.stat()
    os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = ImageEmbedder("efficientnet_lite0", models_dir=models).identity()
    assert local.stat().st_size == find_lite0_weights().stat().st_size
    assert second.weights != first.weights and second.folder != first.folder

    # The persisted digest is used (not recomputed) while path, mtime and size agree: a planted
    # digest in the cache file shows through; a malformed cache file is ignored.
    monkeypatch.setattr(weights_mod, "_HASH_MEMO", {})
    stored = json.loads((tmp_path / "hashes.json").read_text())
    stored[str(local.resolve())]["sha256"] = "ab" * 32
    (tmp_path / "hashes.json").write_text(json.dumps(stored))
    assert ImageEmbedder("efficientnet_lite0", models_dir=models).identity().weights == "sha256:" + "ab" * 32
    monkeypatch.setattr(weights_mod, "_HASH_MEMO", {})
    (tmp_path / "hashes.json").write_text("[not json")
    assert ImageEmbedder("efficientnet_lite0", models_dir=models).identity().weights == second.weights


def test_lite1_lite2_backbones_resolve_and_embed_at_their_own_size(no_keras_cache):
    from recommender.features.weights import find_lite_weights

    for name, variant, size in (("efficientnet_lite1", 1, 240), ("efficientnet_lite2", 2, 260)):
        if find_lite_weights(variant) is None:
            with pytest.raises(WeightsUnavailableError, match="requirements-backbones.txt"):
                resolve_backbone(name, no_keras_cache)
            continue
        emb = ImageEmbedder(name, semantic=0.5).fit()
        assert emb.input_size_ == size and emb.feature_dim_ == 1280 + 1000
        x = emb.transform([DEMO_DIR / "images" / "laptop.jpg", DEMO_DIR / "images" / "tennis-ball.jpg"])
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
        assert emb.identity().folder != ImageEmbedder("efficientnet_lite0", semantic=0.5).identity().folder


def test_embed_query_is_the_upload_path_and_crops_look_at_the_middle(lite0_embedder):
    """No crops: exactly the vector the façade computed for an upload (pad, resize, embed). With crops:
    the whole photo averaged with its centre. Colour on the centre crop ignores a coloured border."""
    from PIL import Image

    from recommender.features.embedders import ColourEmbedder, centre_crop
    from recommender.features.images import open_image, pad_to_square

    img = open_image(DEMO_DIR / "images" / "ultraboost-running-shoe.jpg")
    default_crops = lite0_embedder.query_crops
    try:
        lite0_embedder.set_params(query_crops=())
        plain = lite0_embedder.embed_query(img)
        np.testing.assert_allclose(plain, lite0_embedder.embed_arrays(pad_to_square(img, 224)[None])[0], atol=1e-6)
        lite0_embedder.set_params(query_crops=(0.6,))
        cropped = lite0_embedder.embed_query(img)
        middle = lite0_embedder.embed_arrays(pad_to_square(centre_crop(img, 0.6), 224)[None])[0]
    finally:
        lite0_embedder.set_params(query_crops=default_crops)
    np.testing.assert_allclose(np.linalg.norm(cropped), 1.0, rtol=1e-5)
    assert abs(cropped @ plain - 1) > 1e-4  # it did change
    # The average lies between its two views.
    assert cropped @ plain > middle @ plain and cropped @ middle > plain @ middle

    # A red product in the middle of a green shop: colour on the centre sees red only.
    photo = Image.new("RGB", (200, 200), (20, 160, 40))
    photo.paste(Image.new("RGB", (80, 80), (200, 20, 20)), (60, 60))
    red = Image.new("RGB", (50, 50), (200, 20, 20))
    whole = ColourEmbedder(query_crop=1.0).fit()
    centre = ColourEmbedder(query_crop=0.4).fit()
    red_vec = whole.embed_query(red)
    assert centre.embed_query(photo) @ red_vec > 0.99 > whole.embed_query(photo) @ red_vec + 0.3
    # The default measures an upload on its centre 60%: more of the product than the whole photo, and the
    # catalog side (embed_arrays) is the whole image whatever the crop.
    default = ColourEmbedder().fit()
    assert whole.embed_query(photo) @ red_vec + 0.1 < default.embed_query(photo) @ red_vec < 0.99
    pixels = pad_to_square(photo, 96)[None]
    np.testing.assert_array_equal(default.embed_arrays(pixels), whole.embed_arrays(pixels))
    with pytest.raises(ValueError, match="crop fraction"):
        centre_crop(photo, 0.0)
