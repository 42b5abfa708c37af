"""Backbone choice and the Keras (VGG16) path, beside the Lite0 tests in test_efficientnet_lite.py."""

import numpy as np
import pytest

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
    emb = ImageEmbedder(models_dir=no_keras_cache).fit()
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


def test_grid_features_are_the_benchmarked_ones(lite0_embedder):
    """ImageEmbedder(features="grid") computes what bench_fashion_mnist.py measures."""
    from recommender.evaluation.fashion_mnist import load_slice, to_rgb_batch
    from recommender.features.postprocess import build_feature_model, make_embed_fn

    images, _, _ = load_slice()
    pixels = to_rgb_batch(images[:4])
    grid = ImageEmbedder("efficientnet_lite0", features="grid").fit()
    assert grid.feature_dim_ == 112 * 49 and "grid" in grid.identity().preprocess
    reference = make_embed_fn(build_feature_model(lite0_embedder.model_))(pixels)
    np.testing.assert_allclose(grid.embed_arrays(pixels), reference, atol=1e-5)
    with pytest.raises(ValueError, match="grid features"):
        ImageEmbedder("vgg16", features="grid").identity()
