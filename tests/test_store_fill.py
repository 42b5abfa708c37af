"""Cached vectors streamed into the caller's matrix block by block (``store/fill.py``): the same rows as
``ArtifactStore.load``, in float32 or bfloat16, and a chunk that is not what its manifest says is undone."""

import hashlib
import io
import json
import logging

import numpy as np
import pytest

from recommender import load_catalog
from recommender.features.embedders import ColourEmbedder
from recommender.store import fill
from recommender.store.artifacts import MANIFEST, ArtifactStore, StoredEmbeddings
from recommender.store.build import build_embeddings
from recommender.store.fill import fill_cached
from recommender.store.vector_file import BFLOAT16

DIM = 8


def _key(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _store(tmp_path, chunks: list[list[str]]):
    """A store folder ``f`` with one appended chunk per list of keys; returns (store, {key: first row})."""
    store = ArtifactStore(tmp_path)
    stored = StoredEmbeddings("f", "colour_histogram", DIM, "p", "w")
    rng = np.random.default_rng(len(chunks))
    first = {}
    for keys in chunks:
        rows = rng.standard_normal((len(keys), DIM)).astype(np.float32)
        for k, row in zip(keys, rows, strict=True):
            first.setdefault(k, row)
        store.append(stored, [{"sha256": k, "id": "", "image": ""} for k in keys], rows)
    return store, first


def _fill(store, wanted: dict[str, list[int]], n: int, dtype=np.float32):
    out = np.zeros((n, DIM), dtype)
    stored, filled = fill_cached(store, "f", "colour_histogram", "p", "w", DIM, wanted, out)
    return stored, out, filled


def _replace_chunk(tmp_path, index: int, data: bytes) -> None:
    """Put ``data`` in place of chunk ``index`` with its hash recorded correctly (so only the content is wrong)."""
    folder = tmp_path / "f"
    m = json.loads((folder / MANIFEST).read_text())
    digest = hashlib.sha256(data).hexdigest()
    (folder / m["chunks"][index]["file"]).unlink()
    m["chunks"][index].update(file=f"vectors-{digest[:16]}.npy", sha256=digest)
    (folder / m["chunks"][index]["file"]).write_bytes(data)
    (folder / MANIFEST).write_text(json.dumps(m))


def _npy(arr, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("block_rows", [1, 3, 1000])
def test_streamed_rows_are_the_loaded_rows(tmp_path, monkeypatch, block_rows):
    monkeypatch.setattr(fill, "BLOCK_BYTES", block_rows * DIM * 4)
    keys = [_key(str(i)) for i in range(12)]
    store, first = _store(tmp_path, [keys[:5], keys[3:9], keys[9:]])  # keys 3, 4 in two chunks: the first wins
    wanted = {k: [i] for i, k in enumerate(keys)}
    wanted[keys[4]].append(12)  # two products showing one image
    wanted[_key("not cached")] = [13]
    stored, out, filled = _fill(store, wanted, 14)
    loaded = store.load("f", "colour_histogram", "p", "w", DIM)
    assert stored is not None and not stored.vectors and stored.failures == loaded.failures == {}
    assert filled.tolist() == [True] * 13 + [False]
    for k, rows in wanted.items():
        for r in rows:
            np.testing.assert_array_equal(out[r], loaded.vectors.get(k, np.zeros(DIM, np.float32)))
    np.testing.assert_array_equal(out[3], first[keys[3]])
    _, out16, filled16 = _fill(store, wanted, 14, BFLOAT16)
    assert np.array_equal(filled16, filled)
    assert np.array_equal(out16.view(np.uint16), out.astype(BFLOAT16).view(np.uint16))  # cast as a block would be


def test_a_chunk_failing_its_hash_at_the_end_is_undone_and_a_later_copy_used(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(fill, "BLOCK_BYTES", DIM * 4)  # one row a block: rows are copied before the hash is known
    a, b, c = _key("a"), _key("b"), _key("c")
    store, first = _store(tmp_path, [[a, b], [b, c]])
    m = store.manifest("f")
    path = tmp_path / "f" / m["chunks"][0]["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last row: a finite value still, only the hash can tell
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        _, out, filled = _fill(store, {a: [0], b: [1], c: [2]}, 3)
    assert "does not match its hash" in caplog.text
    assert filled.tolist() == [False, True, True] and not out[0].any()
    loaded = store.load("f", "colour_histogram", "p", "w", DIM)  # the same verdict as the whole-file reader
    assert a not in loaded.vectors
    np.testing.assert_array_equal(out[1], loaded.vectors[b])
    assert not np.array_equal(out[1], first[b])  # b came from the second chunk


@pytest.mark.parametrize("case", ["nan", "float64", "shape", "fortran", "objects", "truncated", "trailing",
                                  "garbage", "symlink"])
def test_hostile_chunks_fill_nothing_and_raise_nothing(tmp_path, case, caplog):
    keys = [_key(str(i)) for i in range(4)]
    store, _ = _store(tmp_path, [keys])
    folder = tmp_path / "f"
    good = (folder / store.manifest("f")["chunks"][0]["file"]).read_bytes()
    x = np.random.default_rng(1).standard_normal((4, DIM)).astype(np.float32)
    if case == "symlink":  # a valid chunk elsewhere, linked under the recorded name
        outside = tmp_path / "outside.npy"
        outside.write_bytes(good)
        chunk = folder / store.manifest("f")["chunks"][0]["file"]
        chunk.unlink()
        chunk.symlink_to(outside)
    else:
        data = {
            "nan": _npy(np.where(np.arange(4)[:, None] == 3, np.nan, x).astype(np.float32)),
            "float64": _npy(x.astype(np.float64)),
            "shape": _npy(x[:3]),
            "fortran": _npy(np.asfortranarray(x)),
            "objects": _npy(np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True),
            "truncated": good[:-7],
            "trailing": good + b"\0" * 32,
            "garbage": b"\x93NUMPY not really",
        }[case]
        _replace_chunk(tmp_path, 0, data)
    with caplog.at_level(logging.WARNING):
        stored, out, filled = _fill(store, {k: [i] for i, k in enumerate(keys)}, 4)
    assert stored is not None and not filled.any() and not out.any()
    assert "ignoring cache file" in caplog.text


def test_a_build_into_bfloat16_keeps_the_float32_bits_rounded(small_catalog_dir, tmp_path):
    """``build_embeddings(dtype=bfloat16)`` (a large catalog's fit): cold or from the cache, the rows are the
    float32 build's cast to bfloat16; the cache itself stays float32."""
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    v32, has32, _, _ = build_embeddings(catalog, ColourEmbedder(), tmp_path / "a")
    cold, has_cold, cold_report, _ = build_embeddings(catalog, ColourEmbedder(), tmp_path / "b", dtype=BFLOAT16)
    warm, has_warm, warm_report, _ = build_embeddings(catalog, ColourEmbedder(), tmp_path / "b", dtype=BFLOAT16)
    assert cold.dtype == warm.dtype == BFLOAT16
    assert (cold_report.embedded, warm_report.reused) == (len(catalog), len(catalog))
    assert has32.all() and has_cold.all() and has_warm.all()
    expected = v32.astype(BFLOAT16).view(np.uint16)
    assert np.array_equal(cold.view(np.uint16), expected) and np.array_equal(warm.view(np.uint16), expected)
    stored = ArtifactStore(tmp_path / "b").load(*_ident(warm_report))
    assert all(v.dtype == np.float32 for v in stored.vectors.values())


def _ident(report):
    m = json.loads((report.cache_dir / MANIFEST).read_text())
    return report.cache_dir.name, m["backbone"], m["preprocess"], m["weights"], m["feature_dim"]


def test_checkpoints_reread_the_manifest_only_when_another_writer_changed_it(tmp_path, monkeypatch):
    """A build's appends remember the manifest they wrote (each chunk's JSON kept), so a checkpoint costs its own
    chunk, not the catalog; a write by another store (another build) is noticed and merged, never overwritten."""
    from recommender.store import artifacts

    parses = []
    real_parse = artifacts.parse_manifest
    monkeypatch.setattr(artifacts, "parse_manifest", lambda raw: parses.append(1) or real_parse(raw))
    mine, other = ArtifactStore(tmp_path), ArtifactStore(tmp_path)
    stored = StoredEmbeddings("f", "colour_histogram", DIM, "p", "w")
    rng = np.random.default_rng(0)

    def append(store, tag: str) -> list[str]:
        keys = [_key(f"{tag}-{i}") for i in range(3)]
        store.append(stored, [{"sha256": k, "id": tag, "image": ""} for k in keys],
                     rng.standard_normal((3, DIM)).astype(np.float32), {_key(f"bad-{tag}"): "not an image"})
        return keys

    expected = []
    for c in range(5):
        expected += append(mine, f"mine{c}")
    assert len(parses) == 0  # nothing read back: every checkpoint merged into what it had written itself
    expected += append(other, "other")  # another build: reads the file once, appends
    expected += append(mine, "mine5")  # the file changed under us: read again, the other's chunk kept
    assert len(parses) == 2
    loaded = mine.load("f", "colour_histogram", "p", "w", DIM)
    assert list(loaded.vectors) == expected
    assert set(loaded.failures) == {_key(f"bad-mine{c}") for c in range(6)} | {_key("bad-other")}
    raw = json.loads((tmp_path / "f" / MANIFEST).read_text())  # plain JSON, format 2, as before
    assert raw["format"] == 2 and [len(c["items"]) for c in raw["chunks"]] == [3] * 7
    assert mine.compact(stored, max_chunks=2)  # a compaction rewrites the manifest: later appends still merge
    expected += append(mine, "mine6")
    assert list(ArtifactStore(tmp_path).load("f", "colour_histogram", "p", "w", DIM).vectors) == expected
