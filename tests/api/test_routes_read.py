"""Read endpoints on the bundled demo: health, readiness, stats, products, images, similar, search."""

from __future__ import annotations

import io

from api_helpers import DEMO_DIR
from PIL import Image

from recommender.api.schemas import RecommendationsOut


def strictly_declared(body: dict) -> RecommendationsOut:
    """The routes build their JSON by hand (no pydantic per request): it must match the declared model
    exactly, in strict mode (no coercion) and with no field the model lacks."""
    model = RecommendationsOut.model_validate(body, strict=True)
    assert model.model_dump(mode="json") == body
    return model


def test_health_and_ready_report_a_loaded_catalog_in_sync(demo_client):
    assert demo_client.get("/health").json() == {"status": "ok"}
    r = demo_client.get("/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["drift"]["in_sync"] is True
    assert body["drift"]["db_products"] == body["drift"]["indexed_products"] == 89


def test_stats_counts_products_vectors_and_names_the_backbone(demo_client):
    s = demo_client.get("/v1/stats").json()
    assert s["products"] == 89 and s["vectors"] == 89 and s["products_without_image"] == 0
    assert s["backbone"] == "efficientnet_lite0" and s["index_kind"] == "exact"
    assert s["database"] == "sqlite" and s["schema_revision"] == "0002"
    assert s["revision"] == s["applied_revision"] >= 1


def test_products_are_paged_and_filtered_with_ids_as_strings(demo_client):
    page = demo_client.get("/v1/products", params={"limit": 5, "offset": 0}).json()
    assert page["total"] == 89 and len(page["items"]) == 5 and page["limit"] == 5
    second = demo_client.get("/v1/products", params={"limit": 5, "offset": 5}).json()
    assert not {p["id"] for p in page["items"]} & {p["id"] for p in second["items"]}
    assert all(isinstance(p["id"], str) for p in page["items"])
    shoes = demo_client.get("/v1/products", params={"sub_category": "Footwear", "limit": 100}).json()
    assert shoes["total"] >= 3 and all(p["sub_category"] == "Footwear" for p in shoes["items"])
    cheap = demo_client.get("/v1/products", params={"price_max": 5, "limit": 100}).json()
    assert all(p["price"] is not None and p["price"] <= 5 for p in cheap["items"])


def test_limit_and_offset_are_bounded(demo_client):
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}):
        r = demo_client.get("/v1/products", params=params)
        assert r.status_code == 422, params
        assert "detail" in r.json()
    assert demo_client.get("/v1/products/laptop/similar", params={"limit": 1000}).status_code == 422


def test_one_product_with_etag_and_404_for_an_unknown_id(demo_client):
    r = demo_client.get("/v1/products/laptop")
    assert r.status_code == 200 and r.headers["etag"].strip('"').isdigit()
    p = r.json()
    assert (p["id"], p["name"], p["brand"], p["price"]) == ("laptop", "Laptop", "Apple", 1299.0)
    assert p["image"] == "images/laptop.jpg" and p["image_url"] == "/v1/products/laptop/image"
    r = demo_client.get("/v1/products/no-such-thing")
    assert r.status_code == 404 and r.json() == {"detail": "no product with id 'no-such-thing'"}


def test_image_is_the_stored_file_with_its_type(demo_client):
    r = demo_client.get("/v1/products/laptop/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.content == (DEMO_DIR / "images" / "laptop.jpg").read_bytes()
    assert demo_client.get("/v1/products/nope/image").status_code == 404


def test_similar_explains_every_hit(demo_client):
    r = demo_client.get("/v1/products/laptop/similar", params={"limit": 5})
    assert r.status_code == 200
    body = r.json()
    strictly_declared(body)
    assert len(body["results"]) == 5 and "laptop" not in [h["id"] for h in body["results"]]
    top = body["results"][0]
    assert set(top) >= {"rank", "id", "score", "scores", "contributions", "shared", "why", "image_url"}
    assert set(top["scores"]) == {"image", "metadata"}
    assert abs(top["contributions"]["image"] + top["contributions"]["metadata"] - top["score"]) < 1e-4
    assert [h["rank"] for h in body["results"]] == [1, 2, 3, 4, 5]
    assert any(h["shared"] for h in body["results"]) and all(h["why"] for h in body["results"])
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_similar_applies_filters_and_knobs(demo_client):
    r = demo_client.get("/v1/products/laptop/similar",
                        params={"limit": 10, "category": "Sports & Outdoor", "price_max": 60, "weight": 1.0})
    body = r.json()
    assert r.status_code == 200 and body["weight"] == 1.0 and body["results"]
    strictly_declared(body)
    for hit in body["results"]:
        p = demo_client.get(f"/v1/products/{hit['id']}").json()
        assert p["category"] == "Sports & Outdoor" and p["price"] <= 60
    r = demo_client.get("/v1/products/laptop/similar", params={"brand": "NoSuchBrand"})
    assert r.status_code == 200 and r.json()["results"] == [] and "NoSuchBrand" in r.json()["empty_reason"]
    strictly_declared(r.json())


def test_similar_errors(demo_client):
    assert demo_client.get("/v1/products/nope/similar").status_code == 404
    for params in ({"weight": 1.5}, {"diversity": -0.1}, {"price_min": 10, "price_max": 5}, {"price_max": "inf"}):
        r = demo_client.get("/v1/products/laptop/similar", params=params)
        assert r.status_code == 422, params


def test_search_by_text_explains_what_it_recognised(demo_client):
    r = demo_client.post("/v1/search", data={"text": "black running shoe", "limit": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["results"] and body["query"].startswith("text")
    strictly_declared(body)
    assert any("shoe" in h["name"].lower() for h in body["results"][:3])
    assert body["weak"] is False


def test_search_by_text_says_when_nothing_or_nothing_good_matches(demo_client):
    """Issue 9.3 over HTTP: no filler for a nonsense query, and the 'no good match' flag."""
    nothing = demo_client.post("/v1/search", data={"text": "zzqx blorf"}).json()
    assert nothing["results"] == [] and nothing["empty_reason"] == "no product matches 'zzqx blorf'"
    # (Was "cheap nike shoes under 50": with the text embedding its best match scores .36, not poor.)
    weak = demo_client.post("/v1/search", data={"text": "nike garden hose under 50"}).json()
    assert weak["results"] and weak["weak"] is True and weak["results"][0]["score"] < 0.25


def test_search_by_photo_finds_that_product_first(demo_client):
    data = (DEMO_DIR / "images" / "tennis-ball.jpg").read_bytes()
    r = demo_client.post("/v1/search", files={"image": ("my photo.jpg", data, "image/jpeg")}, data={"limit": 3})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == "tennis-ball"
    strictly_declared(r.json())
    assert r.json()["results"][0]["scores"]["image"] > 0.9


def test_search_upload_checks(demo_client):
    pdf = b"%PDF-1.4\n" + b"x" * 100
    r = demo_client.post("/v1/search", files={"image": ("a.jpg", pdf, "image/jpeg")})
    assert r.status_code == 415 and "not a JPEG" in r.json()["detail"]
    truncated = (DEMO_DIR / "images" / "laptop.jpg").read_bytes()[:300]
    r = demo_client.post("/v1/search", files={"image": ("a.jpg", truncated, "image/jpeg")})
    assert r.status_code == 422 and "a.jpg" in r.json()["detail"]
    r = demo_client.post("/v1/search", files={"image": ("a.jpg", b"", "image/jpeg")})
    assert r.status_code == 422
    assert demo_client.post("/v1/search", data={"text": "   "}).status_code == 422
    assert demo_client.post("/v1/search", data={"text": "shoe", "limit": 0}).status_code == 422


def test_search_refuses_too_many_pixels(make_client):
    client = make_client(max_pixels=10_000)
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), "red").save(buf, "PNG")
    r = client.post("/v1/search", files={"image": ("big.png", buf.getvalue(), "image/png")})
    assert r.status_code == 422 and "pixels" in r.json()["detail"]


def test_openapi_lists_every_endpoint(demo_client):
    paths = demo_client.get("/openapi.json").json()["paths"]
    for p in ("/health", "/ready", "/v1/stats", "/v1/products", "/v1/products/{product_id}",
              "/v1/products/{product_id}/image", "/v1/products/{product_id}/similar", "/v1/search",
              "/v1/products:batch", "/v1/reindex"):
        assert p in paths, p
    assert demo_client.get("/docs").status_code == 200
