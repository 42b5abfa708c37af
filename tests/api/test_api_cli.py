"""``python -m recommender import | reindex | serve`` as a person runs them: one line per problem, exit 2."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recommender.catalog.sql import CatalogRepository
from recommender.cli import main


@pytest.fixture()
def env(monkeypatch, api_cache, tmp_path):
    for name in ("RECOMMENDER_SETTINGS_FILE", "RECOMMENDER_DATA_DIR"):  # restored after the test whatever serve sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("RECOMMENDER_CACHE_DIR", str(api_cache))
    monkeypatch.setenv("RECOMMENDER_BACKBONE", "efficientnet_lite0")
    monkeypatch.delenv("RECOMMENDER_DATABASE_URL", raising=False)
    return tmp_path / "data"


def test_import_then_import_again_replaces(env, small_dir, capsys):
    assert main(["import", "--catalog", str(small_dir / "catalog.csv"), "--data-dir", str(env)]) == 0
    assert "6 products imported (6 new, 0 replaced), 0 without a usable image" in capsys.readouterr().out
    assert main(["import", "--catalog", str(small_dir / "catalog.csv"), "--data-dir", str(env)]) == 0
    assert "(0 new, 6 replaced)" in capsys.readouterr().out
    repo = CatalogRepository.from_url(f"sqlite:///{env / 'catalog.db'}")
    assert repo.count() == 6 and repo.get("laptop").image_sha256
    assert len([f for f in (env / "media").rglob("*") if f.is_file()]) == 6  # the same bytes stored once


def test_import_keeps_a_product_whose_image_is_unusable(env, small_dir, capsys):
    items = pd.read_csv(small_dir / "catalog.csv", dtype=str, keep_default_na=False)
    items.loc[0, "image"] = "images/missing.jpg"
    (small_dir / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    items.loc[1, "image"] = "images/broken.jpg"
    items.to_csv(small_dir / "catalog.csv", index=False)
    assert main(["import", "--catalog", str(small_dir / "catalog.csv"), "--data-dir", str(env)]) == 0
    out = capsys.readouterr().out
    assert "2 without a usable image" in out and f"no image for {items.loc[0, 'id']}" in out
    repo = CatalogRepository.from_url(f"sqlite:///{env / 'catalog.db'}")
    p = repo.get(items.loc[1, "id"])
    assert p.image_sha256 is None and p.image_problem
    # The recommender ranks it by metadata; reindex reports the database and vectors agree.
    assert main(["reindex", "--data-dir", str(env)]) == 0
    assert "6 products in the database, 6 indexed" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    (None, "catalog file not found"),
    ("id,name,image\na/b,Bad,x.jpg\n", "invalid product id"),
    ("id,name\nx,No image column\n", "missing required column"),
])
def test_import_errors_are_one_line_and_exit_2(env, tmp_path, capsys, content, message):
    path = tmp_path / "catalog.csv"
    if content is not None:
        path.write_text(content)
    assert main(["import", "--catalog", str(path), "--data-dir", str(env)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_bad_settings_are_one_line_before_anything_starts(env, monkeypatch, capsys):
    monkeypatch.setenv("RECOMMENDER_MAX_LIMIT", "0")
    assert main(["serve", "--data-dir", str(env), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: invalid settings") and "\n" not in err
    monkeypatch.delenv("RECOMMENDER_MAX_LIMIT")
    assert main(["serve", "--settings", str(env / "nope.env")]) == 2
    assert "settings file" in capsys.readouterr().err


def test_settings_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    from recommender.api.settings import load_settings

    f = tmp_path / "service.env"
    f.write_text("RECOMMENDER_API_KEY=from-file\nRECOMMENDER_MAX_LIMIT=7\nRECOMMENDER_PUBLIC_READS=false\n")
    monkeypatch.delenv("RECOMMENDER_API_KEY", raising=False)
    s = load_settings(f)
    assert (s.api_keys, s.max_limit, s.public_reads) == (["from-file"], 7, False)
    monkeypatch.setenv("RECOMMENDER_MAX_LIMIT", "9")
    assert load_settings(f).max_limit == 9


def _age(path, seconds: float) -> None:
    import os
    import time

    t = time.time() - seconds
    os.utime(path, (t, t))


def test_gc_removes_only_old_unreferenced_images_the_store_wrote(env, small_dir, capsys, tmp_path):
    from recommender.catalog.media import MediaStore

    assert main(["import", "--catalog", str(small_dir / "catalog.csv"), "--data-dir", str(env)]) == 0
    repo = CatalogRepository.from_url(f"sqlite:///{env / 'catalog.db'}")
    media = env / "media"
    kept = {f.relative_to(media) for f in media.rglob("*") if f.is_file()}
    # One product is deleted: its image is garbage once old enough; another one's image is still in use.
    gone = repo.get("laptop")
    gone_file = media / MediaStore.relative_name(gone.image_sha256, gone.image_ext)
    repo.delete(["laptop"])
    # A killed write's temporary, a file this store did not write, and a symlink out of the folder.
    leftover = gone_file.parent / ".abc123.tmp"
    leftover.write_bytes(b"half")
    foreign = media / "notes.txt"
    foreign.write_text("an operator's file")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(gone_file.read_bytes())
    link = gone_file.parent / ("0" * 64 + ".jpg")
    link.symlink_to(outside)
    for f in media.rglob("*"):
        if f.is_file() and not f.is_symlink():
            _age(f, 2 * 3600)

    # A dry run lists and removes nothing.
    assert main(["gc", "--data-dir", str(env), "--dry-run"]) == 0
    assert "would remove 1 unreferenced image(s) and 1 leftover temporary" in capsys.readouterr().out
    assert gone_file.exists() and leftover.exists()

    assert main(["gc", "--data-dir", str(env)]) == 0
    assert "removed 1 unreferenced image(s) and 1 leftover temporary" in capsys.readouterr().out
    assert not gone_file.exists() and not leftover.exists()
    assert foreign.exists() and link.is_symlink() and outside.exists()
    still = {f.relative_to(media) for f in media.rglob("*") if f.is_file() and not f.is_symlink()} - {Path("notes.txt")}
    assert still == kept - {gone_file.relative_to(media)}
    for p in repo.all():  # every product's image is still served
        assert (media / MediaStore.relative_name(p.image_sha256, p.image_ext)).is_file()


def test_gc_keeps_a_young_unreferenced_file_and_refuses_a_negative_grace(env, small_dir, capsys):
    assert main(["import", "--catalog", str(small_dir / "catalog.csv"), "--data-dir", str(env)]) == 0
    repo = CatalogRepository.from_url(f"sqlite:///{env / 'catalog.db'}")
    repo.delete(["laptop"])  # its file was written seconds ago: an in-flight PUT could be naming it
    assert main(["gc", "--data-dir", str(env)]) == 0
    out = capsys.readouterr().out
    assert "removed 0 unreferenced image(s)" in out and "1 unreferenced file(s) younger than the grace" in out
    assert main(["gc", "--data-dir", str(env), "--grace-hours", "-1"]) == 2
    assert "--grace-hours must be >= 0" in capsys.readouterr().err


def test_gc_prunes_the_change_log_and_a_late_worker_reloads_without_losing_a_write(env, small_dir, api_cache, capsys):
    from api_helpers import settings_for

    from recommender.api.deps import Service
    from recommender.catalog.sql import ProductRow

    assert main(["import", "--catalog", str(small_dir / "catalog.csv"), "--data-dir", str(env)]) == 0
    s = settings_for(env, api_cache, seed_catalog="")
    late = Service(s).open()  # a worker that stops syncing for a while
    repo = CatalogRepository.from_url(s.url)
    keep = repo.get("laptop")
    victim = next(p.id for p in repo.all() if p.id != "laptop")
    repo.delete([victim])
    repo.upsert([ProductRow(id="laptop-2", name="Second laptop", image=keep.image, image_sha256=keep.image_sha256,
                            image_ext=keep.image_ext)])
    for _ in range(3):
        repo.patch("laptop", {"price": 999.0})
    assert main(["gc", "--data-dir", str(env), "--keep-revisions", "1"]) == 0
    assert "change log:" in capsys.readouterr().out
    late.live.sync()  # the log no longer reaches its revision: it reloads, and misses nothing
    rec = late.live.recommender
    assert rec._is_live("laptop-2") and not rec._is_live(victim)
    assert rec.recommend(item="laptop-2", k=3).items
    assert late.live.drift().in_sync
    late.close()
    assert main(["gc", "--data-dir", str(env), "--keep-revisions", "0"]) == 2
