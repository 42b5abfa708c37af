"""Where the image network runs: OpenVINO (the default where it is installed) or TensorFlow.

The networks are defined once, in Keras (:mod:`recommender.features.efficientnet_lite`, Keras
applications); OpenVINO runs the same graph, converted. On 2 cores of a Sapphire Rapids Xeon, the
default network (Lite0 + semantic head) with flip-TTA on real photos (``bench/bench_runtimes.py``, one
run, interleaved): TensorFlow 44.7 img/s; OpenVINO float32 129.1 (2.9x), with vectors equal to
TensorFlow's (1 - cosine <= 1.2e-7, so the two share one cache); OpenVINO bfloat16 259.9 (5.8x), vectors
1.6e-3 away, which cost grocery shop-photo R@1 .030 on the suite: opt-in (``openvino-bf16``), with a
cache of its own (the ``+bf16`` tag in :meth:`InferencePlan.tag`, part of the embedder's identity).
``openvino-mixed`` (opt-in) runs the first half of the network in float32 and the rest in bfloat16
(:mod:`recommender.features.graph_split`): 1.38x float32's speed, a third of bfloat16's distance, grocery
R@1 -.010 (not significant) and Fashion-MNIST P@10 -.001 (significant) on the suite.

The converted model is kept as OpenVINO IR in a small content-addressed folder (``model_cache_dir``): a
later start reads it (well under a second) and never imports TensorFlow (3-5 s); the conversion itself
runs in a child process, so the process that embeds never holds TensorFlow's memory either. Each entry is written
to a temporary folder and renamed into place, and carries the SHA-256 of its files, checked on every
read; an entry that does not match is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recommender.errors import RecommenderError, WeightsUnavailableError
from recommender.features.graph_split import split_model
from recommender.store.artifacts import file_sha256

RUNTIMES = ("auto", "openvino", "openvino-bf16", "openvino-mixed", "tensorflow")
IR_FORMAT = 1  # bump when what goes into the IR (our graph or its conversion) changes
_IR_FILES = ("model.xml", "model.bin")


@dataclass(frozen=True)
class InferencePlan:
    """Which runtime runs the image network, at which precision, and why."""

    runtime: str  # "openvino" | "tensorflow"
    precision: str  # "f32" | "bf16" | "mixed" (the first half of the network in float32, the rest bfloat16)
    reason: str

    @property
    def tag(self) -> str:
        """The part of the embedder identity (and so of the cache folder) this plan adds: vectors made
        in bfloat16 are not mixed with float32 ones."""
        return "" if self.precision == "f32" else f"+{self.precision}"


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def _cpu_has_bfloat16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def plan_inference(runtime: str = "auto") -> InferencePlan:
    """Resolve ``runtime`` (one of :data:`RUNTIMES`) on this machine without loading a model.

    ``auto`` takes OpenVINO in float32 where it is installed (vectors equal to TensorFlow's), else
    TensorFlow; ``openvino-bf16`` asks for bfloat16 where the CPU has bfloat16 units (about twice as
    fast again, but grocery shop-photo R@1 -.030 [-.054, -.007] on the suite: opt-in, docs/evaluation.md);
    ``openvino-mixed`` runs the network's first half in float32 and the rest in bfloat16 (:mod:`graph_split`).
    """
    if runtime not in RUNTIMES:
        raise RecommenderError(f"image runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "tensorflow":
        return InferencePlan("tensorflow", "f32", "requested")
    if not openvino_installed():
        if runtime == "auto":
            return InferencePlan("tensorflow", "f32", "auto: OpenVINO is not installed")
        raise WeightsUnavailableError(f"image runtime {runtime!r} needs OpenVINO: pip install -r requirements.txt")
    if runtime in ("openvino-bf16", "openvino-mixed"):
        if _cpu_has_bfloat16():
            return InferencePlan("openvino", runtime.split("-")[1], "requested")
        return InferencePlan("openvino", "f32", "bfloat16 requested, but this CPU has no bfloat16 units")
    return InferencePlan("openvino", "f32", f"{runtime}: OpenVINO installed")


def model_cache_dir() -> Path:
    """``$RECOMMENDER_MODEL_CACHE``, else ``$XDG_CACHE_HOME/recommender/models`` (``~/.cache/...``)."""
    from recommender.features.weights import user_cache_path

    return user_cache_path("RECOMMENDER_MODEL_CACHE", "models")


def _read_cached_ir(entry: Path):
    """The IR model in ``entry`` if every file matches its recorded hash, else None."""
    import openvino as ov

    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        for name in _IR_FILES:
            if manifest.get(name) != file_sha256(entry / name):
                return None
        return ov.Core().read_model(entry / "model.xml")
    except (OSError, ValueError, RuntimeError):
        return None


def _write_cached_ir(model, entry: Path) -> None:
    """Save ``model`` as ``entry`` atomically; a cache that cannot be written is skipped, not fatal."""
    import openvino as ov

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    except OSError:
        return
    try:
        ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
        manifest = {name: file_sha256(tmp / name) for name in _IR_FILES}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        if entry.exists():  # a broken entry (hash mismatch) is replaced
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class OpenVinoForward:
    """A compiled OpenVINO model as a numpy function ``(n, S, S, 3) uint8 -> (n, d) float32``.

    Compiled for one image per request, at a fixed shape, with OpenVINO's throughput streams (one per
    core here), and a queue of requests kept full: on 2 cores, Lite0 with flip-TTA in float32, 129 img/s
    against 89 for batches of 32 at a dynamic shape on both cores (``bench/bench_runtimes.py``): small
    fixed shapes keep the activations in cache, and a stream per core avoids the synchronisation of
    splitting each small layer across cores. One caller at a time (a lock): the queue is not
    thread-safe, and one call already keeps every core busy.

    :meth:`with_mirror` (flip-TTA) runs a second compilation whose graph mirrors each image itself and
    embeds both views as a batch of two: numpy's reversed copy of a batch cost ~30 ms per 32 images on
    the calling thread while the cores waited, and each image is one request instead of two. Each
    variant is compiled on first use."""

    def __init__(self, model, precision: str) -> None:
        self._model, self._precision = model, precision
        self._compiled: dict[bool, tuple[list, int]] = {}
        self._lock = threading.Lock()

    def _variant(self, mirrored: bool) -> tuple[list, int]:
        """The compiled stages of one variant (one model; two for ``mixed``, run one after the other) and the
        output width."""
        if mirrored not in self._compiled:
            import openvino as ov
            from openvino.preprocess import PrePostProcessor

            model = self._model.clone()
            height, width, channels = (d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:])
            model.reshape([2 if mirrored else 1, height, width, channels])
            if mirrored:
                model = _mirror_inside(model, height, width, channels)
            # Pixels arrive as uint8: the conversion to float happens inside the compiled graph, per request,
            # rather than as a 4x larger float copy of every batch while the cores wait.
            ppp = PrePostProcessor(model)
            ppp.input().tensor().set_element_type(ov.Type.u8)
            model = ppp.build()
            if self._precision == "mixed":
                head, tail = split_model(model)
                stages = [(head, "f32"), (tail, "bf16")]
            else:
                stages = [(model, self._precision)]
            queues = []
            for part, precision in stages:
                compiled = ov.Core().compile_model(
                    part, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT"})
                # Twice what OpenVINO suggests: a request waits ready while Python collects a finished one.
                queues.append(ov.AsyncInferQueue(
                    compiled, 2 * int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))
                queues[-1].set_callback(_store_output)
            self._compiled[mirrored] = queues, model.outputs[0].get_partial_shape()[1].get_length()
        return self._compiled[mirrored]

    def _run(self, x: np.ndarray, mirrored: bool) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.uint8)
        with self._lock:
            queues, dim = self._variant(mirrored)
            inputs = [x[i:i + 1] for i in range(len(x))]
            for queue in queues[:-1]:  # a stage's outputs are the next one's inputs, a whole batch at a time
                middle: list = [None] * len(inputs)
                for i, item in enumerate(inputs):
                    queue.start_async({0: item}, (middle, i))
                queue.wait_all()
                inputs = middle
            out = np.empty((len(x), 2, dim) if mirrored else (len(x), dim), dtype=np.float32)
            for i, item in enumerate(inputs):
                queues[-1].start_async({0: item}, (out, i))
            queues[-1].wait_all()
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, mirrored=False)

    def with_mirror(self, x: np.ndarray) -> np.ndarray:
        """``(n, 2, d)``: each image's output and its horizontally mirrored twin's (the same numbers as
        ``self(x[:, :, ::-1])``: the graph reverses the width axis exactly)."""
        return self._run(x, mirrored=True)


def _mirror_inside(model, height: int, width: int, channels: int):
    """``model`` (batch 2) fed by one ``(1, H, W, C)`` image: the image and its left-right mirror, concatenated."""
    import openvino as ov
    import openvino.opset13 as ops

    old = model.get_parameters()[0]
    image = ops.parameter([1, height, width, channels], old.get_element_type(), name=old.get_friendly_name())
    # Slice with step -1 from the last column to before the first: the exact reversal of the width axis.
    mirrored = ops.slice(image, np.array([-1]), np.array([-width - 1]), np.array([-1]), np.array([2]))
    both = ops.concat([image, mirrored], 0)
    for target in old.output(0).get_target_inputs():
        target.replace_source_output(both.output(0))
    return ov.Model(model.get_results(), [image], model.get_friendly_name())


def _store_output(request, where: tuple[np.ndarray | list, int]) -> None:
    out, row = where
    data = request.get_output_tensor(0).data
    if isinstance(out, list):  # a first stage's tensor: copied, the request's buffer is reused
        out[row] = data.copy()
    else:
        out[row] = data if out.ndim == 3 else data[0]


def openvino_forward(key: str, plan: InferencePlan, tf_function: Callable[[], object],
                     embedder: tuple[str, dict] | None = None) -> OpenVinoForward:
    """The network ``key`` names, compiled for ``plan``: read from the model cache, else converted and cached.

    The conversion needs TensorFlow (3-5 s to import, ~1 GB that stays in the process). With ``embedder``
    (``("module:Class", params)`` of the :class:`ImageEmbedder` asking) it runs in a child process that
    fills the cache, so a build, the app or an API worker never holds TensorFlow; if that fails (say the
    cache cannot be written), here, from ``tf_function()`` (a ``tf.function`` with an input signature).
    """
    import openvino as ov

    entry = model_cache_dir() / "openvino" / hashlib.sha256(
        f"{key}|ir{IR_FORMAT}|{ov.__version__}".encode()).hexdigest()[:24]
    model = _read_cached_ir(entry) if entry.is_dir() else None
    if model is None and embedder is not None and not os.environ.get(_CONVERTING):
        _convert_in_child(*embedder)
        model = _read_cached_ir(entry) if entry.is_dir() else None
    if model is None:
        model = ov.convert_model(tf_function().get_concrete_function())
        _write_cached_ir(model, entry)
    return OpenVinoForward(model, plan.precision)


_CONVERTING = "RECOMMENDER_CONVERTING_MODEL"  # set in the child: convert in-process, never spawn again


def _convert_in_child(spec: str, params: dict) -> None:
    """Run ``python -m recommender.features.inference spec params`` (which fits that embedder, filling the
    model cache); its failures are left to the in-process path."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, _CONVERTING: "1", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
           "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([sys.executable, "-m", "recommender.features.inference", spec, json.dumps(params)],
                       env=env, capture_output=True, timeout=_CONVERT_TIMEOUT, check=False)


_CONVERT_TIMEOUT = 900  # seconds: TensorFlow's import and a Keras build on a loaded machine, with room


def _child_main(spec: str, params_json: str) -> int:
    from recommender.features.embedders import ImageEmbedder

    module, _, name = spec.partition(":")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, ImageEmbedder)):
        print(f"not an image embedder: {spec}", file=sys.stderr)
        return 2
    cls(**json.loads(params_json)).fit()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:3]))
