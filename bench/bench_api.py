"""Load benchmark of the REST API on loopback: "more like this" at 1/8/32 clients, and a mix with 5% writes.

    python bench/bench_api.py                      # the demo catalog and a 100k generated catalog
    python bench/bench_api.py --n 0                # the demo only
    python bench/bench_api.py --n 100000 --duration 20 --max-requests 20000

Each catalog is served by ``python -m recommender serve`` in its own process (one worker) on a free
127.0.0.1 port; the load comes from this process (asyncio + httpx, one connection per client), so
client and server share the machine's cores, as they would on one box. Every run is bounded by
``--duration`` seconds and ``--max-requests`` requests. Printed per run: requests, req/s, p50/p99
latency with bootstrap 95% intervals, errors (non-2xx or transport), and for the mixed run the
write latency and whether each write was visible to the very next read.

``--generator wrk`` (Debian's ``wrk``, a C load generator) drives the "similar" runs instead: the Python
generator costs ~1-3 ms of CPU per request on the same two cores (printed as "generator CPU"), which
is CPU the server cannot use. wrk dumps its latency histogram (µs) at the end; the intervals are
bootstrapped from it as from Python's own samples. The mixed run stays in Python (it checks that each
write is visible to the next read). ``--workers N`` serves with N worker processes (a listening socket each).

The generated catalog (``--n`` products) has real metadata-shaped rows (20 categories, 300 brands,
15 colours, prices) and a distinct tiny PNG per product; its image vectors are *generated* (cluster
centroid + noise, in the real backbone's dimension) and written straight into the real embedding
cache (the store's ``append``, keyed by each image's SHA-256), so the server fits on it exactly as
on real images, minus the CNN and the decoding. It is built once into ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY = "bench-key"
WORDS = ("classic", "slim", "pro", "lite", "max", "eco", "urban", "vintage", "sport", "soft", "smart", "mini")
NOUNS = ("shoe", "jacket", "lamp", "chair", "mug", "ball", "bag", "watch", "shirt", "plant", "table", "phone",
         "tent", "bottle", "speaker", "camera", "hat", "sofa", "bike", "juice")
COLOURS = ("black", "white", "red", "blue", "green", "yellow", "pink", "grey", "brown", "orange", "purple",
           "navy", "beige", "silver", "gold")


# -- the generated catalog -----------------------------------------------------------------------
def generate_catalog(work: Path, n: int) -> Path:
    """``work/catalog.csv`` + ``work/images/*.png`` (n products), built once."""
    import pandas as pd
    from PIL import Image

    csv = work / "catalog.csv"
    if csv.is_file() and csv.read_text(encoding="utf-8").count("\n") == n + 1:
        return csv
    rng = random.Random(0)
    (work / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        cluster = i % 20
        img = Image.new("RGB", (8, 8), (cluster * 12, 128, 128))
        img.putpixel((i % 8, (i // 8) % 8), (i % 251, (i // 251) % 251, (i // 63001) % 251))  # unique bytes
        img.putpixel(((i * 7) % 8, (i * 3) % 8), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        path = f"images/p{i:06d}.png"
        buf = io.BytesIO()
        img.save(buf, "PNG")
        (work / path).write_bytes(buf.getvalue())
        noun = NOUNS[cluster]
        brand = f"Brand{rng.randrange(300):03d}"
        colour = COLOURS[rng.randrange(len(COLOURS))]
        rows.append({"id": f"p{i:06d}", "name": f"{rng.choice(WORDS).title()} {colour} {noun}",
                     "description": f"A {rng.choice(WORDS)} {noun} by {brand} in {colour}.",
                     "category": f"Category{cluster:02d}", "sub_category": noun.title(), "brand": brand,
                     "colour": colour, "price": f"{rng.uniform(2, 500):.2f}", "image": path})
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def prefill_cache(csv: Path, cache: Path, chunk: int = 25_000) -> None:
    """Generated image vectors and colour histograms written straight into the embedding cache.

    Keyed, as a real build keys them, by the SHA-256 of the media copies the import made (the server
    fits on exactly those files), but without decoding an image: the vector is the product's cluster
    centroid (its category) plus noise, written through the store's own ``append`` in chunks of
    ``chunk`` rows (a handful of manifest writes, not one per checkpoint of a real build).
    """
    from recommender.catalog.live import catalog_frame
    from recommender.catalog.loader import catalog_from_frame
    from recommender.catalog.sql import CatalogRepository
    from recommender.features.embedders import ColourEmbedder
    from recommender.recommender import HybridRecommender
    from recommender.store.artifacts import ArtifactStore, StoredEmbeddings
    from recommender.store.build import image_hashes

    t0 = time.perf_counter()
    repo = CatalogRepository.from_url(f"sqlite:///{csv.parent / 'data' / 'catalog.db'}")
    catalog = catalog_from_frame(catalog_frame(repo.all()), csv.parent / "data" / "media")
    hashes = image_hashes(catalog)
    items = catalog.items
    clusters = np.array([int(str(c)[-2:]) for c in items["category"]])
    image_ident = HybridRecommender(backbone="efficientnet_lite0")._image_embedder("efficientnet_lite0").identity()
    colour_ident = ColourEmbedder().identity()
    centroids = np.random.default_rng(1).standard_normal((20, image_ident.feature_dim)).astype(np.float32)
    store = ArtifactStore(cache)
    rows = [i for i, h in enumerate(hashes) if h is not None]
    for ident, noise in ((image_ident, 0.6), (colour_ident, None)):
        stored = StoredEmbeddings(ident.folder, ident.name, ident.feature_dim, ident.preprocess, ident.weights)
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            rng = np.random.default_rng([2, start])
            if noise is None:  # a colour histogram: non-negative, unit length
                v = np.abs(rng.standard_normal((len(part), ident.feature_dim), dtype=np.float32))
            else:
                v = centroids[clusters[part] % len(centroids)] + noise * rng.standard_normal(
                    (len(part), ident.feature_dim), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            store.append(stored, [{"sha256": hashes[i], "id": str(items["id"].iat[i]),
                                   "image": str(items["image"].iat[i])} for i in part], v)
    print(f"  generated vectors for {len(rows)} images written to {cache} ({time.perf_counter() - t0:.0f} s)",
          flush=True)


# -- the server ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, cache: Path, seed: str, image_root: Path, params: str,
                 tree: Path = ROOT, workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RECOMMENDER_API_KEY": KEY, "RECOMMENDER_CACHE_DIR": str(cache),
           "RECOMMENDER_BACKBONE": "efficientnet_lite0", "RECOMMENDER_SEED_CATALOG": seed,
           "RECOMMENDER_IMAGE_ROOT": str(image_root), "RECOMMENDER_MODEL_PARAMS": params,
           "RECOMMENDER_MAX_BATCH": "5000"}
    env.pop("RECOMMENDER_DATABASE_URL", None)
    env["PYTHONPATH"] = str(tree)  # the server runs that tree's recommender (side-by-side comparisons)
    proc = subprocess.Popen([sys.executable, "-m", "recommender", "serve", "--port", str(port), "--data-dir",
                             str(data), *(["--workers", str(workers)] if workers > 1 else [])], cwd=tree, env=env)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, limit: float = 1800, workers: int = 1) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            # Each request a fresh connection: with several workers (a socket each) every worker must
            # answer 200 in a row, not only the first one that finished loading.
            if all(httpx.get(f"{url}/ready", timeout=5).status_code == 200 for _ in range(8 * workers)):
                print(f"  ready after {time.monotonic() - t0:.0f} s", flush=True)
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise SystemExit("server not ready in time")


# -- the load ------------------------------------------------------------------------------------
def interval(x: np.ndarray, q: float, rng: np.random.Generator, n_boot: int = 200) -> tuple[float, float, float]:
    """The ``q``-th percentile of ``x`` (ms) with a bootstrap 95% interval."""
    point = float(np.percentile(x, q))
    boots = np.percentile(rng.choice(x, size=(n_boot, len(x)), replace=True), q, axis=1)
    return point, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


async def run_load(url: str, ids: list[str], clients: int, duration: float, max_requests: int,
                   write_share: float = 0.0, images: list[str] | None = None) -> dict:
    import httpx

    lat: list[float] = []
    write_lat: list[float] = []
    errors = 0
    visible = [0, 0]
    issued = 0
    deadline = time.perf_counter() + duration
    rng = random.Random(clients)
    auth = {"Authorization": f"Bearer {KEY}"}

    async def worker(w: int) -> None:
        nonlocal errors, issued
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while time.perf_counter() < deadline and issued < max_requests:
                issued += 1
                t = time.perf_counter()
                try:
                    if write_share and rng.random() < write_share:
                        pid = f"bench-{w}-{issued}"
                        body = {"name": f"Bench {rng.choice(NOUNS)}", "category": "Bench",
                                "price": round(rng.uniform(1, 99), 2), "image": rng.choice(images)}
                        r = await client.put(f"/v1/products/{pid}", json=body, headers=auth)
                        write_lat.append((time.perf_counter() - t) * 1000)
                        if r.status_code in (200, 201):
                            seen = await client.get(f"/v1/products/{pid}/similar", params={"limit": 1})
                            visible[0] += seen.status_code == 200
                            visible[1] += 1
                        else:
                            errors += 1
                        continue
                    r = await client.get(f"/v1/products/{rng.choice(ids)}/similar", params={"limit": 10})
                    if r.status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                lat.append((time.perf_counter() - t) * 1000)

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - t0
    return {"lat": np.array(lat), "write_lat": np.array(write_lat), "elapsed": elapsed, "errors": errors,
            "visible": visible, "generator_cpu": time.process_time() - cpu0}


WRK_SCRIPT = """-- bench_api.py: GET similar for random ids; dump the latency histogram at the end
local ids = {%s}
request = function()
  return wrk.format("GET", "/v1/products/" .. ids[math.random(#ids)] .. "/similar?limit=10")
end
done = function(summary, latency, requests)
  io.write(string.format("errors %%d %%d %%d %%d %%d\\n", summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout))
  for i = 1, #latency do
    local v, c = latency(i)
    io.write(string.format("lat %%d %%d\\n", v, c))
  end
end
"""


def run_wrk(url: str, ids: list[str], clients: int, duration: float, work: Path) -> dict:
    """The same "similar" load from Debian's wrk (one thread, one connection per client)."""
    script = work / "bench_api_similar.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{i}"' for i in ids), encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    values, counts, errors = [], [], 0
    for line in out.splitlines():
        if line.startswith("lat "):
            _, v, c = line.split()
            values.append(float(v) / 1000)
            counts.append(int(c))
        elif line.startswith("errors "):
            errors = sum(map(int, line.split()[1:]))
    lat = np.repeat(np.array(values), np.array(counts, dtype=np.int64))
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)  # "2221 requests in 15.00s, 8.6MB read"
    elapsed = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    return {"lat": lat, "n": int(done.group(1)), "write_lat": np.array([]), "elapsed": elapsed, "errors": errors,
            "visible": [0, 0],
            "generator_cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def report(label: str, res: dict, rng: np.random.Generator) -> None:
    lat = res["lat"]
    n = res.get("n", len(lat) + len(res["write_lat"]))
    p50 = interval(lat, 50, rng)
    p99 = interval(lat, 99, rng)
    line = (f"{label:<34} n={n:6d}  {n / res['elapsed']:7.1f} req/s  p50 {p50[0]:6.1f} ms [{p50[1]:.1f}, {p50[2]:.1f}]"
            f"  p99 {p99[0]:6.1f} ms [{p99[1]:.1f}, {p99[2]:.1f}]  errors {res['errors']}"
            f"  generator CPU {1000 * res['generator_cpu'] / max(n, 1):.2f} ms/req  load {os.getloadavg()[0]:.1f}")
    if len(res["write_lat"]):
        w = res["write_lat"]
        line += (f"\n{'':<34} writes n={len(w)} p50 {np.percentile(w, 50):.1f} ms p99 {np.percentile(w, 99):.1f} ms; "
                 f"visible to the next read: {res['visible'][0]}/{res['visible'][1]}")
    print(line, flush=True)


def bench_catalog(name: str, url: str, ids: list[str], images: list[str], args) -> None:
    rng = np.random.default_rng(0)
    asyncio.run(run_load(url, ids, 4, 3, 200))  # warm-up: connections, lazy imports, caches
    for clients in args.clients:
        if args.generator == "wrk":
            res = run_wrk(url, ids, clients, args.duration, args.work)
        else:
            res = asyncio.run(run_load(url, ids, clients, args.duration, args.max_requests))
        report(f"{name}: similar, {clients} clients{' (wrk)' if args.generator == 'wrk' else ''}", res, rng)
    report(f"{name}: mixed 5% writes, 8 clients", asyncio.run(
        run_load(url, ids, 8, args.duration, args.max_requests, write_share=0.05, images=images)), rng)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench-api", help="where catalogs and data live")
    ap.add_argument("--n", type=int, default=100_000, help="generated catalog size (0 = demo only)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    ap.add_argument("--max-requests", type=int, default=20_000, help="requests per run at most")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--no-demo", action="store_true", help="only the generated catalog")
    ap.add_argument("--tree", type=Path, default=ROOT,
                    help="project checkout whose recommender the server runs (e.g. /work/main, to compare)")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the server")
    ap.add_argument("--generator", choices=("python", "wrk"), default="python",
                    help="load generator of the 'similar' runs (wrk: Debian's C generator; the mixed run stays Python)")
    ap.add_argument("--model-params", default='{"dba_k": 0}',
                    help="HybridRecommender parameters for the generated catalog (JSON)")
    args = ap.parse_args()
    if args.generator == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("--generator wrk: no 'wrk' on PATH (Debian: apt-get install wrk)")
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    args.work.mkdir(parents=True, exist_ok=True)
    from recommender.catalog.loader import DEMO_CATALOG, load_catalog

    print(f"bench_api: server tree {args.tree}, {os.cpu_count()} cores, duration {args.duration:g} s / at most "
          f"{args.max_requests} requests per run, loopback", flush=True)
    if not args.no_demo:
        demo = args.work / "demo"
        proc, url = start_server(demo / "data", demo / "cache", str(DEMO_CATALOG), DEMO_CATALOG.parent, "{}",
                                 args.tree, args.workers)
        try:
            wait_ready(proc, url, workers=args.workers)
            ids = list(map(str, load_catalog(DEMO_CATALOG).ids))
            bench_catalog(f"demo ({len(ids)})", url, ids, ["images/laptop.jpg", "images/football.jpg"], args)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    if args.n <= 0:
        return
    work = args.work / f"generated-{args.n}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    csv = generate_catalog(work, args.n)
    if not (work / "data" / "catalog.db").is_file():
        subprocess.run([sys.executable, "-m", "recommender", "import", "--catalog", str(csv), "--data-dir",
                        str(work / "data")], cwd=ROOT, check=True)
    if not (work / "cache").is_dir():
        prefill_cache(csv, work / "cache")
    print(f"  generated catalog ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    proc, url = start_server(work / "data", work / "cache", "", work, args.model_params, args.tree, args.workers)
    try:
        wait_ready(proc, url, workers=args.workers)
        ids = [f"p{i:06d}" for i in range(args.n)]
        bench_catalog(f"generated ({args.n})", url, ids, ["images/p000001.png", "images/p000002.png"], args)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
