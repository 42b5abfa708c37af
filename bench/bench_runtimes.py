"""Image-network runtimes side by side: TensorFlow, and OpenVINO as compiled before and now, float32 and bfloat16.

    python bench/bench_runtimes.py [--n 256] [--rounds 3] [--grocery ../shared/data/grocery/catalog.csv]

The default pipeline's network until session 17 (EfficientNet-Lite0 + semantic 0.5, flip-TTA: both views in one call) on
real images decoded and padded beforehand (the demo photos, then grocery studio photos up to ``--n``), so
the figures are the network alone; ``bench/bench_build.py`` measures whole builds. Rows, interleaved
per round in one process (the machine is shared; ratios are what to read):

- ``tensorflow``: ``tf.function`` over batches of 32 (``runtime="tensorflow"``);
- ``openvino-dynamic-32``: the converted model compiled for any batch, latency mode, batches of 32
  (the first OpenVINO attempt);
- ``openvino`` / ``openvino-bf16``: today's :class:`OpenVinoForward` (one image per request, fixed
  shape, throughput streams, a full queue), float32 (the default) and bfloat16;
- ``openvino-mixed``: the same, the network's first half in float32 and the rest in bfloat16.

Prints img/s median [min-max] over rounds, the ratio to TensorFlow, and each row's largest distance
to TensorFlow's vectors (1 - cosine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.catalog.loader import DEMO_CATALOG, load_catalog  # noqa: E402
from recommender.features.embedders import ImageEmbedder  # noqa: E402
from recommender.features.images import load_for_model  # noqa: E402


def _pixels(n: int, grocery: Path | None) -> np.ndarray:
    paths = sorted(p for p in (DEMO_CATALOG.parent / "images").iterdir() if p.suffix in (".jpg", ".png"))
    if grocery is not None and grocery.is_file():
        cat = load_catalog(grocery)
        paths += [cat.image_path(i) for i in range(len(cat))]
    return np.stack([load_for_model(p, 224) for p in paths[:n]])


def _dynamic_openvino(embedder: ImageEmbedder):
    """The converted model compiled for any batch size, latency mode (what the first attempt did)."""
    import openvino as ov

    from recommender.features.inference import model_cache_dir

    entries = sorted((model_cache_dir() / "openvino").iterdir(), key=lambda p: p.stat().st_mtime)
    models = [ov.Core().read_model(e / "model.xml") for e in entries if (e / "model.xml").is_file()]
    model = [m for m in models if m.inputs[0].get_partial_shape()[1].get_length() == embedder.input_size_
             and m.outputs[0].get_partial_shape()[1].get_length() == embedder.feature_dim_][-1]
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                      "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    clone = ImageEmbedder(**embedder.get_params()).fit()
    clone._forward = lambda x: request.infer({0: np.ascontiguousarray(x, np.float32)})[0].copy()
    return clone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--grocery", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/data/grocery/catalog.csv")
    args = ap.parse_args()
    pixels = _pixels(args.n, args.grocery)
    params = {"backbone": "efficientnet_lite0", "flip_tta": True, "semantic": 0.5, "batch_size": 32}
    rows = {"tensorflow": ImageEmbedder(**params, runtime="tensorflow").fit()}
    rows["openvino"] = ImageEmbedder(**params, runtime="openvino").fit()
    rows["openvino-dynamic-32"] = _dynamic_openvino(rows["openvino"])
    rows["openvino-bf16"] = ImageEmbedder(**params, runtime="openvino-bf16").fit()
    rows["openvino-mixed"] = ImageEmbedder(**params, runtime="openvino-mixed").fit()
    for emb in rows.values():
        emb.embed_arrays(pixels[:4])  # trace / warm up outside the timing
    rates: dict[str, list[float]] = {name: [] for name in rows}
    vectors: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        order = list(rows)[r % len(rows):] + list(rows)[:r % len(rows)]
        for name in order:
            t = time.perf_counter()
            vectors[name] = rows[name].embed_arrays(pixels)
            rates[name].append(len(pixels) / (time.perf_counter() - t))
    base = statistics.median(rates["tensorflow"])
    print(f"n = {len(pixels)} images (demo photos, then grocery studio photos), flip-TTA, {args.rounds} rounds\n")
    print("| runtime | img/s median [min-max] | x TensorFlow | max 1 - cos to TensorFlow |")
    print("|---|---|---|---|")
    for name, rs in rates.items():
        dist = float(1 - (vectors[name] * vectors["tensorflow"]).sum(axis=1).min())
        print(f"| {name} ({rows[name].runtime_}) | {statistics.median(rs):.1f} [{min(rs):.1f}-{max(rs):.1f}] "
              f"| {statistics.median(rs) / base:.2f} | {dist:.1e} |")


if __name__ == "__main__":
    main()
