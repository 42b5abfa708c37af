"""Image paths are resolved a folder at a time (``Catalog._resolve_file``) and hashed in one thread or several
(``store.build.image_hashes``): the same answers as resolving every path from the top, symlinks and escapes included."""

import os
from pathlib import Path

import pandas as pd
import pytest

from recommender.catalog.loader import catalog_from_frame
from recommender.store import build
from recommender.store.artifacts import file_sha256


def _reference(root: Path, written: str) -> tuple[Path | None, bool]:
    """What the catalog used to do for every row: ``Path.resolve`` of the whole path, then the parents check."""
    shown = Path(written) if Path(written).is_absolute() else root / written
    try:
        target = shown.resolve()
    except (OSError, RuntimeError, ValueError):
        return None, False
    real_root = root.resolve()
    return target, target == real_root or real_root in target.parents


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "shop"
    (root / "images" / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    for p in (root / "images" / "a.png", root / "images" / "sub" / "b.png", outside / "secret.png"):
        p.write_bytes(os.urandom(64))
    (root / "images" / "link-in.png").symlink_to(root / "images" / "a.png")
    (root / "images" / "link-out.png").symlink_to(outside / "secret.png")
    (root / "images" / "dir-out").symlink_to(outside)
    (root / "images" / "loop.png").symlink_to(root / "images" / "loop.png")
    return root, outside


WRITTEN = ["images/a.png", "images/sub/b.png", "images/sub/../a.png", "images/link-in.png", "images/link-out.png",
           "images/dir-out/secret.png", "../outside/secret.png", "images/missing.png", "images/loop.png",
           "images/..", ".", "images/sub/..", "images/a.png\0x"]


def test_folder_memo_resolves_like_the_whole_path(tree):
    root, outside = tree
    written = [*WRITTEN, str(root / "images" / "a.png"), str(outside / "secret.png")]
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(len(written))], "name": ["x"] * len(written), "image": written})
    catalog = catalog_from_frame(frame, root)
    for i, w in enumerate(written):
        target, inside = _reference(root, w)
        refused = catalog.image_refusal(i)
        if target is None or not inside:
            assert refused is not None, w
        else:
            assert refused is None and catalog.image_path(i) == target, w


@pytest.mark.parametrize("threaded", [False, True])
def test_hashes_in_one_thread_or_several_are_the_same(tree, monkeypatch, threaded):
    root, _ = tree
    monkeypatch.setattr(build, "HASH_BLOCK", 2)
    monkeypatch.setattr(build, "THREADED_HASH_BYTES", 0 if threaded else 1 << 40)
    written = WRITTEN * 3
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(len(written))], "name": ["x"] * len(written), "image": written})
    catalog = catalog_from_frame(frame, root)
    hashes = build.image_hashes(catalog, workers=3)
    expected = []
    for w in written:
        target, inside = _reference(root, w)
        expected.append(file_sha256(target) if target is not None and inside and target.is_file() else None)
    assert hashes == expected and sum(h is not None for h in hashes) == 3 * 4
