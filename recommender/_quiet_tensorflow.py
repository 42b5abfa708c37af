"""Keep TensorFlow's start-up chatter (CUDA probes, oneDNN and CPU-feature notes) off the terminal.

TensorFlow logs from C++ while it is imported, before it has read ``TF_CPP_MIN_LOG_LEVEL``: lines such
as ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`` and
``I0000 ... cudart_stub.cc] Could not find cuda drivers on your machine`` reach stderr on every image
command, on a machine that has no GPU and never asked for one. So, without importing TensorFlow:

- ``TF_CPP_MIN_LOG_LEVEL=2`` (unless already set) hides its later info and warning lines;
- a one-shot import hook runs TensorFlow's own import (and its first device listing, where the CUDA
  probe logs) with file descriptor 2 sent to a temporary file, then writes back every line that is
  not start-up noise (so a real error still shows);
- the ``tensorflow`` and ``absl`` Python loggers are set to ERROR.

``RECOMMENDER_TF_LOGS=1`` turns all of this off (to debug TensorFlow itself).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress

# C++ log lines of the import: info/warning ones (I0000 / W0000 ... or the older dated form), the
# CPU-feature continuation line, absl's own preamble, and the CUDA error lines of a GPU-less machine.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IW]\d{4} |\S+ \S+: [IW] \S+\] "
    r"|To enable the following instructions:"
    r"|(E\d{4} |\S+ \S+: E ).*(cuda|cuInit|cuDNN|cuFFT|cuBLAS|TensorRT))")


def is_noise(line: str) -> bool:
    return NOISE.match(line) is not None


@contextmanager
def filtered_stderr() -> Iterator[None]:
    """Send fd 2 to a temporary file for the block; afterwards write back the lines that are not noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not is_noise(line)]
            if kept:
                os.write(2, "".join(kept).encode("utf-8", "replace"))


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of ``tensorflow`` once, then removes itself."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module) -> None:
            with filtered_stderr():
                real_exec(module)
                # The CUDA probe (cuInit) logs when devices are first listed: do it now, filtered.
                # Any failure here is TensorFlow's to report when it is actually used.
                with suppress(Exception):
                    module.config.list_physical_devices()
            for name in ("tensorflow", "absl"):
                logging.getLogger(name).setLevel(logging.ERROR)

        spec.loader.exec_module = exec_module  # this loader object only; the class is untouched
        return spec


def install() -> None:
    """Set the environment and the import hook; cheap, idempotent, a no-op once TensorFlow is loaded."""
    if os.environ.get("RECOMMENDER_TF_LOGS") == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())
