"""The float16 vector file the façade serves from (``store/vector_file.py``): content-named, verified, read-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recommender.store.vector_file import PREFIX, mapped_float16


def _vectors(n: int = 300, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 40)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_mapping_holds_the_vectors_in_float16_read_only(tmp_path):
    x = _vectors()
    mapped = mapped_float16(x, tmp_path)
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float16 and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, x.astype(np.float16))
    assert np.abs(mapped.astype(np.float32) @ x[0] - x @ x[0]).max() < 2e-3  # cosines within float16's step
    files = list(tmp_path.glob(f"{PREFIX}*.npy"))
    assert len(files) == 1
    again = mapped_float16(x, tmp_path)  # same content: the same file, found and verified
    assert list(tmp_path.glob(f"{PREFIX}*.npy")) == files and again.filename == mapped.filename


def test_a_corrupt_file_is_rewritten_and_other_content_gets_its_own(tmp_path):
    x = _vectors()
    first = mapped_float16(x, tmp_path)
    path = Path(first.filename)
    del first
    raw = bytearray(path.read_bytes())
    raw[-2:] = b"\x00\x7c"  # last value becomes +inf: bytes no longer match the name
    path.write_bytes(bytes(raw))
    fixed = mapped_float16(x, tmp_path)
    np.testing.assert_array_equal(fixed, x.astype(np.float16))
    for seed in (1, 2, 3):  # three other catalogs: the oldest files beyond three are pruned
        mapped_float16(_vectors(seed=seed), tmp_path)
    assert len(list(tmp_path.glob(f"{PREFIX}*.npy"))) == 3
