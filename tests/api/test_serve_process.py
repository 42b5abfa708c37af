"""``python -m recommender serve`` as a real process on a free loopback port, over real HTTP; and a
``kill -9`` in the middle of batch upserts: after a restart every acknowledged product is there,
no batch is half-written, and the vectors match the database."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from api_helpers import API_KEY, AUTH, free_port

REPO = Path(__file__).resolve().parents[2]
STARTUP_LIMIT_S = 600  # a shared 2-core machine importing the stack; generous, not a speed target


def start_server(data_dir: Path, small_dir: Path, cache: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RECOMMENDER_API_KEY": API_KEY, "RECOMMENDER_CACHE_DIR": str(cache),
           "RECOMMENDER_BACKBONE": "efficientnet_lite0", "RECOMMENDER_IMAGE_ROOT": str(small_dir),
           "RECOMMENDER_SEED_CATALOG": str(small_dir / "catalog.csv"), "RECOMMENDER_SYNC_INTERVAL_S": "0.2"}
    env.pop("RECOMMENDER_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "recommender", "serve", "--port", str(port), "--data-dir",
                             str(data_dir), *extra], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=120)
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if client.get("/ready").status_code == 200:
                return client
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"server not ready after {STARTUP_LIMIT_S} s")


@pytest.fixture()
def servers():
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def test_serve_answers_http_and_applies_a_write(servers, small_dir, api_cache, tmp_path):
    proc, url = start_server(tmp_path / "data", small_dir, api_cache)
    servers.append(proc)
    client = wait_ready(proc, url)
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/v1/stats").json()["products"] == 6
    r = client.put("/v1/products/hoop", headers=AUTH, json={"name": "Basketball", "image": "extra/basketball.jpg"})
    assert r.status_code == 201, r.text
    hits = client.get("/v1/products/tennis-ball/similar", params={"limit": 10}).json()["results"]
    assert "hoop" in [h["id"] for h in hits] and all("why" in h and "scores" in h for h in hits)
    assert client.delete("/v1/products/hoop", headers=AUTH).status_code == 200
    assert client.put("/v1/products/x", json={"name": "x"}).status_code == 401
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status names it.
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert b"Traceback" not in proc.stderr.read()


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` (IPv4, from /proc/net/tcp: state 0A)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A")


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads /proc/net/tcp (Linux)")
def test_two_workers_listen_on_a_socket_each_and_stop_on_sigterm(servers, small_dir, api_cache, tmp_path):
    # One SO_REUSEPORT socket per worker (the kernel spreads connections; uvicorn's shared socket let one
    # worker take every connection of a burst): two listening sockets, both workers answering.
    proc, url = start_server(tmp_path / "data", small_dir, api_cache, "--workers", "2")
    servers.append(proc)
    port = int(url.rsplit(":", 1)[1])
    client = wait_ready(proc, url)
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while listening_sockets(port) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert listening_sockets(port) == 2
    for _ in range(20):  # fresh connections: whichever worker takes them, each answers
        with httpx.Client(base_url=url, timeout=120) as fresh:
            while (r := fresh.get("/ready")).status_code == 503:  # the other worker may still be loading
                time.sleep(0.3)
            assert r.status_code == 200 and fresh.get("/v1/stats").json()["products"] == 6
    client.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert listening_sockets(port) == 0
    assert b"Traceback" not in proc.stderr.read()


def test_two_workers_on_a_taken_port_say_so_in_one_line_and_exit(servers, small_dir, api_cache, tmp_path):
    import socket

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # no SO_REUSEPORT: the workers cannot share it
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        proc, _ = start_server(tmp_path / "data", small_dir, api_cache, "--workers", "2", "--port",
                               str(taken.getsockname()[1]))
        servers.append(proc)
        assert proc.wait(timeout=STARTUP_LIMIT_S) == 1
        err = proc.stderr.read()
        assert b"cannot listen on" in err and b"Traceback" not in err
    finally:
        taken.close()


def test_kill_9_during_batch_upserts_loses_nothing_acknowledged(servers, small_dir, api_cache, tmp_path):
    data = tmp_path / "data"
    proc, url = start_server(data, small_dir, api_cache)
    servers.append(proc)
    client = wait_ready(proc, url)
    images = sorted(p.name for p in (small_dir / "extra").iterdir())
    acked: list[int] = []
    size = 20

    def writer() -> None:
        with httpx.Client(base_url=url, timeout=60) as w:
            for b in range(1000):
                batch = [{"id": f"c{b}-{i}", "name": f"Crash {b} {i}", "price": float(b),
                          "image": f"extra/{images[(b + i) % len(images)]}"} for i in range(size)]
                try:
                    r = w.post("/v1/products:batch", headers=AUTH, json={"products": batch})
                except httpx.TransportError:
                    return  # the server died under this request: not acknowledged
                assert r.status_code == 200, r.text
                acked.append(b)

    thread = threading.Thread(target=writer)
    thread.start()
    while len(acked) < 3 and thread.is_alive():
        time.sleep(0.01)
    time.sleep(random.Random(len(acked)).uniform(0.0, 0.3))  # somewhere inside a later batch
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    thread.join(timeout=60)
    assert len(acked) >= 3

    proc, url = start_server(data, small_dir, api_cache)
    servers.append(proc)
    client = wait_ready(proc, url)  # /ready 200 = loaded, and database and vectors agree
    ready = client.get("/ready").json()["drift"]
    assert ready["in_sync"] and ready["db_products"] == ready["indexed_products"]
    listed = []
    offset = 0
    while True:
        page = client.get("/v1/products", params={"limit": 100, "offset": offset}).json()
        listed += page["items"]
        offset += 100
        if offset >= page["total"]:
            break
    by_batch: dict[int, list[dict]] = {}
    for p in listed:
        if p["id"].startswith("c"):
            by_batch.setdefault(int(p["id"][1:].split("-")[0]), []).append(p)
    for b in acked:
        assert len(by_batch.get(b, [])) == size, f"acknowledged batch {b} lost products"
    for b, products in by_batch.items():
        assert len(products) == size, f"batch {b} half-written: {len(products)} of {size}"
        assert all(p["name"].startswith(f"Crash {b} ") and p["image_sha256"] for p in products)
    stats = client.get("/v1/stats").json()
    assert stats["products"] == 6 + size * len(by_batch) == stats["vectors"]
    one = by_batch[acked[-1]][0]
    assert client.get(one["image_url"]).status_code == 200
    hits = client.get(f"/v1/products/{one['id']}/similar", params={"limit": 5}).json()["results"]
    assert hits and all(h["id"] in {p["id"] for p in listed} for h in hits)
