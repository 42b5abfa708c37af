"""API keys, keyed reads, the request body limit, the per-request timeout and CORS."""

from __future__ import annotations

from api_helpers import API_KEY, AUTH

WRITE = {"name": "Renamed"}


def test_writes_need_the_key_by_bearer_or_x_api_key(make_client):
    client = make_client()
    r = client.patch("/v1/products/laptop", json=WRITE)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "API key" in r.json()["detail"]
    assert client.patch("/v1/products/laptop", json=WRITE, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.patch("/v1/products/laptop", json=WRITE, headers={"X-API-Key": API_KEY[:-1]}).status_code == 401
    assert client.patch("/v1/products/laptop", json=WRITE, headers={"Authorization": API_KEY}).status_code == 401
    assert client.delete("/v1/products/laptop").status_code == 401
    assert client.post("/v1/products:batch", json={"products": []}).status_code == 401
    assert client.put("/v1/products/laptop", json=WRITE).status_code == 401
    assert client.post("/v1/reindex").status_code == 401
    assert client.get("/v1/products/laptop").json()["name"] == "Laptop"  # nothing was written
    assert client.patch("/v1/products/laptop", json=WRITE, headers={"X-API-Key": API_KEY}).status_code == 200
    assert client.patch("/v1/products/laptop", json=WRITE, headers=AUTH).status_code == 200


def test_several_keys_can_be_configured_for_rotation(make_client):
    client = make_client(api_key="old-key, new-key")
    for key in ("old-key", "new-key"):
        assert client.patch("/v1/products/laptop", json=WRITE, headers={"X-API-Key": key}).status_code == 200
    assert client.patch("/v1/products/laptop", json=WRITE, headers={"X-API-Key": "old-key, new-key"}).status_code == 401


def test_no_key_configured_refuses_every_write(make_client):
    client = make_client(api_key=None)
    r = client.patch("/v1/products/laptop", json=WRITE, headers=AUTH)
    assert r.status_code == 403 and "RECOMMENDER_API_KEY" in r.json()["detail"]
    assert client.delete("/v1/products/laptop", headers=AUTH).status_code == 403
    assert client.get("/v1/products/laptop").status_code == 200  # reads stay public


def test_keyed_reads(make_client):
    client = make_client(public_reads=False)
    for path in ("/v1/products", "/v1/products/laptop", "/v1/products/laptop/image", "/v1/products/laptop/similar",
                 "/v1/stats"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=AUTH).status_code == 200, path
    assert client.post("/v1/search", data={"text": "shoe"}).status_code == 401
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200  # probes stay open


def test_body_over_the_limit_is_413_before_it_is_read(make_client):
    client = make_client(max_body_mb=0.001)
    big = {"products": [{"id": f"p{i}", "name": "x" * 100} for i in range(20)]}
    r = client.post("/v1/products:batch", json=big, headers=AUTH)
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]
    r = client.post("/v1/search", files={"image": ("a.jpg", b"\xff\xd8\xff" + b"0" * 5000)})
    assert r.status_code == 413


def test_streamed_body_over_the_limit_is_413(make_client):
    client = make_client(max_body_mb=0.001)

    def chunks():
        for _ in range(10):
            yield b"x" * 500

    r = client.post("/v1/products:batch", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413


def test_a_request_over_the_timeout_is_504(make_client):
    client = make_client(request_timeout_s=1e-6)
    r = client.get("/v1/products/laptop/similar")
    assert r.status_code == 504 and "longer than" in r.json()["detail"]


def test_cors_only_for_configured_origins(make_client):
    client = make_client(cors_origins="https://shop.example")
    pre = {"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
    r = client.options("/v1/products", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://shop.example"
    r = client.options("/v1/products", headers={**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    plain = make_client()
    r = plain.get("/v1/products", headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in r.headers


def test_similar_waits_for_a_query_slot_in_the_thread_pool_when_all_are_taken(make_client):
    """``similar`` computes on the event loop when a slot is free; with every slot taken (here by the test,
    as by long photo searches) it waits in a worker thread instead of blocking the loop."""
    import threading
    import time

    client = make_client(max_concurrent_queries=1)
    service = client.app.state.service
    inline = client.get("/v1/products/laptop/similar?limit=3")
    assert inline.status_code == 200
    assert service.query_slots.acquire(blocking=False)  # the slot is free again after an inline query
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(client.get("/v1/products/laptop/similar?limit=3")))
    waiting.start()
    time.sleep(0.3)
    assert not answers, "answered while every query slot was taken"
    assert client.get("/health").status_code == 200  # the event loop is not blocked meanwhile
    service.query_slots.release()
    waiting.join(timeout=30)
    assert answers and answers[0].status_code == 200 and answers[0].json() == inline.json()
