"""Writes: PUT (upload or path), PATCH, DELETE, batch; live in the next query; If-Match; hostile images."""

from __future__ import annotations

import json
import os

import pytest
from api_helpers import AUTH, DEMO_DIR


def ids(body: dict) -> list[str]:
    return [h["id"] for h in body["results"]]


def similar(client, pid: str, **params) -> dict:
    r = client.get(f"/v1/products/{pid}/similar", params={"limit": 10, **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_put_upload_creates_a_product_recommendable_in_the_next_query(make_client):
    client = make_client()
    assert "ball-2" not in ids(similar(client, "tennis-ball"))
    meta = {"name": "Practice ball", "category": "Sports & Outdoor", "sub_category": "Equipment", "price": 3.5}
    photo = (DEMO_DIR / "images" / "tennis-ball.jpg").read_bytes()
    r = client.put("/v1/products/ball-2", headers=AUTH, data={"metadata": json.dumps(meta)},
                   files={"image": ("ball.jpg", photo, "image/jpeg")})
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["id"] == "ball-2" and p["image"] == "ball.jpg" and p["image_url"] == "/v1/products/ball-2/image"
    hit = similar(client, "tennis-ball")["results"][0]
    assert hit["id"] == "ball-2" and hit["scores"]["image"] > 0.99  # the same photo: the closest product
    assert client.get("/v1/products/ball-2/image").content == photo
    assert client.get("/ready").json()["drift"]["in_sync"] is True
    # Replacing it: 200, not 201.
    r = client.put("/v1/products/ball-2", headers=AUTH, json={**meta, "name": "Practice ball II"})
    assert r.status_code == 200 and r.json()["name"] == "Practice ball II" and r.json()["image"] == "ball.jpg"


def test_put_by_path_under_the_image_root(make_client):
    client = make_client()
    r = client.put("/v1/products/hoop-ball", headers=AUTH,
                   json={"name": "Basketball", "category": "Sports & Outdoor", "image": "extra/basketball.jpg"})
    assert r.status_code == 201, r.text
    assert client.get("/v1/stats").json()["products"] == 7
    assert "hoop-ball" in ids(similar(client, "tennis-ball"))


def test_put_new_product_without_image_or_bad_bodies_is_422(make_client):
    client = make_client()
    cases = [
        {"name": "No image"},  # a new product needs an image
        {"name": ""},
        {"name": "x", "image": "extra/football.jpg", "unknown": 1},
        {"name": "x", "image": "extra/football.jpg", "price": -1},
        {"name": "x", "image": "extra/football.jpg", "attributes": {"a": [1, 2]}},
    ]
    for body in cases:
        r = client.put("/v1/products/new-one", headers=AUTH, json=body)
        assert r.status_code == 422, body
        assert "detail" in r.json()
    r = client.put("/v1/products/new-one", headers={**AUTH, "content-type": "application/json"}, content=b"{nope")
    assert r.status_code == 422
    r = client.put("/v1/products/new-one", headers={**AUTH, "content-type": "application/json"},
                   content=b'{"name": "x", "price": Infinity, "image": "extra/football.jpg"}')
    assert r.status_code == 422
    assert client.get("/v1/products/new-one").status_code == 404


def test_put_wrong_content_type_is_415(make_client):
    client = make_client()
    r = client.put("/v1/products/x", headers={**AUTH, "content-type": "text/plain"}, content=b"name=x")
    assert r.status_code == 415


@pytest.mark.parametrize("path", ["../catalog.csv", "/etc/passwd", "extra/../../etc/passwd", "missing.jpg",
                                  "extra", "images/../../../../etc/hostname", "C:\\windows\\win.ini", ""])
def test_image_paths_are_confined_to_the_image_root(make_client, path):
    client = make_client()
    r = client.put("/v1/products/evil", headers=AUTH, json={"name": "x", "image": path})
    assert r.status_code == 422, (path, r.text)
    assert client.get("/v1/products/evil").status_code == 404


def test_symlink_out_of_the_image_root_is_not_followed(make_client, small_dir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.jpg"
    outside.write_bytes((DEMO_DIR / "images" / "laptop.jpg").read_bytes())
    os.symlink(outside, small_dir / "extra" / "link.jpg")
    client = make_client()
    r = client.put("/v1/products/evil", headers=AUTH, json={"name": "x", "image": "extra/link.jpg"})
    assert r.status_code == 422 and "not found under the image root" in r.json()["detail"]


def test_a_path_that_is_not_an_image_is_415(make_client, small_dir):
    (small_dir / "extra" / "notes.jpg").write_text("just text")
    client = make_client()
    r = client.put("/v1/products/x", headers=AUTH, json={"name": "x", "image": "extra/notes.jpg"})
    assert r.status_code == 415


def test_uploads_are_sniffed_and_size_limited(make_client):
    client = make_client(max_upload_mb=0.01)
    meta = {"metadata": json.dumps({"name": "x"})}
    r = client.put("/v1/products/x", headers=AUTH, data=meta, files={"image": ("x.png", b"GIF89a" + b"0" * 50)})
    assert r.status_code == 415
    big = (DEMO_DIR / "images" / "laptop.jpg").read_bytes()
    assert len(big) > 0.01 * 1024 * 1024
    r = client.put("/v1/products/x", headers=AUTH, data=meta, files={"image": ("x.jpg", big)})
    assert r.status_code == 413
    r = client.put("/v1/products/x", headers=AUTH, data=meta, files={"image": ("x.jpg", big[:200])})
    assert r.status_code == 413 or r.status_code == 422
    r = client.put("/v1/products/x", headers=AUTH, data={"metadata": "{not json"},
                   files={"image": ("x.jpg", big[:200])})
    assert r.status_code == 422
    assert client.get("/v1/products/x").status_code == 404


def test_patch_changes_filters_at_once_without_touching_the_image(make_client):
    client = make_client()
    before = {h["id"]: h for h in similar(client, "laptop")["results"]}
    r = client.patch("/v1/products/t-shirt", headers=AUTH, json={"brand": "Acme", "price": 1.5})
    assert r.status_code == 200 and (r.json()["brand"], r.json()["price"]) == ("Acme", 1.5)
    after = similar(client, "laptop", brand="Acme")
    assert ids(after) == ["t-shirt"]
    assert after["results"][0]["scores"]["image"] == pytest.approx(before["t-shirt"]["scores"]["image"], abs=1e-5)
    listed = client.get("/v1/products", params={"brand": "acme"}).json()
    assert [p["id"] for p in listed["items"]] == ["t-shirt"]


def test_patch_errors(make_client):
    client = make_client()
    assert client.patch("/v1/products/nope", headers=AUTH, json={"brand": "x"}).status_code == 404
    for body in ({}, {"name": None}, {"image": "extra/football.jpg"}, {"price": "cheap"}, {"colour": "x" * 201}):
        assert client.patch("/v1/products/laptop", headers=AUTH, json=body).status_code == 422, body


def test_delete_removes_from_every_result_at_once(make_client):
    client = make_client()
    assert "tennis-ball" in ids(similar(client, "laptop"))
    r = client.delete("/v1/products/tennis-ball", headers=AUTH)
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert "tennis-ball" not in ids(similar(client, "laptop"))
    assert client.get("/v1/products/tennis-ball").status_code == 404
    assert client.get("/v1/products/tennis-ball/similar").status_code == 404
    assert client.get("/v1/products/tennis-ball/image").status_code == 404
    assert client.delete("/v1/products/tennis-ball", headers=AUTH).status_code == 404
    assert client.get("/ready").json()["drift"]["in_sync"] is True


def test_if_match_guards_against_lost_updates(make_client):
    client = make_client()
    tag = client.get("/v1/products/laptop").headers["etag"]
    r = client.patch("/v1/products/laptop", headers={**AUTH, "If-Match": tag}, json={"brand": "A"})
    assert r.status_code == 200 and r.headers["etag"] != tag
    r = client.patch("/v1/products/laptop", headers={**AUTH, "If-Match": tag}, json={"brand": "B"})
    assert r.status_code == 412
    assert client.delete("/v1/products/laptop", headers={**AUTH, "If-Match": tag}).status_code == 412
    assert client.get("/v1/products/laptop").json()["brand"] == "A"


def test_batch_upserts_all_in_one_revision(make_client):
    client = make_client()
    products = [{"id": f"b{i}", "name": f"Ball {i}", "category": "Sports & Outdoor",
                 "image": f"extra/{img}"} for i, img in enumerate(["football.jpg", "basketball.jpg"])]
    products.append({"id": "laptop", "name": "Laptop renamed"})  # existing: keeps its image
    r = client.post("/v1/products:batch", headers=AUTH, json={"products": products})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["created"], body["updated"], body["ids"]) == (2, 1, ["b0", "b1", "laptop"])
    assert client.get("/v1/products/laptop").json()["image_sha256"]
    assert {"b0", "b1"} <= set(ids(similar(client, "tennis-ball")))
    assert client.get("/v1/stats").json()["revision"] == body["revision"]


def test_batch_errors_write_nothing(make_client):
    client = make_client(max_batch=3)
    good = {"id": "g", "name": "Good", "image": "extra/football.jpg"}
    dup = client.post("/v1/products:batch", headers=AUTH, json={"products": [good, good]})
    assert dup.status_code == 409
    many = client.post("/v1/products:batch", headers=AUTH,
                       json={"products": [{**good, "id": f"g{i}"} for i in range(4)]})
    assert many.status_code == 413
    bad = client.post("/v1/products:batch", headers=AUTH,
                      json={"products": [good, {"id": "h", "name": "H", "image": "../catalog.csv"}]})
    assert bad.status_code == 422 and "'h'" in bad.json()["detail"]
    assert client.post("/v1/products:batch", headers=AUTH, json={"products": []}).status_code == 422
    bad_id = client.post("/v1/products:batch", headers=AUTH, json={"products": [{**good, "id": "a/b"}]})
    assert bad_id.status_code == 422
    assert client.get("/v1/stats").json()["products"] == 6


def test_search_on_an_emptied_catalog_is_409(make_client):
    client = make_client()
    for p in client.get("/v1/products").json()["items"]:
        assert client.delete(f"/v1/products/{p['id']}", headers=AUTH).status_code == 200
    r = client.post("/v1/search", data={"text": "ball"})
    assert r.status_code == 409 and "empty" in r.json()["detail"]
    assert client.get("/ready").status_code == 200
