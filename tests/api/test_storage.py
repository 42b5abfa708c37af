"""The catalog database: migrations, the repository's reads and writes, the change log.

Runs on an SQLite file always, and also on PostgreSQL when ``RECOMMENDER_TEST_POSTGRES_URL`` is set
(``.ci/run`` starts a local cluster and sets it): the same tests on both.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from recommender.catalog.sql import CatalogRepository, ProductRow, check_id, make_engine, migrate, schema_revision
from recommender.errors import CatalogError

PG_URL = os.environ.get("RECOMMENDER_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not PG_URL, reason="RECOMMENDER_TEST_POSTGRES_URL not set (.ci/run starts a local PostgreSQL and sets it)"))]


def _reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in ("interactions", "interaction_state", "changes", "products", "catalog_state", "alembic_version"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def repo(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        url = PG_URL
        _reset_postgres(url)
    r = CatalogRepository.from_url(url)
    yield r
    r.engine.dispose()


def row(pid: str, **kw) -> ProductRow:
    return ProductRow(id=pid, name=kw.pop("name", pid.title()), image=f"{pid}.jpg", image_sha256="a" * 64,
                      image_ext=".jpg", **kw)


def test_migration_creates_schema_at_head_and_is_idempotent(repo):
    assert schema_revision(repo.engine) == "0002"
    migrate(repo.engine)  # a second start must not fail or change anything
    assert schema_revision(repo.engine) == "0002"
    assert repo.revision() == 0 and repo.count() == 0


def test_upsert_inserts_then_replaces_and_bumps_revision(repo):
    rev1, created = repo.upsert([row("shoe", brand="Nike", price=59.9), row("ball", colour="red|white")])
    assert (rev1, created) == (1, 2)
    rev2, created = repo.upsert([row("shoe", brand="Adidas", price=None, attributes={"label": "x"})])
    assert (rev2, created) == (2, 0)
    shoe = repo.get("shoe")
    assert (shoe.brand, shoe.price, shoe.attributes, shoe.revision) == ("Adidas", None, {"label": "x"}, 2)
    assert repo.count() == 2
    newest, ops = repo.changes_since(1)
    assert newest == 2 and ops == {"shoe": {"upsert"}}


def test_patch_changes_only_given_fields_and_unknown_is_none(repo):
    repo.upsert([row("shoe", brand="Nike", colour="black", price=10.0)])
    rev, p = repo.patch("shoe", {"brand": "Puma", "price": 12.5})
    assert (p.brand, p.colour, p.price, p.image_sha256) == ("Puma", "black", 12.5, "a" * 64)
    assert repo.patch("nope", {"brand": "x"}) is None
    assert repo.revision() == rev  # the failed patch rolled back its revision bump
    with pytest.raises(CatalogError, match="cannot patch image_sha256"):
        repo.patch("shoe", {"image_sha256": "b" * 64})
    with pytest.raises(CatalogError, match="finite"):
        repo.patch("shoe", {"price": float("inf")})


def test_delete_returns_what_existed_and_logs_it(repo):
    repo.upsert([row("a"), row("b")])
    rev, found = repo.delete(["a", "zzz"])
    assert found == ["a"] and repo.get("a") is None and repo.count() == 1
    assert repo.changes_since(rev - 1)[1] == {"a": {"delete"}}
    assert repo.delete(["zzz"])[1] == []


def test_page_filters_multi_values_price_and_escapes_like_wildcards(repo):
    repo.upsert([row("p1", name="Red 100% cotton", colour="red|white", category="Shirts", price=20),
                 row("p2", name="Blue shirt", colour="blue", category="Shirts", price=40),
                 row("p3", name="White_mug", colour="White", category="Kitchen", price=None)])
    ids = lambda rows: [p.id for p in rows[0]]  # noqa: E731
    assert ids(repo.page(10, 0, {"colour": ["white"]})) == ["p1", "p3"]  # multi-valued cell, any case
    assert ids(repo.page(10, 0, {"colour": ["whi"]})) == []  # whole values only
    assert ids(repo.page(10, 0, {"category": ["shirts"]}, price_max=30)) == ["p1"]
    assert ids(repo.page(10, 0, q="%")) == ["p1"]  # a literal %, not "anything"
    assert ids(repo.page(10, 0, q="e_m")) == ["p3"]  # a literal _
    rows, total = repo.page(1, 1)
    assert [p.id for p in rows] == ["p2"] and total == 3


def test_batch_is_all_or_nothing(repo):
    repo.upsert([row("keep")])
    with pytest.raises(CatalogError, match="price"):
        repo.upsert([row("new1"), row("new2", price=-1.0)])
    assert repo.get("new1") is None and repo.count() == 1 and repo.revision() == 1
    with pytest.raises(CatalogError, match="given twice"):
        repo.upsert([row("x"), row("x")])


@pytest.mark.parametrize("bad", ["", " lead", "trail ", "a/b", "a\\b", "q?x", "h#x", "p%2F", "nl\nx",
                                 "x" * 201, "\x00"])
def test_check_id_refuses_ids_that_cannot_be_a_path_segment(bad):
    with pytest.raises(CatalogError, match="invalid product id"):
        check_id(bad)


@pytest.mark.parametrize("good", ["laptop", "85123A", "a.b-c_d:e@f", "ü-ß", "x" * 200, "a b"])
def test_check_id_accepts_ordinary_ids(good):
    assert check_id(good) == good


def test_unreachable_database_is_one_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="cannot open the catalog database"):
        CatalogRepository.from_url(f"sqlite:///{tmp_path / 'missing-folder' / 'x.db'}")


def test_a_pruned_change_log_tells_a_late_reader_to_reload(repo):
    repo.upsert([row("a"), row("b")])
    early = repo.revision()
    repo.patch("a", {"price": 3.0})
    repo.delete(["b"])
    latest = repo.revision()
    assert repo.changes_since(early)[1] == {"a": {"patch"}, "b": {"delete"}}
    assert repo.prune_changes(1) >= 2  # only the newest revision's records are kept
    assert repo.changes_since(early) == (latest, None)  # the log no longer reaches back: reload everything
    assert repo.changes_since(latest - 1)[1] == {"b": {"delete"}}  # a reader just one behind still catches up
    assert repo.changes_since(latest)[1] == {}
    with pytest.raises(CatalogError, match="keep at least"):
        repo.prune_changes(0)
