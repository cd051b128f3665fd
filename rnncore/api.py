"""The public functions: build a spec on a backend, move weights, predict."""

from __future__ import annotations

from typing import Any

import numpy as np

from .batch import prepare_batch
from .device import Device, device_for
from .registry import backend_of, get_backend
from .spec import ModelSpec
from .weights import Weights, check_weights, init_weights


def build(
    spec: ModelSpec,
    backend: str = "torch",
    weights: Weights | None = None,
    seed: int = 0,
    device: str | Device | None = None,
) -> Any:
    """Compile `spec` to a native model: a `torch.nn.Module` or a `keras.Model`.

    Args:
        spec: the model spec.
        backend: "torch"/"pytorch" or "tensorflow"/"tf"/"keras".
        weights: canonical weights to load; None draws `init_weights(spec, seed)`.
        device: "auto", "cpu", "cuda" or "cuda:N" (see `rnncore.device`); None leaves placement
            to the framework (torch: the CPU; TensorFlow: GPU 0 when it sees one).
    Example:
        >>> m = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec), device="auto")
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build() takes a ModelSpec, not {type(spec).__name__}; use ModelSpec.from_dict")
    w = init_weights(spec, seed) if weights is None else check_weights(spec, weights)
    module = get_backend(backend)
    placed = device_for(module, device)
    return module.build(spec, w, None if placed is None else str(placed))


def device_of(model: Any) -> str:
    """Where a model built by either backend runs: "cpu" or "cuda:N"."""
    return str(backend_of(model).device_of(model))


def get_weights(model: Any) -> Weights:
    """The model's weights in the canonical layout (numpy copies)."""
    return backend_of(model).get_weights(model)


def set_weights(model: Any, weights: Weights) -> None:
    """Load canonical weights into a model built by either backend."""
    backend = backend_of(model)
    backend.set_weights(model, check_weights(backend.spec_of(model), weights))


def spec_of(model: Any) -> ModelSpec:
    """The spec a model was built from."""
    return backend_of(model).spec_of(model)


def predict(model: Any, inputs: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """Numpy outputs of `model` in eval mode (logits, or features when there is no head).

    `inputs` is `(B, T)` token ids or `(B, T, F)` features, right padded; `lengths` `(B,)`
    or None to derive lengths from `padding_idx` (full length for features).
    """
    backend = backend_of(model)
    x, lengths = prepare_batch(backend.spec_of(model), inputs, lengths)
    return backend.predict(model, x, lengths)


def value_and_grad(
    model: Any, inputs: np.ndarray, cotangent: np.ndarray, lengths: np.ndarray | None = None
) -> tuple[np.ndarray, Weights, np.ndarray | None]:
    """Outputs and gradients of `sum(outputs * cotangent)` in eval mode.

    Returns (outputs, gradients per canonical weight name, gradient w.r.t. the inputs for
    feature inputs or None for token ids). Used by the parity suite and `rnncore parity`.
    """
    backend = backend_of(model)
    x, lengths = prepare_batch(backend.spec_of(model), inputs, lengths)
    return backend.value_and_grad(model, x, lengths, np.asarray(cotangent))
