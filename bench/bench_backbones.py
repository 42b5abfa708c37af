"""Images/s of each backbone configuration, decode included, measured side by side in one run.

What a cold build pays per image: open + decode + pad/resize + forward pass (+ the mirrored pass with
flip-TTA), through ``ImageEmbedder.transform`` at the library's batch size. Configurations are timed
in interleaved rounds (A B C ... A B C ...) so a machine shared with other work slows them alike; the
figure per configuration is the median over rounds, with min-max.

Run from the repo root: ``python bench/bench_backbones.py [--n 128] [--rounds 3] [--images DIR]``
(default images: the grocery ``train`` shop photos in ../shared/data/grocery, else the demo catalog's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from recommender.features.embedders import ImageEmbedder  # noqa: E402

CONFIGS = {
    "lite0 flip sem.5 (the default until session 17)": dict(backbone="efficientnet_lite0", flip_tta=True, semantic=0.5),
    "lite0 sem.5 (today's default)": dict(backbone="efficientnet_lite0", flip_tta=False, semantic=0.5),
    "lite1 sem.5": dict(backbone="efficientnet_lite1", flip_tta=False, semantic=0.5),
    "lite2 sem.5": dict(backbone="efficientnet_lite2", flip_tta=False, semantic=0.5),
    "lite1 flip sem.5": dict(backbone="efficientnet_lite1", flip_tta=True, semantic=0.5),
    "lite2 flip sem.5": dict(backbone="efficientnet_lite2", flip_tta=True, semantic=0.5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=Path)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    args = ap.parse_args()

    if args.images:
        paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    else:
        from recommender.evaluation.grocery import GROCERY_ROOT, grocery_available, grocery_split_paths

        if grocery_available() is None:
            paths = grocery_split_paths(GROCERY_ROOT, "train")[0]
        else:
            from recommender.catalog.loader import load_catalog

            cat = load_catalog()
            paths = [cat.image_path(i) for i in range(len(cat))]
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[: args.n]]
    names = args.configs.split(",")
    embedders = {}
    for name in names:
        t0 = time.perf_counter()
        emb = ImageEmbedder(**CONFIGS[name]).fit()
        emb.transform(paths[:8])  # trace + oneDNN warm-up
        embedders[name] = emb
        print(f"{name}: load + warm-up {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names:
            t0 = time.perf_counter()
            embedders[name].transform(paths)
            rates[name].append(len(paths) / (time.perf_counter() - t0))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{len(paths)} images ({paths[0].parent.parent.name}/...), {args.rounds} interleaved rounds, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    base = float(np.median(rates[names[0]]))
    print("| configuration | input | img/s median [min, max] | relative to first |")
    print("|---|---|---|---|")
    for name in names:
        v = np.array(rates[name])
        print(f"| {name} | {embedders[name].input_size_}px | {np.median(v):.1f} [{v.min():.1f}, {v.max():.1f}] | "
              f"{np.median(v) / base:.2f} |")


if __name__ == "__main__":
    main()
