"""Customer endpoints on a small slice of the committed Online Retail demo: recommendations for a customer
(CF + content, explained) and events applied incrementally (``POST /v1/events``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from api_helpers import AUTH, SMALL_CF, settings_for, write_retail_slice
from fastapi.testclient import TestClient

from recommender.api.app import create_app
from recommender.api.deps import Service


@pytest.fixture(scope="module")
def retail_slice(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """The 120 best-selling products and the 60 customers who bought most of them (catalog + interactions)."""
    return write_retail_slice(tmp_path_factory.mktemp("retail-slice"), 120, 60)


def _client(root: Path, data: Path, **overrides) -> TestClient:
    s = settings_for(data, root / "cache", seed_catalog=str(root / "catalog.parquet"), image_root=root,
                     cf_params=SMALL_CF, **overrides)
    return TestClient(create_app(service=Service(s).open()))


@pytest.fixture(scope="module")
def client(retail_slice, tmp_path_factory):
    root = retail_slice[0]
    with _client(root, tmp_path_factory.mktemp("api-cf"), interactions=str(root / "interactions.parquet")) as c:
        yield c


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["id"] for h in response.json()["results"]]


def test_user_recommendations_carry_cf_and_content_scores_and_reasons(client, retail_slice):
    user = retail_slice[1][0]
    r = client.get(f"/v1/users/{user}/recommendations", params={"limit": 5, "weight_cf": 0.7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == user and len(body["results"]) == 5 and body["weight_cf"] == pytest.approx(0.7)
    for hit in body["results"]:
        assert hit["id"] in retail_slice[2]
        assert 0 <= hit["scores"]["cf"] <= 1 and 0 <= hit["scores"]["content"] <= 1
        assert hit["contributions"]["cf"] + hit["contributions"]["content"] == pytest.approx(hit["score"], abs=1e-4)
        assert hit["because"] and hit["why"] == "; ".join(hit["because"])
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_user_recommendations_filters_and_errors(client, retail_slice):
    user = retail_slice[1][1]
    cheap = client.get(f"/v1/users/{user}/recommendations", params={"limit": 10, "price_max": 1.0}).json()
    assert all(h["id"] in retail_slice[2] for h in cheap["results"])
    assert client.get("/v1/users/no-such-customer/recommendations").status_code == 404
    assert "no customer" in client.get("/v1/users/no-such-customer/recommendations").json()["detail"]
    for bad in ({"limit": 0}, {"weight_cf": 1.5}, {"price_min": 5, "price_max": 1}, {"limit": "x"}):
        assert client.get(f"/v1/users/{user}/recommendations", params=bad).status_code == 422, bad


def test_events_need_the_key_and_are_validated_like_the_loader(client, retail_slice):
    user, item = retail_slice[1][2], retail_slice[2][0]
    assert client.post("/v1/events", json={"user_id": user, "item_id": item}).status_code == 401
    r = client.post("/v1/events", json={"user_id": user, "item_id": "NOT-A-PRODUCT"}, headers=AUTH)
    assert r.status_code == 422 and "NOT-A-PRODUCT" in r.json()["detail"] and "event(s) 1" in r.json()["detail"]
    r = client.post("/v1/events", json=[{"user_id": user, "item_id": item},
                                        {"user_id": user, "item_id": item, "weight": -2}], headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"] == "weight is negative on event(s) 2"
    r = client.post("/v1/events", content=f'{{"user_id": "{user}", "item_id": "{item}", "weight": Infinity}}',
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "not finite" in r.json()["detail"]
    r = client.post("/v1/events", json={"user_id": user, "item_id": item, "timestamp": "not a date"}, headers=AUTH)
    assert r.status_code == 422 and "timestamp" in r.json()["detail"]
    assert client.post("/v1/events", json={"user_id": user}, headers=AUTH).status_code == 422
    assert client.post("/v1/events", json=[], headers=AUTH).status_code == 422


def test_an_event_changes_that_customers_list_without_a_retrain(client, retail_slice):
    user = retail_slice[1][3]
    before = client.get(f"/v1/users/{user}/recommendations", params={"limit": 5}).json()
    top = before["results"][0]["id"]
    r = client.post("/v1/events", json=[{"user_id": user, "item_id": top, "weight": 3, "timestamp": "2011-12-10 10:00",
                                         "kind": "purchase"}], headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1 and r.json()["users"] == [user]
    after = client.get(f"/v1/users/{user}/recommendations", params={"limit": 5}).json()
    assert top not in [h["id"] for h in after["results"]]  # bought now: left out
    n_before, n_after = (int(x["notes"][0].split()[0]) for x in (before, after))
    assert n_after == n_before + 1  # one more product in the history, without a refit


def test_a_new_customer_gets_recommendations_after_their_first_events(client, retail_slice):
    items = retail_slice[2]
    assert client.get("/v1/users/brand-new/recommendations").status_code == 404
    events = [{"user_id": "brand-new", "item_id": i} for i in items[:3]]
    assert client.post("/v1/events", json=events, headers=AUTH).status_code == 200
    got = _ids(client.get("/v1/users/brand-new/recommendations", params={"limit": 5}))
    assert len(got) == 5 and not set(got) & set(items[:3])


def test_without_interactions_the_first_events_start_a_customer_model(retail_slice, tmp_path_factory):
    root, users, items = retail_slice
    with _client(root, tmp_path_factory.mktemp("api-no-cf"), cf_refit_interval_s=0) as c:
        r = c.get(f"/v1/users/{users[0]}/recommendations")
        assert r.status_code == 409 and "RECOMMENDER_INTERACTIONS" in r.json()["detail"]
        # Hostile first events are refused whole and store nothing: still no customer model on the way.
        for bad in ([{"user_id": "u", "item_id": "no-such-product"}],
                    [{"user_id": "u", "item_id": items[0], "weight": -1}],
                    [{"user_id": "u", "item_id": items[0], "timestamp": "yesterday"}]):
            assert c.post("/v1/events", json=bad, headers=AUTH).status_code == 422
        assert c.get(f"/v1/users/{users[0]}/recommendations").status_code == 409
        # A shop's first purchases: stored at once (202), learned from by the model the worker fits next.
        first = [{"user_id": u, "item_id": i} for u in ("a", "b", "c") for i in items[:4]]
        first += [{"user_id": "a", "item_id": items[5]}, {"user_id": "b", "item_id": items[5]},
                  {"user_id": "d", "item_id": items[0]}]
        r = c.post("/v1/events", json=first, headers=AUTH)
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == len(first) and "stored" in r.json()["note"]
        deadline = time.monotonic() + 60
        while (r := c.get("/v1/users/d/recommendations", params={"limit": 5})).status_code == 503:
            assert time.monotonic() < deadline, "the customer model was not fitted from the stored events"
            time.sleep(0.2)
        got = _ids(r)
        assert items[0] not in got  # already bought
        bought_name = c.get(f"/v1/products/{items[0]}").json()["name"]
        assert all(h["because"] for h in r.json()["results"])  # every hit explains itself, from d's purchase
        assert any(bought_name in reason for h in r.json()["results"] for reason in h["because"])
        # From now on events apply incrementally, as with an interactions file.
        assert c.post("/v1/events", json={"user_id": "e", "item_id": items[5]}, headers=AUTH).status_code == 200


def test_configured_but_not_fitted_yet_answers_503(retail_slice, tmp_path_factory):
    root = retail_slice[0]
    with _client(root, tmp_path_factory.mktemp("api-cf-wait")) as c:
        # configured but not fitted yet (the loader thread is still at it): 503 and not ready, not 409
        service = c.app.state.service
        service.settings = service.settings.model_copy(update={"interactions": str(root / "interactions.parquet")})
        r = c.get(f"/v1/users/{retail_slice[1][0]}/recommendations")
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert c.get("/ready").status_code == 503 and "customer model" in c.get("/ready").json()["detail"]


def test_a_scheduled_refit_takes_in_products_added_after_the_last_fit(retail_slice, tmp_path_factory):
    root, users, items = retail_slice
    with _client(root, tmp_path_factory.mktemp("api-cf-refit"), interactions=str(root / "interactions.parquet"),
                 cf_refit_interval_s=0.5) as c:
        while c.get("/ready").status_code != 200:
            time.sleep(0.2)
        service = c.app.state.service
        fitted = service._cf_fit
        body = {"name": "Brand new lantern", "price": 4.5}
        photo = (Path(__file__).resolve().parents[2] / "data" / "demo" / "images" / "tennis-ball.jpg").read_bytes()
        r = c.put("/v1/products/new-lantern", headers=AUTH, data={"metadata": json.dumps(body)},
                  files={"image": ("lantern.jpg", photo, "image/jpeg")})
        assert r.status_code in (200, 201), r.text
        deadline = time.monotonic() + 60
        while service._cf_fit == fitted:  # the catalog changed since the fit: refitted within the interval
            assert time.monotonic() < deadline, "no scheduled refit after a product was added"
            time.sleep(0.2)
        assert "new-lantern" in set(map(str, service.live.recommender.customers_.catalog_.ids))
        # Events on the new product are taken incrementally now, and the lists still answer.
        r = c.post("/v1/events", json={"user_id": users[0], "item_id": "new-lantern"}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert _ids(c.get(f"/v1/users/{users[0]}/recommendations", params={"limit": 3}))


def test_product_writes_reach_the_customer_lists(client, retail_slice):
    """Patched products stay recommendable; a removed one leaves every list at once and takes no events."""
    user = retail_slice[1][4]
    first = client.get(f"/v1/users/{user}/recommendations", params={"limit": 5}).json()["results"]
    patched, removed = first[0]["id"], first[1]["id"]
    assert client.patch(f"/v1/products/{patched}", json={"price": 0.5}, headers=AUTH).status_code == 200
    assert client.delete(f"/v1/products/{removed}", headers=AUTH).status_code in (200, 204)
    after = _ids(client.get(f"/v1/users/{user}/recommendations", params={"limit": 5}))
    assert len(after) == 5 and removed not in after and patched in after
    r = client.post("/v1/events", json={"user_id": user, "item_id": removed}, headers=AUTH)
    assert r.status_code == 422 and removed in r.json()["detail"]


def test_a_reindex_refits_the_customer_model_keeping_the_events(client, retail_slice):
    item = retail_slice[2][7]
    assert client.post("/v1/events", json={"user_id": "kept", "item_id": item}, headers=AUTH).status_code == 200
    assert client.post("/v1/reindex", headers=AUTH).status_code == 200
    got = _ids(client.get("/v1/users/kept/recommendations", params={"limit": 3}))
    assert len(got) == 3 and item not in got
