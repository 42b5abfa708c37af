"""Write the committed Fashion-MNIST test slice: ``data/fashion-mnist-slice/fashion-mnist-test-slice.npz``.

A stratified, seeded sample of the 10k test split (default 100 images per class, 1,000 in all),
stored as a compressed ``.npz`` with ``images`` (uint8, n x 28 x 28), ``labels`` (uint8) and
``indices`` (int32, rows of the original t10k files, ascending). Needs the Debian package
``dataset-fashion-mnist`` (``sudo apt-get install dataset-fashion-mnist``) or ``--root``.

Run from the repo root: ``python scripts/make_fashion_mnist_slice.py [--per-class 100] [--seed 0]``.
Re-running with the same arguments reproduces the file byte for byte in content.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from recommender.evaluation.fashion_mnist import (  # noqa: E402
    CLASS_NAMES,
    DEFAULT_ROOT,
    SLICE_PATH,
    FashionMNISTUnavailableError,
    load_fashion_mnist,
)


def stratified_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` rows of every class, drawn without replacement with ``seed``; sorted ascending."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(len(CLASS_NAMES)):
        rows = np.flatnonzero(labels == c)
        if len(rows) < per_class:
            raise ValueError(f"class {c} has only {len(rows)} images, fewer than {per_class}")
        picks.append(rng.choice(rows, size=per_class, replace=False))
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100, help="images per class (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"idx files folder (default {DEFAULT_ROOT})")
    parser.add_argument("--out", type=Path, default=SLICE_PATH, help=f"output .npz (default {SLICE_PATH})")
    args = parser.parse_args()

    try:
        images, labels = load_fashion_mnist("test", args.root)
    except FashionMNISTUnavailableError as exc:
        sys.exit(str(exc))
    idx = stratified_indices(labels, args.per_class, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images[idx], labels=labels[idx].astype(np.uint8), indices=idx.astype(np.int32))
    print(f"wrote {args.out} ({len(idx)} images, {args.per_class} per class, seed {args.seed}, "
          f"{args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
