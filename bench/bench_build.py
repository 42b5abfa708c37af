"""Cold-build throughput of the image embedding build on real images (2-core CPU), side by side.

    python bench/bench_build.py [--fmnist 600] [--big 0] [--workers N] [--repeat 2] [--tta both|on|off]
        [--runtimes auto tensorflow]

For each image set and flip-TTA on/off, one child process (so its peak RSS is its own) loads the
default image model (EfficientNet-Lite0 with the recommender's default levers) and, alternately,
``--repeat`` times each:

- ``sequential``: the pipeline before this change - decode each image in full, pad, then embed
  the batch, nothing saved until the end (emulated here: ``pad_to_square(open_image(path))`` and
  ``embed_arrays`` in a loop, no cache);
- ``pipelined``: ``store.build.build_embeddings`` into an empty cache - big JPEGs decoded at a
  reduced DCT scale, decode in a thread pool (``--workers``) while the model embeds the previous
  batch, checkpoints every 1024 images.

Image sets: the demo catalog's photos (89, 512x384 JPEG/PNG); ``--fmnist N`` Fashion-MNIST test
images written as PNG files (28x28, from Debian's dataset-fashion-mnist); ``--big N``: the demo's
JPEG photos upscaled to 12 MP (4000x3000, quality 90) - what a phone delivers; optionally the
grocery iconic photos (read from a path, never copied into the project). Timing excludes the model load;
it includes decoding, resizing, inference and (pipelined) hashing and cache writes. Prints img/s per
run (median and range over repeats), the ratio pipelined/sequential, and each child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _write_fmnist(folder: Path, n: int) -> Path:
    from PIL import Image

    from recommender.evaluation.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist("test")
    rows = []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"images/fm{i}.png"
        Image.fromarray(255 - images[i]).save(folder / name)  # dark on white, as catalogs deliver
        rows.append(f"fm{i},item {i},{name}")
    (folder / "catalog.csv").write_text("id,name,image\n" + "\n".join(rows) + "\n")
    return folder / "catalog.csv"


def _write_big(folder: Path, n: int) -> Path:
    from PIL import Image

    from recommender.catalog.loader import DEMO_CATALOG

    photos = sorted((DEMO_CATALOG.parent / "images").glob("*.jpg"))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"images/big{i}.jpg"
        Image.open(photos[i % len(photos)]).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(
            folder / name, quality=90)
        rows.append(f"big{i},item {i},{name}")
    (folder / "catalog.csv").write_text("id,name,image\n" + "\n".join(rows) + "\n")
    return folder / "catalog.csv"


def child(catalog_csv: str, flip_tta: bool, repeat: int, batch_size: int, workers: int | None,
          runtime: str = "auto") -> None:
    """Runs in its own process: print one JSON line of timings and its peak RSS."""
    import numpy as np

    from recommender.catalog.loader import load_catalog
    from recommender.features.images import open_image, pad_to_square
    from recommender.recommender import HybridRecommender
    from recommender.store.build import build_embeddings

    catalog = load_catalog(catalog_csv)
    rec = HybridRecommender(backbone="efficientnet_lite0", flip_tta=flip_tta, batch_size=batch_size,
                            image_runtime=runtime)
    embedder = rec._image_embedder("efficientnet_lite0").fit()  # noqa: SLF001 - the default pipeline's embedder
    embedder.embed_arrays(np.zeros((2, 224, 224, 3), np.uint8))  # trace the graph outside the timing
    paths = [catalog.image_path(i) for i in range(len(catalog))]
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out: dict = {"n": len(catalog), "sequential": [], "pipelined": [], "rss_model_mb": rss_after_load}
    for _ in range(repeat):
        t = time.perf_counter()
        for start in range(0, len(paths), embedder.batch_size):
            batch = [pad_to_square(open_image(p), 224) for p in paths[start:start + embedder.batch_size]]
            embedder.embed_arrays(np.stack(batch))
        out["sequential"].append(len(paths) / (time.perf_counter() - t))
        cache = tempfile.mkdtemp(prefix="bench-build-")
        try:
            t = time.perf_counter()
            _, has_image, report, _ = build_embeddings(catalog, embedder, cache, decode_workers=workers)
            out["pipelined"].append(len(paths) / (time.perf_counter() - t))
            assert report.embedded == int(has_image.sum())
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    out["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _summary(rates: list[float]) -> str:
    return f"{statistics.median(rates):6.1f} [{min(rates):.1f}-{max(rates):.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fmnist", type=int, default=600, help="Fashion-MNIST images (0 = skip)")
    ap.add_argument("--big", type=int, default=0, help="12 MP JPEG photos (0 = skip)")
    ap.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True, help="the demo photos")
    ap.add_argument("--workers", type=int, default=None, help="decode threads of the pipelined build")
    ap.add_argument("--grocery", type=Path, default=None, help="grocery catalog.csv (read in place)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--tta", choices=["both", "on", "off"], default="both")
    ap.add_argument("--runtimes", nargs="+", default=["auto"], help="image runtimes to compare (auto tensorflow ...)")
    ap.add_argument("--child", nargs=2, metavar=("CATALOG", "TTA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1] == "on", args.repeat, args.batch_size, args.workers, args.runtimes[0])
        return

    from recommender.catalog.loader import DEMO_CATALOG
    from recommender.evaluation.fashion_mnist import available

    work = Path(tempfile.mkdtemp(prefix="bench-build-sets-"))
    sets = {"demo photos": DEMO_CATALOG} if args.demo else {}
    if args.big:
        sets[f"12 MP jpeg x{args.big}"] = _write_big(work / "big", args.big)
    if args.fmnist and available():
        sets[f"fashion-mnist png x{args.fmnist}"] = _write_fmnist(work / "fmnist", args.fmnist)
    elif args.fmnist:
        print("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): skipped")
    if args.grocery:
        sets["grocery iconic"] = args.grocery
    ttas = ["on", "off"] if args.tta == "both" else [args.tta]
    print(f"cores {os.cpu_count()}, batch {args.batch_size}, decode workers {args.workers or 'default'}, "
          f"repeats {args.repeat}; load average {os.getloadavg()[0]:.1f}; img/s median [min-max]")
    print(f"{'image set':28s} {'runtime':11s} {'TTA':4s} {'n':>5s}  {'sequential':>20s}  {'pipelined':>20s}  ratio  "
          f"RSS model/peak MB")
    try:
        for name, csv in sets.items():
            for tta, runtime in ((t, r) for t in ttas for r in args.runtimes):
                cmd = [sys.executable, __file__, "--child", str(csv), tta, "--repeat", str(args.repeat),
                       "--batch-size", str(args.batch_size), "--runtimes", runtime]
                cmd += ["--workers", str(args.workers)] if args.workers else []
                env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
                run = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if run.returncode:
                    print(f"{name}: child failed:\n{run.stderr[-2000:]}")
                    continue
                r = json.loads(run.stdout.strip().splitlines()[-1])
                ratio = statistics.median(r["pipelined"]) / statistics.median(r["sequential"])
                print(f"{name:28s} {runtime:11s} {tta:4s} {r['n']:5d}  {_summary(r['sequential']):>20s}  "
                      f"{_summary(r['pipelined']):>20s}  {ratio:4.2f}x  {r['rss_model_mb']:.0f}/{r['rss_peak_mb']:.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
