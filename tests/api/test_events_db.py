"""Customer events in the catalog database: the 0002 migration, the event log, durability across restarts,
two workers agreeing, and hostile events. On SQLite always; on PostgreSQL too when
``RECOMMENDER_TEST_POSTGRES_URL`` is set (``source scripts/ci_postgres.sh`` starts one)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from alembic import command
from alembic.config import Config
from api_helpers import AUTH, SMALL_CF, settings_for, write_retail_slice
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from recommender.api.app import create_app
from recommender.api.deps import Service
from recommender.catalog.events_sql import EventLog
from recommender.catalog.interactions import Interactions
from recommender.catalog.sql import MIGRATIONS, CatalogRepository, ProductRow, make_engine, migrate, schema_revision

PG_URL = os.environ.get("RECOMMENDER_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not PG_URL, reason="RECOMMENDER_TEST_POSTGRES_URL not set (source scripts/ci_postgres.sh starts one)"))]
TABLES = ("interactions", "interaction_state", "changes", "products", "catalog_state", "alembic_version")
SQLISH = "x'); DROP TABLE interactions; --"


def reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture(scope="module")
def retail_slice(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """The 80 best-selling Online Retail products and the 40 customers who bought most of them."""
    return write_retail_slice(tmp_path_factory.mktemp("retail-events"), 80, 40)


def service(root: Path, data: Path, url: str, **overrides) -> Service:
    s = settings_for(data, root / "cache", seed_catalog=str(root / "catalog.parquet"), image_root=root,
                     cf_params=SMALL_CF, database_url=url, **overrides)
    return Service(s).open()


def events(n: int, user: str = "u1", item: str = "a") -> Interactions:
    return Interactions(pd.DataFrame({"user_id": [user] * n, "item_id": [item] * n, "weight": [1.0] * n,
                                      "timestamp": [1_300_000_000 + i for i in range(n)], "kind": ["purchase"] * n}))


# -- the schema and the log -------------------------------------------------------------------------
def test_upgrade_from_a_0001_database_keeps_products_and_adds_the_event_tables(db_url):
    engine = make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    assert schema_revision(engine) == "0001" and "interactions" not in inspect(engine).get_table_names()
    CatalogRepository(engine).upsert([ProductRow(id="a", name="A")])
    migrate(engine)  # what a new release does at start
    assert schema_revision(engine) == "0002"
    assert {"interactions", "interaction_state"} <= set(inspect(engine).get_table_names())
    assert CatalogRepository(engine).get("a").name == "A" and EventLog(engine).newest() == 0
    migrate(engine)  # idempotent
    assert schema_revision(engine) == "0002"
    engine.dispose()


def test_event_log_ids_are_contiguous_in_commit_order_and_text_is_stored_verbatim(db_url):
    repo = CatalogRepository.from_url(db_url)
    elog = EventLog(repo.engine)
    assert elog.since(0) == (0, None)
    assert elog.append(events(3)) == (1, 3)
    assert elog.append(events(700, user=SQLISH)) == (4, 703)  # over one INSERT chunk
    newest, got = elog.since(3)
    assert newest == 703 and len(got) == 700 and set(got.frame["user_id"]) == {SQLISH}
    assert list(got.frame["timestamp"][:2]) == [1_300_000_000, 1_300_000_001]
    assert elog.count() == 703 and elog.since(703) == (703, None)
    repo.engine.dispose()


def test_concurrent_writers_get_disjoint_contiguous_id_ranges(db_url):
    repo = CatalogRepository.from_url(db_url)
    elog = EventLog(repo.engine)

    def write(worker: int) -> list[tuple[int, int]]:
        return [elog.append(events(5, user=f"w{worker}-{i}")) for i in range(8)]

    with ThreadPoolExecutor(4) as pool:
        ranges = [r for rs in pool.map(write, range(4)) for r in rs]
    assert sorted(i for first, last in ranges for i in range(first, last + 1)) == list(range(1, 161))
    newest, got = elog.since(0)
    users = list(got.frame["user_id"])
    assert newest == 160 and len(users) == 160
    assert all(len(set(users[k:k + 5])) == 1 for k in range(0, 160, 5))  # each batch stored whole, in one range
    repo.engine.dispose()


# -- the service: durable, shared, hostile-proof -----------------------------------------------------
def test_acknowledged_events_survive_a_restart_and_reach_another_worker(db_url, retail_slice, tmp_path):
    root, users, items = retail_slice
    data = tmp_path / "data"
    with TestClient(create_app(service=service(root, data, db_url,
                                               interactions=str(root / "interactions.parquet")))) as a, \
         TestClient(create_app(service=service(root, data, db_url,
                                               interactions=str(root / "interactions.parquet")))) as b:
        assert b.get("/v1/users/newcomer/recommendations").status_code == 404
        r = a.post("/v1/events", json=[{"user_id": "newcomer", "item_id": i} for i in items[:3]], headers=AUTH)
        assert r.status_code == 200 and r.json()["accepted"] == 3
        # worker b never saw the POST: it applies the committed events before answering
        got = b.get("/v1/users/newcomer/recommendations", params={"limit": 5})
        assert got.status_code == 200, got.text
        assert len(got.json()["results"]) == 5 and not {h["id"] for h in got.json()["results"]} & set(items[:3])
        assert got.json() == a.get("/v1/users/newcomer/recommendations", params={"limit": 5}).json()
        before = b.get(f"/v1/users/{users[0]}/recommendations", params={"limit": 5}).json()
        top = before["results"][0]["id"]
        assert a.post("/v1/events", json={"user_id": users[0], "item_id": top}, headers=AUTH).status_code == 200
        after = b.get(f"/v1/users/{users[0]}/recommendations", params={"limit": 5}).json()
        assert top not in [h["id"] for h in after["results"]]
    # a restart (no file this time): the model is fitted on the database's events alone
    with TestClient(create_app(service=service(root, data, db_url))) as c:
        got = c.get("/v1/users/newcomer/recommendations", params={"limit": 5, "exclude_bought": False})
        assert got.status_code == 200, got.text
        assert c.get(f"/v1/users/{users[1]}/recommendations").status_code == 404  # file customers: not loaded
        assert c.app.state.service.events.watermark == 4


def test_hostile_events_are_refused_whole_and_nothing_is_stored(db_url, retail_slice, tmp_path):
    root, users, items = retail_slice
    svc = service(root, tmp_path / "data", db_url, interactions=str(root / "interactions.parquet"), max_batch=1000)
    elog = EventLog(svc.live.repo.engine)
    with TestClient(create_app(service=svc)) as c:
        def post(body, raw: bool = False):
            if raw:
                return c.post("/v1/events", content=body, headers={**AUTH, "Content-Type": "application/json"})
            return c.post("/v1/events", json=body, headers=AUTH)

        good = {"user_id": users[0], "item_id": items[0]}
        r = post([good] * 1001)
        assert r.status_code == 413 and "1000" in r.json()["detail"]
        cases = {
            "unknown item": [good, {"user_id": users[0], "item_id": "NOPE"}],
            "sql-ish item": [{"user_id": users[0], "item_id": SQLISH}],
            "negative weight": [{**good, "weight": -1}],
            "milliseconds": [{**good, "timestamp": 1_300_000_000_000}],
            "negative time": [{**good, "timestamp": -5}],
            "impossible date": [{**good, "timestamp": "2011-13-45"}],
            "not a date": [{**good, "timestamp": "yesterday-ish"}],
            "too long id": [{**good, "user_id": "u" * 201}],
            "extra field": [{**good, "price": 3}],
        }
        for what, body in cases.items():
            r = post(body)
            assert r.status_code == 422, (what, r.text)
            assert len(r.text) < 2000 and "Traceback" not in r.text, what
        item = json.dumps(items[0])
        for raw in (f'{{"user_id": "u", "item_id": {item}, "weight": NaN}}',
                    f'{{"user_id": "u", "item_id": {item}, "weight": Infinity}}',
                    f'[{{"user_id": "u", "item_id": {item}}}'):
            assert post(raw, raw=True).status_code == 422, raw
        assert elog.count() == 0  # a refused batch leaves nothing behind, not even its valid events
        # a full batch of valid events, one of them from a customer whose id looks like SQL: stored verbatim
        batch = [{"user_id": users[i % 5], "item_id": items[i % 60], "timestamp": 1_320_000_000 + i}
                 for i in range(999)] + [{"user_id": SQLISH, "item_id": items[1], "kind": "view"}]
        r = post(batch)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1000 and SQLISH in r.json()["users"]
        assert elog.count() == 1000 and elog.newest() == 1000
        assert c.get(f"/v1/users/{SQLISH}/recommendations", params={"limit": 3}).status_code == 200
        stored = elog.since(999)[1].frame.iloc[0]
        assert (stored["user_id"], stored["kind"]) == (SQLISH, "view")
        assert {"interactions", "products"} <= set(inspect(svc.live.repo.engine).get_table_names())
        assert svc.live.repo.count() == len(items)


def test_two_server_processes_agree_and_a_kill_9_loses_no_acknowledged_event(retail_slice, tmp_path):
    """Real ``serve`` processes on one database: an event acknowledged by one is in the other's next answer,
    and still there after the first is killed with SIGKILL and started again."""
    import signal
    import subprocess
    import sys

    from api_helpers import API_KEY, free_port
    from test_serve_process import REPO, wait_ready

    root, users, items = retail_slice
    data = tmp_path / "data"
    env = {**os.environ, "RECOMMENDER_API_KEY": API_KEY, "RECOMMENDER_CACHE_DIR": str(root / "cache"),
           "RECOMMENDER_BACKBONE": "efficientnet_lite0", "RECOMMENDER_IMAGE_ROOT": str(root),
           "RECOMMENDER_SEED_CATALOG": str(root / "catalog.parquet"), "RECOMMENDER_SYNC_INTERVAL_S": "0.2",
           "RECOMMENDER_INTERACTIONS": str(root / "interactions.parquet"),
           "RECOMMENDER_CF_PARAMS": json.dumps(SMALL_CF)}
    env.pop("RECOMMENDER_DATABASE_URL", None)
    procs: list[subprocess.Popen] = []

    def start():
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "recommender", "serve", "--port", str(port),
                                       "--data-dir", str(data)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE))
        return procs[-1], f"http://127.0.0.1:{port}"

    try:
        (pa, ua), (pb, ub) = start(), start()
        a, b = wait_ready(pa, ua), wait_ready(pb, ub)
        body = [{"user_id": "two-procs", "item_id": i} for i in items[5:8]]
        assert a.post("/v1/events", json=body, headers=AUTH).status_code == 200
        pa.send_signal(signal.SIGKILL)
        pa.wait(timeout=30)
        got = b.get("/v1/users/two-procs/recommendations", params={"limit": 4})
        assert got.status_code == 200, got.text
        assert len(got.json()["results"]) == 4 and not {h["id"] for h in got.json()["results"]} & set(items[5:8])
        pc, uc = start()
        c = wait_ready(pc, uc)
        again = c.get("/v1/users/two-procs/recommendations", params={"limit": 4})
        # refitted from scratch on file + stored events (not the incremental state): same history, same exclusions
        assert again.status_code == 200, again.text
        assert again.json()["notes"][0] == got.json()["notes"][0] == "3 product(s) in this customer's history"
        assert len(again.json()["results"]) == 4
        assert not {h["id"] for h in again.json()["results"]} & set(items[5:8])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
