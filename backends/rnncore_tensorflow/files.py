"""Model files a Keras user already has: a whole model (`.keras`) or its weights (`.weights.h5`).

`.keras` files are opened with `safe_mode=True`, which refuses layers that carry pickled
Python code (Lambda layers): a model file is weights and configuration, never code. A
`.weights.h5` file holds weights only, so the spec must be given; with a spec, either file
is read into the model rnncore builds from it (layer names are rnncore's own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from rnncore.spec import ModelSpec
from rnncore.weights import init_weights

from . import layers
from .model import build

SUFFIXES = (".keras", ".h5")


def _is_rnncore_model(model: Any) -> bool:
    ours = {getattr(layers, name) for name in ("StepMask", "ZeroPaddedSteps", "SequencePooling")}
    return any(isinstance(layer, tuple(ours)) for layer in model.layers)


def load_keras_file(path: str | Path, spec: ModelSpec | None) -> Any:
    """An rnncore Keras model (with `spec`), or the hand-written Keras model in a `.keras` file."""
    path = Path(path)
    if spec is not None:
        model = build(spec, init_weights(spec))
        try:
            model.load_weights(path)
        except (ValueError, OSError, KeyError) as err:
            raise ValueError(f"{path} does not fit the spec ({err}); is it this model's weights?") from None
        return model
    if path.name.endswith(".h5"):
        raise ValueError(
            f"{path} holds weights, not the architecture: pass the model's spec (--spec spec.json)"
        )
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for damaged or unsafe files
        raise ValueError(f"{path} is not a Keras model file Keras can load safely ({err})") from None
    if _is_rnncore_model(model):
        raise ValueError(
            f"{path} was written from an rnncore model; its spec is not in the file: pass --spec, "
            "or save it with rnncore.save (a bundle)"
        )
    return model
