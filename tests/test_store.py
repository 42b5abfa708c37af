"""The artifact store: incremental rebuilds, no mixing, atomic and validated on load."""

import hashlib
import json
import logging

import numpy as np
from PIL import Image

from recommender import load_catalog
from recommender.store.artifacts import MANIFEST, ArtifactStore
from recommender.store.build import build_image_embeddings


def _build(catalog_dir, embedder, cache):
    return build_image_embeddings(load_catalog(catalog_dir / "catalog.csv"), "efficientnet_lite0", cache,
                                  embedder=embedder)


def test_second_build_embeds_nothing_and_a_changed_image_is_reembedded(small_catalog_dir, lite0_embedder, tmp_path):
    cache = tmp_path / "cache"
    v1, has1, r1, _ = _build(small_catalog_dir, lite0_embedder, cache)
    assert (r1.embedded, r1.reused, r1.skipped) == (6, 0, [])
    v2, _, r2, loaded = _build(small_catalog_dir, None, cache)
    assert (r2.embedded, r2.reused) == (0, 6)
    assert loaded is None  # fully cached: no model was loaded
    np.testing.assert_array_equal(v1, v2)

    img_path = small_catalog_dir / "images" / "tennis-ball.jpg"
    Image.open(img_path).rotate(90, expand=True).save(img_path, quality=90)
    v3, _, r3, _ = _build(small_catalog_dir, lite0_embedder, cache)
    assert (r3.embedded, r3.reused) == (1, 5)
    row = 1  # tennis-ball
    assert not np.allclose(v3[row], v1[row])
    np.testing.assert_array_equal(np.delete(v3, row, 0), np.delete(v1, row, 0))


def test_manifest_records_how_vectors_were_made(small_catalog_dir, lite0_embedder, tmp_path):
    cache = tmp_path / "cache"
    _, _, report, _ = _build(small_catalog_dir, lite0_embedder, cache)
    assert report.cache_dir.parent == cache and report.cache_dir.name.startswith("efficientnet_lite0-")
    m = json.loads((report.cache_dir / MANIFEST).read_text())
    assert m["backbone"] == "efficientnet_lite0" and m["feature_dim"] == 1280
    assert m["preprocess"] and m["catalog_fingerprint"] and m["weights"].startswith("sha256:")
    assert len(m["chunks"]) == 1 and m["format"] == 2
    chunk = m["chunks"][0]
    assert len(chunk["items"]) == 6 and all(len(e["sha256"]) == 64 for e in chunk["items"])
    data = (report.cache_dir / chunk["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == chunk["sha256"]
    assert chunk["file"] == f"vectors-{chunk['sha256'][:16]}.npy"
    arr = np.load(report.cache_dir / chunk["file"], allow_pickle=False)
    assert arr.shape == (6, 1280) and arr.dtype == np.float32


def test_other_backbone_or_preprocessing_never_mixes(small_catalog_dir, lite0_embedder, tmp_path):
    cache = tmp_path / "cache"
    _, _, report, _ = _build(small_catalog_dir, lite0_embedder, cache)
    store, folder = ArtifactStore(cache), report.cache_dir.name
    m = store.manifest(folder)
    assert store.load(folder, "efficientnet_lite0", m["preprocess"], m["weights"]) is not None
    assert store.load(folder, "vgg16", m["preprocess"], m["weights"]) is None
    assert store.load(folder, "efficientnet_lite0", "another-preprocessing", m["weights"]) is None
    assert store.load(folder, "efficientnet_lite0", m["preprocess"], "other-weights.pth:1") is None


def test_configurations_get_their_own_folders(small_catalog_dir, lite0_embedder, tmp_path):
    """Switching a lever (here flip-TTA) neither reuses nor throws away the other configuration's vectors."""
    from recommender.features.embedders import ImageEmbedder

    cache = tmp_path / "cache"
    _, _, plain, _ = _build(small_catalog_dir, lite0_embedder, cache)
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    v_tta, _, tta, _ = build_image_embeddings(catalog, cache_dir=cache, embedder=None, flip_tta=True,
                                              backbone="efficientnet_lite0")
    assert tta.cache_dir != plain.cache_dir and tta.embedded == 6
    _, _, again, loaded = _build(small_catalog_dir, None, cache)
    assert again.reused == 6 and loaded is None
    assert ImageEmbedder("efficientnet_lite0", flip_tta=True).identity().folder == tta.cache_dir.name


def test_corrupt_cache_is_rebuilt_not_trusted(small_catalog_dir, lite0_embedder, tmp_path, caplog):
    cache = tmp_path / "cache"
    v1, _, first, _ = _build(small_catalog_dir, lite0_embedder, cache)
    m = json.loads((first.cache_dir / MANIFEST).read_text())
    (first.cache_dir / m["chunks"][0]["file"]).write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        v2, _, report, _ = _build(small_catalog_dir, lite0_embedder, cache)
    assert report.embedded == 6 and "does not match its hash" in caplog.text
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    (first.cache_dir / MANIFEST).write_text("{ truncated")
    _, _, report, _ = _build(small_catalog_dir, lite0_embedder, cache)
    assert report.embedded == 6


def test_object_arrays_are_never_unpickled(small_catalog_dir, lite0_embedder, tmp_path, caplog):
    cache = tmp_path / "cache"
    _, _, first, _ = _build(small_catalog_dir, lite0_embedder, cache)
    m = json.loads((first.cache_dir / MANIFEST).read_text())
    # A pickled object array whose hash is recorded correctly: verification passes, unpickling must not.
    path = first.cache_dir / m["chunks"][0]["file"]
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    m["chunks"][0]["sha256"] = digest = hashlib.sha256(path.read_bytes()).hexdigest()
    m["chunks"][0]["file"] = f"vectors-{digest[:16]}.npy"
    path.rename(first.cache_dir / m["chunks"][0]["file"])
    (first.cache_dir / MANIFEST).write_text(json.dumps(m))
    with caplog.at_level(logging.WARNING):
        _, _, report, _ = _build(small_catalog_dir, lite0_embedder, cache)
    assert report.embedded == 6 and "ignoring cache file" in caplog.text


def test_broken_images_are_skipped_and_counted(small_catalog_dir, lite0_embedder, tmp_path):
    (small_catalog_dir / "images" / "laptop.jpg").write_bytes(b"<html>not a photo</html>")
    (small_catalog_dir / "images" / "orchid.jpg").unlink()
    cache = tmp_path / "cache"
    vectors, has_image, report, _ = _build(small_catalog_dir, lite0_embedder, cache)
    assert report.embedded == 4 and {p.id for p in report.skipped} == {"laptop", "orchid"}
    assert list(has_image) == [False, True, True, True, True, False]
    assert not vectors[0].any()
    # The known-bad file is remembered: the next build neither retries it nor loads a model.
    _, _, again, loaded = _build(small_catalog_dir, None, cache)
    assert (again.embedded, again.reused, len(again.skipped)) == (0, 4, 2) and loaded is None


def test_no_temporary_files_are_left_behind(small_catalog_dir, lite0_embedder, tmp_path):
    cache = tmp_path / "cache"
    _build(small_catalog_dir, lite0_embedder, cache)
    img = small_catalog_dir / "images" / "red-wine.png"
    Image.open(img).convert("RGBA").rotate(10).save(img)
    _, _, report, _ = _build(small_catalog_dir, lite0_embedder, cache)
    names = sorted(p.name for p in report.cache_dir.iterdir())
    m = json.loads((report.cache_dir / MANIFEST).read_text())
    # The manifest, its lock, and exactly the chunk files it names: no temporary or orphaned file.
    assert names == sorted([".lock", MANIFEST, *(c["file"] for c in m["chunks"])])
    assert len(m["chunks"]) == 2 and sum(len(c["items"]) for c in m["chunks"]) == 7


def test_many_checkpoint_chunks_are_merged_into_one_verified_file(tmp_path):
    from recommender.store.artifacts import MAX_CHUNKS, StoredEmbeddings

    store = ArtifactStore(tmp_path)
    stored = StoredEmbeddings("f", "colour_histogram", 8, "p", "w")
    rng = np.random.default_rng(0)
    expected = {}
    for c in range(MAX_CHUNKS + 4):
        keys = [hashlib.sha256(f"{c}-{i}".encode()).hexdigest() for i in range(5)]
        keys.append(hashlib.sha256(b"0-0").hexdigest())  # the same image in every chunk: kept once
        rows = rng.standard_normal((6, 8)).astype(np.float32)
        for k, row in zip(keys, rows, strict=True):
            expected.setdefault(k, row)
        store.append(stored, [{"sha256": k, "id": "", "image": ""} for k in keys], rows)
    assert store.compact(stored) and not store.compact(stored)
    loaded = store.load("f", "colour_histogram", "p", "w", 8)
    assert loaded.vectors.keys() == expected.keys()
    assert all(np.array_equal(loaded.vectors[k], v) for k, v in expected.items())
    assert sorted(p.name for p in (tmp_path / "f").iterdir())[:2] == [".lock", MANIFEST]
    assert len(list((tmp_path / "f").glob("vectors-*.npy"))) == 1


def test_skipped_images_are_named_up_to_a_cap(tmp_path, caplog):
    import pandas as pd

    from recommender.catalog.loader import catalog_from_frame
    from recommender.features.embedders import ColourEmbedder
    from recommender.store.build import MAX_SKIPPED_LOGGED, build_embeddings

    n = MAX_SKIPPED_LOGGED + 5
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "name": ["x"] * n,
                          "image": [f"missing-{i}.jpg" for i in range(n)]})
    with caplog.at_level(logging.WARNING, logger="recommender.store.build"):
        catalog = catalog_from_frame(frame, tmp_path)
        _, has_image, report, _ = build_embeddings(catalog, ColourEmbedder(), tmp_path / "c")
    assert not has_image.any() and len(report.skipped) == n
    named = [r for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(named) == MAX_SKIPPED_LOGGED and "and 5 more skipped" in caplog.text


def test_npy_bytes_are_viewed_without_a_copy_and_hostile_ones_refused():
    """Cache chunks are read once and viewed in place (``np.load`` of a BytesIO was a second copy of every chunk);
    anything np.load would refuse or misread is a ValueError, and nothing is unpickled."""
    import io

    import pytest

    from recommender.store.artifacts import _npy_view

    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    for arr in (x, np.asfortranarray(x), x[:0]):
        buf = io.BytesIO()
        np.save(buf, arr)
        data = bytearray(buf.getvalue())
        got = _npy_view(data)
        np.testing.assert_array_equal(got, arr)
        assert got.shape == arr.shape and (not got.size or np.shares_memory(got, np.frombuffer(data, np.uint8)))
    buf = io.BytesIO()
    np.save(buf, x)
    whole = buf.getvalue()
    objects = io.BytesIO()
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for bad in (b"", b"not an npy file at all", whole[:-5], whole[:40], objects.getvalue()):
        with pytest.raises(ValueError):
            _npy_view(bytearray(bad))
