"""The database and the vectors never disagree silently: /ready reports drift; sync and reindex repair it."""

from __future__ import annotations

from api_helpers import AUTH, DEMO_DIR

from recommender.catalog.sql import CatalogRepository, ProductRow


def test_writes_by_another_process_show_as_drift_until_applied(make_client):
    client = make_client(sync_interval_s=3600)  # no background catch-up during this test
    service = client.app.state.service
    other = CatalogRepository.from_url(service.settings.url)  # another worker, or an import job
    sha, ext = service.live.media.put((DEMO_DIR / "images" / "football.jpg").read_bytes())
    other.upsert([ProductRow(id="foreign", name="Football", image="football.jpg", image_sha256=sha, image_ext=ext)])
    other.delete(["orchid"])
    r = client.get("/ready")
    assert r.status_code == 503
    drift = r.json()["drift"]
    assert r.json()["status"] == "drift" and drift["in_sync"] is False
    assert drift["missing"] == {"count": 1, "ids": ["foreign"]} and drift["extra"] == {"count": 1, "ids": ["orchid"]}
    assert drift["db_revision"] == drift["applied_revision"] + 2
    assert client.get("/v1/products/foreign/similar").status_code == 404  # not in the vectors yet

    assert service.live.sync() == 2
    assert client.get("/ready").status_code == 200
    assert client.get("/v1/products/foreign/similar").status_code == 200
    assert "orchid" not in [h["id"] for h in client.get("/v1/products/laptop/similar").json()["results"]]


def test_reindex_rebuilds_from_the_database(make_client):
    client = make_client(sync_interval_s=3600)
    service = client.app.state.service
    other = CatalogRepository.from_url(service.settings.url)
    other.delete(["orchid"])
    assert client.get("/ready").status_code == 503
    r = client.post("/v1/reindex", headers=AUTH)
    assert r.status_code == 200 and r.json()["in_sync"] is True and r.json()["db_products"] == 5
    assert client.get("/ready").status_code == 200
