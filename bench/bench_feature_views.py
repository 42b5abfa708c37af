"""What ``features="auto"`` costs at build time: images/s of one view against both views from one pass.

The choice embeds a sample of at most 2,000 products with :class:`TwoViewEmbedder` (pooled head and
block10_add grid from one forward pass); the rest of the catalog gets the chosen view only. This times
the three forward paths on the same decoded pixels (decode excluded: it is the same for all), the
façade's settings (flip-TTA, semantic 0.5), rounds interleaved so that load changes hit every path::

    python bench/bench_feature_views.py [--fashion 2000] [--rounds 2]

Prints images/s per path and round on the demo photos and on Fashion-MNIST test images, with the
min..max over rounds and the two-view / gap ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from recommender.catalog.loader import DEMO_CATALOG, load_catalog  # noqa: E402
from recommender.evaluation.fashion_mnist import load_fashion_mnist, to_rgb_batch  # noqa: E402
from recommender.features.embedders import ImageEmbedder  # noqa: E402
from recommender.features.images import load_for_model  # noqa: E402
from recommender.features.view_choice import TwoViewEmbedder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fashion", type=int, default=2000, help="Fashion-MNIST test images (first n)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    params = {"backbone": "efficientnet_lite0", "flip_tta": True, "semantic": 0.5}
    paths = {"gap": ImageEmbedder(**params, features="gap").fit(),
             "grid": ImageEmbedder(**params, features="grid").fit(),
             "both (one pass)": TwoViewEmbedder(**params).fit()}
    demo = load_catalog(DEMO_CATALOG)
    sets = {"demo": np.stack([load_for_model(demo.image_path(i), 224) for i in range(len(demo))])}
    if args.fashion:
        images, _ = load_fashion_mnist("test")
        sets["fashion-mnist"] = to_rgb_batch(images[:args.fashion], 224)
    for emb in paths.values():
        emb.embed_arrays(sets["demo"][:4])  # compile the graph outside the timing
    print(f"load average before: {os.getloadavg()}")
    for name, pixels in sets.items():
        rates: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(args.rounds):
            for path, emb in paths.items():
                t0 = time.perf_counter()
                emb.embed_arrays(pixels)
                rates[path].append(len(pixels) / (time.perf_counter() - t0))
        for path, r in rates.items():
            ratio = np.array(r) / np.array(rates["gap"])
            print(f"{name:14} n={len(pixels):5} {path:16} {np.mean(r):6.1f} img/s (rounds {min(r):.1f}..{max(r):.1f}); "
                  f"vs gap x{ratio.mean():.2f} ({ratio.min():.2f}..{ratio.max():.2f})", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
