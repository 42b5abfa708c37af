"""Hostile and careless inputs (issue 8): one case per class, then a bounded seeded mutation fuzz.

Every reader of untrusted bytes - ``open_image``, ``load_catalog``, the cache manifest and the
weights reader - must answer with success or a clear ``RecommenderError`` subclass, never
anything else. ``python -m tests.test_hostile_inputs 90`` runs the fuzz for longer by hand.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, PngImagePlugin

from recommender.catalog.loader import REFUSED_IMAGE, load_catalog
from recommender.errors import CacheError, CatalogError, ImageError, RecommenderError, WeightsFileError
from recommender.features.embedders import ColourEmbedder
from recommender.features.images import load_for_model, open_image
from recommender.features.torch_pickle import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, load_legacy_torch_state_dict
from recommender.store.artifacts import MANIFEST, ArtifactStore
from recommender.store.build import build_embeddings, cache_required

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "data" / "demo"
LAPTOP = DEMO_DIR / "images" / "laptop.jpg"


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(size: tuple[int, int] = (64, 48)) -> Image.Image:
    img = Image.open(LAPTOP).convert("RGB")
    return img.resize(size)


def _text_bomb_png() -> bytes:
    """A ~2 KB PNG whose zTXt chunk inflates past Pillow's MAX_TEXT_CHUNK (1 MB)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (PngImagePlugin.MAX_TEXT_CHUNK + 10), zip=True)
    return _encode(_photo(), "PNG", pnginfo=info)


# -- 1. decoder errors are the image's ImageError; a build skips and counts them ----------------
BROKEN_IMAGES = {
    "jpeg cut in its header": lambda: _encode(_photo(), "JPEG")[:180],
    "png cut in its header": lambda: _encode(_photo(), "PNG")[:45],
    "truncated webp": lambda: (lambda d: d[: len(d) // 2])(_encode(_photo(), "WEBP")),
    "png text chunk bomb": _text_bomb_png,
    "gif cut after the header": lambda: _encode(_photo().convert("P"), "GIF")[:30],
    "tiff with a broken IFD": lambda: (lambda d: d[:8] + b"\xff" * 16 + d[24:])(_encode(_photo(), "TIFF")),
}


@pytest.mark.parametrize("name", sorted(BROKEN_IMAGES))
def test_every_decoder_failure_is_an_image_error(name):
    data = BROKEN_IMAGES[name]()
    with pytest.raises(ImageError):
        open_image(data)
    with pytest.raises(ImageError):
        load_for_model(data, 224)


def test_a_build_skips_and_counts_undecodable_images(small_catalog_dir, tmp_path):
    (small_catalog_dir / "images" / "laptop.jpg").write_bytes(_text_bomb_png())
    (small_catalog_dir / "images" / "tennis-ball.jpg").write_bytes(BROKEN_IMAGES["jpeg cut in its header"]())
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    _, has_image, report, _ = build_embeddings(catalog, ColourEmbedder(), tmp_path / "cache")
    assert {p.id for p in report.skipped} == {"laptop", "tennis-ball"} and report.embedded == 4
    assert has_image.sum() == 4


# -- 3. a read-only or misplaced cache -------------------------------------------------------------
def _as_nobody(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                           "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}, cwd="/")


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to run a query as another account")

QUERY_AS_NOBODY = """
import sys
from recommender.catalog.loader import load_catalog
from recommender.features.embedders import ColourEmbedder
from recommender.store.build import build_embeddings, cache_required
catalog = load_catalog(sys.argv[1])
_, has_image, report, _ = build_embeddings(catalog, ColourEmbedder(), sys.argv[2])
print(report.reused, report.embedded, report.saved, int(has_image.sum()))
try:
    with cache_required(catalog, sys.argv[2]):
        pass
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@needs_root
def test_a_cache_of_another_account_serves_queries_and_refuses_builds(small_catalog_dir, demo_catalog):
    shared = Path(tempfile.mkdtemp(prefix="harden-ro-"))
    try:
        shop = shared / "shop"
        shutil.copytree(small_catalog_dir, shop)
        cache = shared / "cache"
        build_embeddings(load_catalog(shop / "catalog.csv"), ColourEmbedder(), cache)
        for p in (shared, shop, shop / "images", cache, *cache.iterdir()):
            p.chmod(0o755)  # folders others may enter but not write; the files are 0644 as written
        # An edited price and a new product: the fit must neither die nor write.
        items = pd.read_csv(shop / "catalog.csv", dtype=str, keep_default_na=False)
        items.loc[0, "price"] = "1.5"
        extra = items.iloc[[1]].assign(id="ball-2", image="images/ball-2.png")
        Image.open(shop / "images" / "tennis-ball.jpg").rotate(90).save(shop / "images" / "ball-2.png")
        pd.concat([items, extra]).to_csv(shop / "catalog.csv", index=False)
        before = {p.name: p.stat().st_mtime_ns for p in next(cache.iterdir()).iterdir()}
        run = _as_nobody(QUERY_AS_NOBODY, str(shop / "catalog.csv"), str(cache))
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert lines[0] == "6 1 False 7"  # six reused, one embedded in memory, nothing saved
        assert lines[1].startswith("CacheError") and "not writable" in lines[1]
        assert "not writable" in run.stderr  # the query warned
        assert {p.name: p.stat().st_mtime_ns for p in next(cache.iterdir()).iterdir()} == before
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_cache_that_is_a_file_fails_the_build_early_with_one_line(small_catalog_dir, tmp_path):
    cache = tmp_path / "cache.txt"
    cache.write_text("not a folder")
    run = subprocess.run([sys.executable, "-m", "recommender", "build", "--catalog",
                          str(small_catalog_dir / "catalog.csv"), "--cache", str(cache)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "is a file, not a folder" in run.stderr
    with pytest.raises(CacheError, match="is a file"):
        build_embeddings(load_catalog(small_catalog_dir / "catalog.csv"), ColourEmbedder(), cache / "sub")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_a_full_disk_fails_the_build_early(small_catalog_dir, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        catalog = load_catalog(small_catalog_dir / "catalog.csv")
        with pytest.raises(CacheError, match="MB free"), cache_required(catalog, disk / "cache"):
            pass
        # A query (not a build) embeds in memory and says why nothing was saved.
        _, has_image, report, _ = build_embeddings(catalog, ColourEmbedder(size=512, bins=64), disk / "cache")
        assert has_image.all() and not report.saved
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# -- 5. image paths are confined to the catalog folder ------------------------------------------
def test_image_paths_outside_the_catalog_folder_are_never_read(small_catalog_dir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")  # small_catalog_dir is the test's tmp_path
    secret = outside / "secret.jpg"
    shutil.copy(LAPTOP, secret)  # a valid image: refused for where it is, not for what it is
    (small_catalog_dir / "images" / "link.jpg").symlink_to(secret)
    items = pd.read_csv(small_catalog_dir / "catalog.csv", dtype=str, keep_default_na=False)
    items.loc[0, "image"] = "../" * 12 + "etc/passwd"
    items.loc[1, "image"] = str(secret)
    items.loc[2, "image"] = "images/link.jpg"
    items.to_csv(small_catalog_dir / "catalog.csv", index=False)
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    for i in range(3):
        assert "outside the catalog folder" in catalog.image_refusal(i)
        assert catalog.image_path(i) == REFUSED_IMAGE and not REFUSED_IMAGE.exists()
    assert catalog.image_refusal(3) is None and catalog.image_path(3).is_file()
    _, has_image, report, _ = build_embeddings(catalog, ColourEmbedder(), tmp_path_factory.mktemp("cache"))
    assert list(has_image) == [False, False, False, True, True, True] and len(catalog) == 6
    assert {p.id for p in report.skipped} == set(catalog.ids[:3])
    # A configured root makes the absolute path usable; the traversal stays refused.
    allowed = load_catalog(small_catalog_dir / "catalog.csv", image_roots=[outside])
    assert allowed.image_path(1) == secret.resolve() and allowed.image_refusal(0)


# -- 7. the weights reader is bounded ---------------------------------------------------------------
def _header() -> bytes:
    sys_info = {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True}
    return b"".join(pickle.dumps(r, protocol=2) for r in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, sys_info))


def _laughs(levels: int, close: bytes = b"l") -> bytes:
    """x0 = []; x(i+1) = [x(i), x(i)], each memoised: 2**levels elements if expanded."""
    out = b"\x80\x02]q\x00"
    for i in range(1, levels + 1):
        out += b"(h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + close + b"q" + bytes([i])
    return out + b"."


def _tuple_key_laughs(levels: int) -> bytes:
    """A dict whose key is a memoised tuple DAG: hashing it takes 2**levels steps."""
    out = b"\x80\x02})q\x00"
    for i in range(1, levels + 1):
        out += b"h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"\x86q" + bytes([i])
    return out + b"K\x01s."


WEIGHT_FILES = {
    "billion laughs as the magic number": lambda: _laughs(40),
    "billion laughs of tuples": lambda: _laughs(40, b"t"),
    "tuple key hash bomb": lambda: _tuple_key_laughs(40),
    "100k-deep nesting": lambda: b"\x80\x02" + b"(" * 100_000 + b"]" + b"l" * 100_000 + b".",
    "truncated record": lambda: _laughs(10)[:-6],
    "truncated after the header": lambda: _header()[:-3],
    "state dict bomb after a valid header": lambda: _header() + _laughs(40),
    "refused global": lambda: _header() + b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.",
    "object construction opcode": lambda: _header() + b"\x80\x02c__builtin__\nobject\n)\x81.",
    # Found by the fuzz: BYTEARRAY8 allocates what it claims (here 14 GB) before reading.
    "bytearray8 claiming 14 GB": lambda: _header() + b"\x80\x05\x96" + (14 << 30).to_bytes(8, "little") + b"x.",
}


def _bounded(fn, seconds: float = 30.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return in time."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.mark.parametrize("name", sorted(WEIGHT_FILES))
def test_hostile_weight_files_give_one_error_type_quickly(name, tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(WEIGHT_FILES[name]())
    with pytest.raises(WeightsFileError) as err:
        _bounded(lambda: load_legacy_torch_state_dict(path))
    assert isinstance(err.value, ValueError) and len(str(err.value)) < 400


# -- 8. the cache trusts nothing --------------------------------------------------------------------
@pytest.fixture()
def built_cache(small_catalog_dir, tmp_path):
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    cache = tmp_path / "cache"
    vectors, _, report, _ = build_embeddings(catalog, ColourEmbedder(), cache)
    return catalog, cache, report.cache_dir, vectors


def test_a_tampered_vector_file_is_not_reused(built_cache):
    catalog, cache, folder, vectors = built_cache
    m = json.loads((folder / MANIFEST).read_bytes())
    chunk = folder / m["chunks"][0]["file"]
    x = np.load(chunk)
    x[2] = 0  # a zeroed row: still a valid .npy of the right shape
    np.save(chunk, x)
    again, _, report, _ = build_embeddings(catalog, ColourEmbedder(), cache)
    assert (report.reused, report.embedded) == (0, 6)
    np.testing.assert_array_equal(again, vectors)


@pytest.mark.parametrize("mutate", [
    lambda m: [],
    lambda m: {**m, "chunks": [{**m["chunks"][0], "file": "../../outside.npy"}]},
    lambda m: {**m, "chunks": [{**m["chunks"][0], "items": [{"id": "x"}] + m["chunks"][0]["items"][1:]}]},
    lambda m: {**m, "feature_dim": m["feature_dim"] + 1},
    lambda m: {**m, "feature_dim": "512"},
    lambda m: {**m, "chunks": "vectors.npy"},
    lambda m: {k: v for k, v in m.items() if k != "backbone"},
], ids=["list", "path escape", "item without sha256", "wrong dimension", "dimension as text", "chunks not a list",
        "missing key"])
def test_a_malformed_manifest_is_treated_as_absent_and_heals(built_cache, mutate, caplog):
    catalog, cache, folder, vectors = built_cache
    m = json.loads((folder / MANIFEST).read_bytes())
    (folder / MANIFEST).write_text(json.dumps(mutate(m)))
    again, _, report, _ = build_embeddings(catalog, ColourEmbedder(), cache)
    assert report.reused == 0 and report.embedded == 6 and "ignoring" in caplog.text
    np.testing.assert_array_equal(again, vectors)
    _, _, healed, _ = build_embeddings(catalog, ColourEmbedder(), cache)
    assert healed.reused == 6


# -- 9. and 11. catalog values ------------------------------------------------------------------------
@pytest.mark.parametrize("price", ["inf", "-inf", "1e309", "NaN", "nan", "Infinity"])
def test_non_finite_prices_are_rejected_with_the_line(tmp_path, price):
    path = tmp_path / "c.csv"
    path.write_text(f"id,name,image,price\na,A,a.jpg,1\nb,B,b.jpg,{price}\n")
    with pytest.raises(CatalogError, match=r"price is not a finite number on line\(s\) 3"):
        load_catalog(path)


def test_parquet_nullable_ids_are_empty_not_the_text_na(tmp_path):
    df = pd.DataFrame({"id": pd.array(["a", None, "c"], dtype="string"), "name": ["A", "B", "C"],
                       "image": ["a.jpg", "b.jpg", "c.jpg"], "price": pd.array([1, None, 3], dtype="Int64")})
    df.to_parquet(tmp_path / "c.parquet")
    with pytest.raises(CatalogError, match=r"empty id on line\(s\) 3"):
        load_catalog(tmp_path / "c.parquet")
    df["id"] = ["a", "b", "c"]
    df.to_parquet(tmp_path / "c.parquet")
    cat = load_catalog(tmp_path / "c.parquet")
    assert "<NA>" not in set(cat.items.to_numpy().ravel().astype(str)) and math.isnan(cat.items["price"][1])


def test_trns_colour_key_pngs_land_on_white():
    for mode, key, colour in (("RGB", (0, 0, 0), (200, 10, 10)), ("L", 0, 120)):
        img = Image.new(mode, (8, 8), key)
        img.putpixel((4, 4), colour)
        out = open_image(_encode(img, "PNG", transparency=key))
        assert out.getpixel((0, 0)) == (255, 255, 255)
        assert out.getpixel((4, 4)) == (colour if mode == "RGB" else (colour,) * 3)


def test_a_file_name_over_255_bytes_is_an_image_problem(small_catalog_dir, tmp_path):
    items = pd.read_csv(small_catalog_dir / "catalog.csv", dtype=str, keep_default_na=False)
    items.loc[0, "image"] = "images/" + "é" * 200 + ".jpg"  # 400 bytes in UTF-8
    items.to_csv(small_catalog_dir / "catalog.csv", index=False)
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    assert [p.id for p in catalog.image_problems()] == ["laptop"]
    _, has_image, report, _ = build_embeddings(catalog, ColourEmbedder(), tmp_path / "cache")
    assert not has_image[0] and has_image[1:].all() and [p.id for p in report.skipped] == ["laptop"]


def test_a_fifo_in_the_catalog_folder_is_skipped_not_waited_on(small_catalog_dir, tmp_path):
    fifo = small_catalog_dir / "images" / "laptop.jpg"
    fifo.unlink()
    os.mkfifo(fifo)  # opening it for reading would block until someone writes
    catalog = load_catalog(small_catalog_dir / "catalog.csv")
    _, has_image, report, _ = _bounded(lambda: build_embeddings(catalog, ColourEmbedder(), tmp_path / "cache"))
    assert not has_image[0] and [p.id for p in report.skipped] == ["laptop"]
    assert report.skipped[0].reason == "not a file"


# -- 12. a big JPEG is decoded at the size the model needs ------------------------------------------
def test_big_jpeg_is_drafted_for_the_model_and_looks_the_same(tmp_path):
    big = Image.open(LAPTOP).convert("RGB").resize((4096, 3072), Image.Resampling.BICUBIC)
    data = _encode(big, "JPEG", quality=90)
    drafted = open_image(data, min_side=224)
    assert drafted.size == (1024, 768)  # 1/4 DCT scale keeps >= 3 x 224 on the short side
    assert open_image(data).size == (4096, 3072)
    full = _pad(open_image(data)).astype(np.float64)
    fast = load_for_model(data, 224).astype(np.float64)
    assert full.shape == fast.shape and np.abs(fast - full).mean() < 2.0


def _pad(img: Image.Image) -> np.ndarray:
    from recommender.features.images import pad_to_square

    return pad_to_square(img, 224)


# -- the fuzz -------------------------------------------------------------------------------------------
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]


def mutate(data: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    """One to four random edits: flips, interesting values, cuts, inserts, duplicated or spliced slices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        n = len(out)
        op = rng.randrange(7)
        pos = rng.randrange(n) if n else 0
        if op == 0 and n:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            v = rng.choice(INTERESTING)
            out[pos:pos + len(v)] = v
        elif op == 2:
            del out[pos:]
        elif op == 3:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4 and n:
            end = min(n, pos + rng.randint(1, 64))
            out[pos:pos] = out[pos:end] * rng.randint(1, 8)
        elif op == 5:
            other = rng.choice(seeds)
            start = rng.randrange(len(other))
            out[pos:] = other[start:start + rng.randint(1, 256)] + bytes(out[pos:])
        elif op == 6 and n > 1:
            end = min(n, pos + rng.randint(1, 64))
            del out[pos:end]
    return bytes(out)


def image_seeds() -> list[bytes]:
    photo = _photo((48, 36))
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    return [
        _encode(photo, "JPEG", quality=80), _encode(photo, "JPEG", progressive=True),
        _encode(photo, "PNG"), _encode(rgba, "PNG"), _encode(photo.convert("P"), "PNG", transparency=0),
        _encode(photo.convert("L"), "PNG", transparency=7), _encode(photo.convert("I;16"), "PNG"),
        _encode(photo.convert("P"), "GIF"), _encode(photo, "WEBP"), _encode(rgba, "WEBP", lossless=True),
        _encode(photo, "TIFF"), _encode(photo, "TIFF", compression="tiff_lzw"), _encode(photo, "BMP"),
        _text_bomb_png()[:4000], _encode(photo, "JPEG", exif=_exif()),
    ]


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


def catalog_seeds() -> list[bytes]:
    csv = (DEMO_DIR / "catalog.csv").read_bytes()
    head = b"\n".join(csv.splitlines()[:8]) + b"\n"
    frame = pd.read_csv(io.BytesIO(head), dtype=str, keep_default_na=False)
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return [head, buf.getvalue()]


def weight_seeds() -> list[bytes]:
    from tests.test_efficientnet_lite import _state_dict_file, _tensor

    entries = {"w": _tensor("FloatStorage", "0", 12, 0, (3, 4), (4, 1)),
               "b": _tensor("LongStorage", "1", 1, 0, (), ())}
    good = _state_dict_file(entries, {"0": np.arange(12, dtype="<f4"), "1": np.array([7], dtype="<i8")})
    return [good, _header() + _laughs(12)]


class Target:
    """One reader of untrusted bytes: ``run(data)`` returns normally or raises a RecommenderError."""

    def __init__(self, name: str, seeds: list[bytes], run) -> None:
        self.name, self.seeds, self.run = name, seeds, run


def targets(workdir: Path) -> list[Target]:
    workdir.mkdir(parents=True, exist_ok=True)

    def image(data: bytes) -> None:
        open_image(data)

    def catalog(data: bytes) -> None:
        suffix = ".parquet" if data[:4] == b"PAR1" else ".csv"
        path = workdir / f"catalog{suffix}"
        path.write_bytes(data)
        cat = load_catalog(path)
        cat.ids, cat.image_path(0), cat.image_refusal(0), cat.fingerprint()  # noqa: B018 - exercised, not used

    def weights(data: bytes) -> None:
        path = workdir / "w.pth"
        path.write_bytes(data)
        load_legacy_torch_state_dict(path)

    # The manifest reader: a real manifest and chunk from a small build, mutated as bytes.
    shop = workdir / "shop"
    shutil.rmtree(shop, ignore_errors=True)
    (shop / "images").mkdir(parents=True)
    for name in ("laptop.jpg", "tennis-ball.jpg"):
        shutil.copy(DEMO_DIR / "images" / name, shop / "images" / name)
    pd.DataFrame({"id": ["a", "b"], "name": ["A", "B"], "image": ["images/laptop.jpg", "images/tennis-ball.jpg"]}
                 ).to_csv(shop / "catalog.csv", index=False)
    ident = ColourEmbedder().identity()
    cache = workdir / "cache"
    build_embeddings(load_catalog(shop / "catalog.csv"), ColourEmbedder(), cache)
    manifest_bytes = (cache / ident.folder / MANIFEST).read_bytes()
    store = ArtifactStore(cache)

    def manifest(data: bytes) -> None:
        (cache / ident.folder / MANIFEST).write_bytes(data)
        store.manifest(ident.folder)
        store.load(ident.folder, ident.name, ident.preprocess, ident.weights)

    return [Target("open_image", image_seeds(), image), Target("load_catalog", catalog_seeds(), catalog),
            Target("manifest", [manifest_bytes], manifest), Target("weights", weight_seeds(), weights)]


def fuzz(target: Target, seconds: float, seed: int, max_inputs: int = 1_000_000) -> tuple[int, list, float]:
    """Mutate the target's seeds for ``seconds``; return (inputs tried, escapes, slowest input in s)."""
    rng = random.Random(seed)
    tried, escapes, slowest = 0, [], 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and tried < max_inputs:
        data = mutate(rng.choice(target.seeds), rng, target.seeds)
        t0 = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about every odd TIFF tag it meets
                target.run(data)
        except RecommenderError:
            pass
        except Exception as exc:  # noqa: BLE001 - what the fuzz is looking for
            escapes.append((type(exc).__name__, str(exc)[:120], data[:64]))
        slowest = max(slowest, time.monotonic() - t0)
        tried += 1
    return tried, escapes, slowest


@pytest.fixture(scope="module")
def fuzz_targets(tmp_path_factory):
    return {t.name: t for t in targets(tmp_path_factory.mktemp("fuzz"))}


@pytest.mark.parametrize("name", ["open_image", "load_catalog", "manifest", "weights"])
def test_fuzz_never_escapes_as_anything_but_a_recommender_error(fuzz_targets, name):
    # ~6 s each, 4 readers: the suite's share stays under 30 s; seeded, so an escape reproduces.
    tried, escapes, slowest = fuzz(fuzz_targets[name], seconds=6.0, seed=8, max_inputs=20_000)
    assert tried > 50 and escapes == [], escapes[:5]
    assert slowest < 10.0  # a hang guard, not a speed target


if __name__ == "__main__":  # python -m tests.test_hostile_inputs SECONDS_PER_READER [SEED]
    import resource

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with tempfile.TemporaryDirectory() as work:
        total_tried = total_escapes = 0
        for t in targets(Path(work)):
            tried, escapes, slowest = fuzz(t, seconds, seed)
            total_tried += tried
            total_escapes += len(escapes)
            kinds = sorted({e[0] for e in escapes})
            print(f"{t.name:12s} inputs {tried:7d}  escapes {len(escapes):4d} {kinds}  slowest {slowest:.2f} s")
            for e in escapes[:3]:
                print("   ", e)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"total inputs {total_tried}, escapes {total_escapes}, peak RSS {rss:.0f} MB, seed {seed}, "
              f"{seconds:g} s per reader")


@pytest.mark.parametrize("bound", ["nan", "inf", "-inf", "1e309", "cheap"])
def test_price_bounds_must_be_finite_numbers(bound):
    from recommender import Filters, QueryError

    with pytest.raises(QueryError, match="price_min must be a"):
        Filters(price_min=bound)
    assert Filters(price_max="49.5").price_max == 49.5


def test_cli_refuses_a_nan_price_bound_in_one_line(capsys):
    from recommender.cli import main

    assert main(["recommend", "--text", "shoe", "--price-min", "nan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "price_min must be a finite number" in err[0]
