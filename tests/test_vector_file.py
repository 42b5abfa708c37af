"""The bfloat16 vector file the façade serves from (``store/vector_file.py``): content-named, verified, read-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recommender.store.vector_file import BFLOAT16, PREFIX, mapped_bfloat16


def _vectors(n: int = 300, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 40)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_mapping_holds_the_vectors_in_bfloat16_read_only(tmp_path):
    x = _vectors()
    mapped = mapped_bfloat16(x, tmp_path)
    assert isinstance(mapped, np.memmap) and mapped.dtype == BFLOAT16 and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped.view(np.uint16), x.astype(BFLOAT16).view(np.uint16))
    assert np.abs(mapped.astype(np.float32) @ x[0] - x @ x[0]).max() < 4e-3  # cosines within bfloat16's step
    from_half = mapped_bfloat16(x.astype(np.float16), tmp_path / "half")  # float16 input: rounded once more
    assert np.abs(from_half.astype(np.float32) - x).max() <= np.abs(x).max() * 2.0 ** -8
    files = list(tmp_path.glob(f"{PREFIX}*.npy"))
    assert len(files) == 1
    again = mapped_bfloat16(x, tmp_path)  # same content: the same file, found and verified
    assert list(tmp_path.glob(f"{PREFIX}*.npy")) == files and again.filename == mapped.filename


def test_a_corrupt_file_is_rewritten_and_other_content_gets_its_own(tmp_path):
    x = _vectors()
    first = mapped_bfloat16(x, tmp_path)
    path = Path(first.filename)
    del first
    raw = bytearray(path.read_bytes())
    raw[-2:] = b"\x80\x7f"  # last value becomes +inf: bytes no longer match the name
    path.write_bytes(bytes(raw))
    fixed = mapped_bfloat16(x, tmp_path)
    np.testing.assert_array_equal(fixed.view(np.uint16), x.astype(BFLOAT16).view(np.uint16))
    for seed in (1, 2, 3):  # three other catalogs: the oldest files beyond three are pruned
        mapped_bfloat16(_vectors(seed=seed), tmp_path)
    assert len(list(tmp_path.glob(f"{PREFIX}*.npy"))) == 3


def test_a_float16_file_under_the_name_is_rewritten_and_old_float16_files_go(tmp_path):
    x = _vectors()
    first = mapped_bfloat16(x, tmp_path)
    path = Path(first.filename)
    del first
    np.save(path, x.astype(np.float16))  # the right name and shape, another dtype: never read as bfloat16
    legacy = tmp_path / "vectors-f16-0123.npy"
    np.save(legacy, x.astype(np.float16))
    outside = tmp_path.parent / f"{tmp_path.name}-outside.npy"
    np.save(outside, x.astype(np.float16))
    (tmp_path / "vectors-f16-link.npy").symlink_to(outside)  # a link is neither followed nor its target removed
    fixed = mapped_bfloat16(x, tmp_path)
    np.testing.assert_array_equal(fixed.view(np.uint16), x.astype(BFLOAT16).view(np.uint16))
    assert not legacy.exists() and outside.is_file()


def test_the_content_digest_names_only_the_whole_mapped_file(tmp_path):
    """The index key of a fit over a mapped file hashes the file's digest, not its 456 MB again (at 100k): only the
    mapping of the whole file may answer with it, never a slice (a slice keeps the file's name) or other arrays."""
    from recommender.index.factory import make_index
    from recommender.index.persist import index_content_key
    from recommender.store.vector_file import bfloat16_digest, content_digest

    x = _vectors()
    mapped = mapped_bfloat16(x, tmp_path)
    assert content_digest(mapped) == bfloat16_digest(x) == Path(mapped.filename).stem.removeprefix(PREFIX)
    for other in (mapped[:10], mapped[5:], mapped[:, :3], mapped[::-1], x, x.astype(BFLOAT16), np.asarray(mapped)):
        assert content_digest(other) is None
    index = make_index("ivf_pca", x.shape[1], expected_size=len(x))
    rows = np.arange(len(x))
    by_digest = index_content_key(index, mapped, rows, digest=content_digest(mapped))
    assert by_digest == index_content_key(index, mapped, rows, digest=content_digest(mapped))
    assert by_digest != index_content_key(index, mapped, rows[1:], digest=content_digest(mapped))
    assert by_digest != index_content_key(index, mapped, rows)  # the bytes-hashed key of older fits: rebuilt once
    other = mapped_bfloat16(_vectors(seed=5), tmp_path)
    assert by_digest != index_content_key(index, other, rows, digest=content_digest(other))


def test_written_with_plain_writes_and_verified_without_the_map(tmp_path):
    """The file is written and checked with read()/write(), so its pages are never this process's RSS until a query
    touches them; a file of the right size whose header is not ours is rewritten."""
    x = _vectors()
    path = Path(mapped_bfloat16(x, tmp_path).filename)
    np.testing.assert_array_equal(np.load(path), x.astype(BFLOAT16).view(np.uint16))
    path.write_bytes(path.read_bytes().replace(b"'<u2'", b"'<i2'", 1))  # same size, another dtype in the header
    assert np.load(path).dtype == np.int16
    fixed = mapped_bfloat16(x, tmp_path)
    np.testing.assert_array_equal(fixed.view(np.uint16), x.astype(BFLOAT16).view(np.uint16))


def test_rows_read_from_the_file_are_the_mapped_rows(tmp_path):
    """A fit's sampled reads (calibration) go through pread, not the map; the same float32 values either way."""
    from recommender.store.vector_file import read_rows

    x = _vectors()
    mapped = mapped_bfloat16(x, tmp_path)
    rows = np.array([299, 0, 5, 5, 123])
    np.testing.assert_array_equal(read_rows(mapped, rows), mapped[rows].astype(np.float32))
    for part in (slice(0, 300), slice(290, 400), slice(10, 20), slice(300, 310)):
        np.testing.assert_array_equal(read_rows(mapped, part), mapped[part].astype(np.float32))
    np.testing.assert_array_equal(read_rows(x, rows), x[rows])  # an in-memory array: itself, as float32
    assert read_rows(mapped, rows[:0]).shape == (0, x.shape[1])


def test_calibration_of_a_large_mapped_catalog_reads_a_pool_of_rows(tmp_path, monkeypatch):
    """Above ``SAMPLED_PAIRS_ABOVE`` rows the unrelated anchor comes from pairs within ``PAIR_POOL`` sampled rows,
    read from the file: the same anchors as the in-memory rows, and close to the all-rows estimate."""
    from recommender.ranking import calibration

    x = _vectors(n=3000, seed=7)
    x[:1500] += 0.5  # two clusters: pairs are not all alike
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = np.arange(len(x))
    full = calibration.dense_reference(x, rows)
    monkeypatch.setattr(calibration, "SAMPLED_PAIRS_ABOVE", 1000)
    monkeypatch.setattr(calibration, "PAIR_POOL", 500)
    mapped = mapped_bfloat16(x, tmp_path)
    pooled_file = calibration.dense_reference(mapped, rows)
    pooled_memory = calibration.dense_reference(mapped.astype(np.float32), rows)
    assert pooled_file == pooled_memory
    assert abs(pooled_file.unrelated - full.unrelated) < 0.02 and abs(pooled_file.close - full.close) < 0.01


def _mapped_rss_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split()[0]:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_populate_maps_the_whole_file_into_the_process_and_changes_nothing(tmp_path):
    """Written with write(), the file is not in the process's mapping until queries fault its pages in one by one;
    ``populate`` maps them all at once. An in-memory array, or a file over the allowed share of memory: nothing."""
    from recommender.store.vector_file import populate

    x = _vectors(n=4000)  # 4000 x 64 bfloat16: 500 kB
    mapped = mapped_bfloat16(x, tmp_path)
    path, size = Path(mapped.filename), len(mapped._mmap)
    assert _mapped_rss_kb(path) < size / 1024 / 2
    assert populate(mapped, max_share=0.0) == 0 and populate(x) == 0
    assert populate(mapped) == size
    assert _mapped_rss_kb(path) >= size // 1024
    np.testing.assert_array_equal(mapped.view(np.uint16), x.astype(BFLOAT16).view(np.uint16))


def test_warm_up_maps_what_an_ann_catalog_serves_and_answers_the_same(demo_catalog, tmp_path):
    from recommender import HybridRecommender

    x = _vectors(n=len(demo_catalog), seed=3)
    rec = HybridRecommender(index="hnsw", cache_dir=tmp_path).fit_vectors(demo_catalog, x)
    assert rec.image_vectors_.dtype == BFLOAT16  # served from the file
    item = str(demo_catalog.items["id"].iat[4])
    before = rec.recommend(item=item, k=5).ids
    assert rec.warm_up() == len(rec.image_vectors_._mmap)
    assert rec.recommend(item=item, k=5).ids == before
    assert HybridRecommender(index="exact").fit_vectors(demo_catalog, x).warm_up() == 0
