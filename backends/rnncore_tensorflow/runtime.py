"""Running built models: eval-mode forward and gradients, traced once a model is reused.

Each model gets a forward and a gradient function, kept in a weak dictionary so that a
dropped model frees them (they hold the model only weakly). The first call of each runs
eagerly; the second traces one `tf.function` with relaxed batch/time sizes and every later
call reuses it. Tracing the gradient of a stacked RNN costs seconds and an eager call a
fraction of one, so a model asked once (a parity test) never pays for tracing, and a model
asked often gets the fast graph without a retrace per batch shape.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from rnncore.spec import ModelSpec
from rnncore.weights import Weights

from . import convert
from .model import spec_of


class _TracedOnReuse:
    """`fn` run eagerly on the first call, then through one traced `tf.function`."""

    def __init__(self, fn: Callable[..., Any], signature: list[tf.TensorSpec]):
        self._fn = fn
        self._signature = signature
        self._traced: Any = None
        self._calls = 0

    def __call__(self, *args: Any) -> Any:
        tensors = [tf.convert_to_tensor(a, s.dtype) for a, s in zip(args, self._signature, strict=True)]
        self._calls += 1
        if self._calls == 1:
            return self._fn(*tensors)
        if self._traced is None:
            self._traced = tf.function(self._fn, input_signature=self._signature)
        return self._traced(*tensors)


class _Runner:
    """A model's forward and gradient functions and the bindings that name its gradients."""

    def __init__(self, model: Any):
        spec = spec_of(model)
        ref = weakref.ref(model)
        self.bindings = convert.bindings(spec, model)
        variables = [b.variable for b in self.bindings]
        features = spec.input.kind == "features"
        signature = _signature(spec)

        def forward(x: Any, lengths: Any) -> Any:
            model = ref()
            assert model is not None, "the runner lives only as long as its model"
            return model([x, lengths], training=False)

        def gradient(x: Any, lengths: Any, cotangent: Any) -> Any:
            with tf.GradientTape() as tape:
                if features:
                    tape.watch(x)
                outputs = forward(x, lengths)
                loss = tf.reduce_sum(outputs * cotangent)
            sources = [*variables, x] if features else variables
            grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # the embedding's gradient is IndexedSlices (rows looked up); callers want dense
            return outputs, [tf.convert_to_tensor(g) for g in grads]

        self.forward = _TracedOnReuse(forward, signature)
        self.gradient = _TracedOnReuse(gradient, [*signature, tf.TensorSpec(None, spec.dtype)])


_runners: weakref.WeakKeyDictionary[Any, _Runner] = weakref.WeakKeyDictionary()


def _signature(spec: ModelSpec) -> list[tf.TensorSpec]:
    if spec.input.kind == "tokens":
        x = tf.TensorSpec((None, None), tf.int64)
    else:
        x = tf.TensorSpec((None, None, spec.input.feature_dim), spec.dtype)
    return [x, tf.TensorSpec((None,), tf.int32)]


def _output_shape(spec: ModelSpec, batch: int, steps: int) -> tuple[int, ...]:
    width = spec.head.num_outputs if spec.head is not None else spec.features_size
    return (batch, steps, width) if spec.per_step_output else (batch, width)


def _runner(model: Any) -> _Runner:
    runner = _runners.get(model)
    if runner is None:
        runner = _runners[model] = _Runner(model)
    return runner


def predict(model: Any, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Eval-mode outputs for a checked batch (see `rnncore.prepare_batch`), as numpy.

    Args:
        model: a model from `build`.
        inputs: int64 ids `(B, T)` or features `(B, T, F)` in the spec's dtype.
        lengths: int64 `(B,)`, each in 1..T.
    Returns:
        The outputs in the spec's dtype.
    """
    out = _runner(model).forward(inputs, lengths.astype(np.int32))
    return np.asarray(out.numpy(), dtype=spec_of(model).dtype)


def value_and_grad(
    model: Any, inputs: np.ndarray, lengths: np.ndarray, cotangent: np.ndarray
) -> tuple[np.ndarray, Weights, np.ndarray | None]:
    """Outputs and gradients of `sum(outputs * cotangent)` in eval mode.

    Args:
        model, inputs, lengths: as for `predict`.
        cotangent: an array of the outputs' shape.
    Returns:
        (outputs, gradients by canonical weight name, gradient w.r.t. the features, or None
        for token ids), all numpy in the spec's dtype.
    """
    spec = spec_of(model)
    runner = _runner(model)
    cotangent = np.asarray(cotangent, dtype=spec.dtype)
    expected = _output_shape(spec, inputs.shape[0], inputs.shape[1])
    if cotangent.shape != expected:
        # checked here: `outputs * cotangent` would broadcast some wrong shapes silently
        raise ValueError(f"cotangent has shape {cotangent.shape}; the outputs have {expected}")
    outputs, grads = runner.gradient(inputs, lengths.astype(np.int32), cotangent)
    arrays = [g.numpy() for g in grads]
    input_grad = arrays.pop() if spec.input.kind == "features" else None
    return outputs.numpy(), convert.to_canonical(runner.bindings, arrays), input_grad
