"""Time and memory of a fit from the cache, stage by stage (issue 14's "warm fit at 100k: <= 20 s, <= 1 GB").

Wraps the façade's fit steps and prints, after each, its seconds and the process's RSS (``VmRSS``, its peak
``VmHWM``, and the anonymous / file-backed parts: the mapped bfloat16 vector files count as ``RssFile``).

    python bench/bench_fit_stages.py --make-fmnist /tmp/fm100k 100000   # a catalog of real Fashion-MNIST PNGs
    python -m recommender build --catalog /tmp/fm100k/catalog.csv --cache /tmp/c100k   # cold: embeds (cache)
    python bench/bench_fit_stages.py /tmp/fm100k/catalog.csv /tmp/c100k [--profile]    # warm: this measure

The catalog: the 70,000 Fashion-MNIST images (train + test, dark on white as shops deliver them), then as many
of them mirrored as needed past 70,000 (a distinct real image each); name = class + row, category = class, one of
200 brands uniformly, a log-normal price. Run the warm measure twice after a code change that renames the saved
index (its first run builds and saves the graph).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss() -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def make_fmnist(folder: Path, n: int) -> None:
    from PIL import Image

    from recommender.evaluation.fashion_mnist import CLASS_NAMES, load_fashion_mnist

    (folder / "images").mkdir(parents=True, exist_ok=True)
    train, train_labels = load_fashion_mnist("train")
    test, test_labels = load_fashion_mnist("test")
    images, labels = np.concatenate([train, test]), np.concatenate([train_labels, test_labels])
    rng = np.random.default_rng(0)
    rows = ["id,name,category,brand,price,image"]
    for i in range(n):
        k = i % len(images)
        pixels = 255 - images[k]
        if i >= len(images):
            pixels = np.ascontiguousarray(pixels[:, ::-1])
        Image.fromarray(pixels).save(folder / "images" / f"p{i}.png")
        cls = CLASS_NAMES[labels[k]]
        rows.append(f"p{i},{cls} {i},{cls},brand{rng.integers(200)},{rng.lognormal(3, .6):.2f},images/p{i}.png")
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n")
    print(f"wrote {n} products to {folder / 'catalog.csv'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalog", nargs="?", type=Path)
    parser.add_argument("cache", nargs="?", type=Path)
    parser.add_argument("--profile", action="store_true", help="pyinstrument over the fit")
    parser.add_argument("--make-fmnist", nargs=2, metavar=("FOLDER", "N"))
    args = parser.parse_args()
    if args.make_fmnist:
        make_fmnist(Path(args.make_fmnist[0]), int(args.make_fmnist[1]))
        return
    if args.catalog is None or args.cache is None:
        parser.error("give CATALOG and CACHE (or --make-fmnist FOLDER N)")
    t0 = time.perf_counter()
    import recommender.recommender as facade
    from recommender.catalog.loader import load_catalog

    stages: list[tuple[str, float, dict]] = []

    def timed(owner, name: str) -> None:
        real = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            out = real(*a, **k)
            stages.append((name, time.perf_counter() - t, rss()))
            return out
        setattr(owner, name, wrapper)

    for name in ("build_embeddings", "image_hashes", "fit_catalog_adapter"):
        timed(facade, name)
    for name in ("_serving_vectors", "_fit_metadata", "_build_index", "_fit_vectors"):
        timed(facade.HybridRecommender, name)
    catalog = load_catalog(args.catalog)
    stages.append(("load_catalog", time.perf_counter() - t0, rss()))
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    t = time.perf_counter()
    rec = facade.HybridRecommender(cache_dir=args.cache).fit(catalog)
    fit_s = time.perf_counter() - t
    if profiler:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))
    print("| stage (in call order) | s | VmRSS | VmHWM | RssAnon | RssFile |\n|---|---|---|---|---|---|")
    for name, s, m in stages:
        print(f"| {name} | {s:.2f} | {m['VmRSS']} | {m['VmHWM']} | {m['RssAnon']} | {m['RssFile']} |")
    print(f"fit {fit_s:.1f} s (process {time.perf_counter() - t0:.1f} s), peak RSS {rss()['VmHWM']} MB; "
          f"{rec.build_report_.summary()}; index {type(rec.image_index_).__name__}, vectors {rec.image_vectors_.dtype}")


if __name__ == "__main__":
    main()
