"""Import a hand-written native model (a torch.nn.Module, a Keras model) as spec + weights.

Each backend reads its own framework's layers (`rnncore_torch.native`,
`rnncore_tensorflow.native`); this module only dispatches and defines the error.
"""

from __future__ import annotations

from typing import Any

from .registry import backend_for_native
from .spec import ModelSpec
from .weights import Weights, check_weights


class UnsupportedNativeModel(ValueError):
    """A native model has a layer or setting with no exact rnncore equivalent.

    rnncore refuses rather than approximates: `layer` names the layer, `reason` says why.
    """

    def __init__(self, layer: str, reason: str):
        self.layer = layer
        self.reason = reason
        super().__init__(f"{layer}: {reason}")


def from_native(model: Any, **options: Any) -> tuple[ModelSpec, Weights]:
    """The spec and canonical weights of a hand-written torch or Keras model.

    Options are backend specific (see `rnncore_torch.native.from_native` and
    `rnncore_tensorflow.native.from_native`); unknown layers raise `UnsupportedNativeModel`.

    Example:
        >>> spec, weights = rnncore.from_native(my_torch_classifier)
        >>> keras_model = rnncore.build(spec, backend="tensorflow", weights=weights)
    """
    spec, weights = backend_for_native(model).from_native(model, **options)
    return spec, check_weights(spec, weights)
