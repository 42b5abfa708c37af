"""Fashion-MNIST as an evaluation set for the image embeddings.

The full data comes from Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``,
idx files, gzipped); a stratified 1,000-image slice of the test split is committed in
``data/fashion-mnist-slice/`` so the quality tests run everywhere (see its NOTICE.md: MIT, (c) Zalando SE).

Fashion-MNIST is white-on-black (0 = background); product photos are dark-on-white. Measured on the
10k test set with EfficientNet-Lite0 the two polarities tie (paired bootstrap differences within
+-0.005 for P@1/5/10, both for the plain embedding and the best post-processed one; the inverted one
is ahead by 0.001-0.002 with the latter), so :func:`to_rgb_batch` inverts by default: it matches the
catalog convention (``images.pad_to_square`` pads with white). ``invert=False`` keeps the stored polarity.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
SLICE_PATH = Path(__file__).resolve().parents[2] / "data" / "fashion-mnist-slice" / "fashion-mnist-test-slice.npz"
INSTALL_HINT = "sudo apt-get install dataset-fashion-mnist"

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_IMAGES_MAGIC = 2051  # idx3, unsigned byte
_LABELS_MAGIC = 2049  # idx1, unsigned byte
_SPLITS = {"train": "train", "test": "t10k"}


class FashionMNISTUnavailableError(FileNotFoundError):
    """The Fashion-MNIST idx files are not on this machine."""


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FashionMNISTUnavailableError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}: install the data with `{INSTALL_HINT}` "
        "(Debian/Ubuntu), or pass root= a folder holding the idx files from "
        "https://github.com/zalandoresearch/fashion-mnist"
    )


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            raw = f.read()
    else:
        raw = path.read_bytes()
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: too short for an idx header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: idx magic number {found}, expected {magic}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes), file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(split: str = "test", root: Path | str = DEFAULT_ROOT) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (n, 28, 28), labels int64 (n,))`` of the ``"test"`` (10k) or ``"train"`` (60k) split."""
    if split not in _SPLITS:
        raise ValueError(f"split must be 'test' or 'train', not {split!r}")
    root = Path(root)
    stem = _SPLITS[split]
    images = _read_idx(_find(root, f"{stem}-images-idx3-ubyte"), _IMAGES_MAGIC, 3)
    labels = _read_idx(_find(root, f"{stem}-labels-idx1-ubyte"), _LABELS_MAGIC, 1).astype(np.int64)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"expected 28x28 images, got {images.shape[1:]}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"label {labels.max()} out of range 0..{len(CLASS_NAMES) - 1}")
    return images.copy(), labels


def available(root: Path | str = DEFAULT_ROOT, split: str = "test") -> bool:
    """Whether the idx files of ``split`` are present (for skipping tests and benchmarks)."""
    try:
        stem = _SPLITS[split]
        _find(Path(root), f"{stem}-images-idx3-ubyte")
        _find(Path(root), f"{stem}-labels-idx1-ubyte")
    except FashionMNISTUnavailableError:
        return False
    return True


def load_slice(path: Path | str = SLICE_PATH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The committed stratified test slice: ``(images uint8 (n, 28, 28), labels int64, test-set indices int64)``."""
    with np.load(path) as data:
        return data["images"], data["labels"].astype(np.int64), data["indices"].astype(np.int64)


def to_rgb_batch(images: np.ndarray, size: int = 224, invert: bool = True) -> np.ndarray:
    """``(n, 28, 28)`` uint8 greyscale -> ``(n, size, size, 3)`` uint8 RGB for a backbone.

    Bilinear upsampling (PIL's, on the whole 28x28 square: the garments already sit in a square
    frame, so no padding is needed; bilinear measured ahead of bicubic and nearest). ``invert=True``
    renders dark-on-white like a product photo on a white background (see the module docstring).
    """
    from PIL import Image

    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (n, h, w) uint8 greyscale images, got {images.shape} {images.dtype}")
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        grey = 255 - img if invert else img
        big = Image.fromarray(grey, "L").resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(big)[:, :, None]
    return out


def leave_one_out_hits(
    catalog: np.ndarray, labels: np.ndarray, k: int = 10, queries: np.ndarray | None = None, chunk: int = 1000
) -> np.ndarray:
    """Leave-one-out retrieval: ``(n, k)`` bool, ``[i, r]`` = the rank-``r`` neighbour of item ``i`` shares its label.

    Item ``i`` is searched (cosine) among all other rows of ``catalog``, with ``queries[i]`` as the
    query vector when given (e.g. an expanded query) or else ``catalog[i]``. Labels are used only to
    score the ranking. ``hits[:, :k].mean()`` is P@k; ``hits[:, :k].mean(1)`` the per-query values.
    """
    from recommender.index.exact import l2_normalise, top_k

    X = l2_normalise(catalog)
    Q = X if queries is None else l2_normalise(queries)
    labels = np.asarray(labels)
    if len(Q) != len(X) or len(labels) != len(X):
        raise ValueError(f"{len(Q)} queries, {len(X)} catalog rows, {len(labels)} labels: must be equal")
    hits = np.empty((len(X), k), dtype=bool)
    for s in range(0, len(X), chunk):
        sim = Q[s:s + chunk] @ X.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
        _, ids = top_k(sim, k)
        hits[s:s + chunk] = labels[ids] == labels[s:s + chunk, None]
    return hits
