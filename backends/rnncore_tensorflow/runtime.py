"""Running built models: eval-mode forward and gradients, traced once a model is reused.

Each model gets a forward and a gradient function, kept in a weak dictionary so that a
dropped model frees them (they hold the model only weakly). The first call of each runs
eagerly; the second traces one `tf.function` with relaxed batch/time sizes and every later
call reuses it. Tracing the gradient of a stacked RNN costs seconds and an eager call a
fraction of one, so a model asked once (a parity test) never pays for tracing, and a model
asked often gets the fast graph without a retrace per batch shape.

The forward of a batch shape that keeps coming back (a prediction or evaluation loop) runs
XLA-compiled (`_Forward`): on 2 CPU cores 1.1-1.6x faster than the graph at batch 64 and 4x
at batch 1, for ~0.5 s of compiling per shape. Lengths are padded up to a multiple of `XLA_STEP_MULTIPLE`
(the model masks by `lengths`, so extra padding changes nothing) to make shapes recur, and at
most `XLA_MAX_SHAPES` shapes are compiled per model. Outputs agree with the graph's to float
rounding (~1e-7 in float32). `RNNCORE_KERAS_XLA=0` turns it off.

A batch without padding (every length equal to the batch's steps) of a model with masked
layers runs the model's mask-free `full_length_twin`, which takes the inputs alone (no
lengths to convert and pass, no select per step, exact shapes): at batch 1, length 128, a
1-layer LSTM's forward went from 2.68 to ~2.3 ms.
"""

from __future__ import annotations

import os
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from rnncore.spec import ModelSpec
from rnncore.weights import Weights

from . import convert
from .model import full_length_twin, masks_some_layer, spec_of


class _TracedOnReuse:
    """`fn` run eagerly on the first call, then through one traced `tf.function`."""

    def __init__(self, fn: Callable[..., Any], signature: list[tf.TensorSpec]):
        self._fn = fn
        self._signature = signature
        self._traced: Any = None
        self._calls = 0

    @property
    def traced(self) -> bool:
        return self._traced is not None

    def __call__(self, *args: Any) -> Any:
        tensors = [tf.convert_to_tensor(a, s.dtype) for a, s in zip(args, self._signature, strict=True)]
        self._calls += 1
        if self._calls == 1:
            return self._fn(*tensors)
        if self._traced is None:
            self._traced = tf.function(self._fn, input_signature=self._signature)
        return self._traced(*tensors)


XLA_STEP_MULTIPLE = 8
XLA_MAX_SHAPES = 32
XLA_COMPILE_S_GUESS = 0.5  # until a compile has been timed
XLA_TRIALS = 4  # timed calls of a shape on each path after its compile, interleaved


def xla_enabled() -> bool:
    return os.environ.get("RNNCORE_KERAS_XLA", "1") != "0"


class _Forward:
    """Eval-mode forward: eager, then the traced graph, then XLA for shapes that recur.

    A shape is compiled once the graph has spent as long on it as a compile takes (the last
    compile's time; a guess before the first): never more than twice the time of the better
    choice in hindsight, so a few one-off batches (a validation pass of an epoch or two) stay
    on the graph, and a prediction loop moves to XLA within a second. XLA is not faster for
    every model and shape (on 2 cores it lost to the graph on a 1-layer LSTM at hidden 128,
    batch 64, length 128), so the next 2 x `XLA_TRIALS` calls after the compile alternate
    between XLA and the graph, timed, and the shape stays on XLA only if its median time beats
    the graph's. (Interleaved, because a busy machine's slow spells hit both paths alike; an
    earlier verdict of 3 XLA calls against the graph's mean before the compile flipped between
    runs of the same model.)
    """

    def __init__(self, fn: Callable[..., Any], spec: ModelSpec, full_length: bool = False):
        """`fn(inputs, lengths)`, or with `full_length` `fn(inputs)` for batches without padding
        (their shapes are kept exact: padding steps would make them padded)."""
        self._signature = _signature(spec)[:1] if full_length else _signature(spec)
        self._graph = _TracedOnReuse(fn, self._signature)
        self._fn = fn
        self._spec = spec
        self._step_multiple = 1 if full_length else XLA_STEP_MULTIPLE
        self._xla: Any = None
        self._graph_s: defaultdict[tuple[int, int], float] = defaultdict(float)
        self._graph_calls: defaultdict[tuple[int, int], int] = defaultdict(int)
        self._trials: dict[tuple[int, int], list[float]] = {}  # compiled shapes' timed XLA calls
        self._graph_trials: defaultdict[tuple[int, int], list[float]] = defaultdict(list)
        self._verdict: dict[tuple[int, int], str] = {}  # "xla" or "graph", once the trials are done
        self._compile_s = XLA_COMPILE_S_GUESS
        self._xla_failed = not xla_enabled()

    @property
    def _compiled(self) -> set[tuple[int, int]]:
        return set(self._trials)

    @property
    def decided(self) -> dict[tuple[int, int], str]:
        """The shapes whose trials are done, and the path each stays on."""
        return dict(self._verdict)

    def settled(self, inputs: np.ndarray) -> bool:
        """Whether the path for batches shaped like `inputs` is final (timed runs start here)."""
        shape = self._shape(inputs)
        return (
            self._xla_failed
            or shape in self._verdict
            or (shape not in self._trials and len(self._trials) >= XLA_MAX_SHAPES)
        )

    def _shape(self, inputs: np.ndarray) -> tuple[int, int]:
        return (inputs.shape[0], -(-inputs.shape[1] // self._step_multiple) * self._step_multiple)

    def __call__(self, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        steps = inputs.shape[1]
        shape = self._shape(inputs)
        if self._use_xla(shape):
            try:
                return self._run_xla(shape, _pad_steps(self._spec, inputs, shape[1]), lengths, steps)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
                self._xla_failed = True  # an op XLA cannot compile here; the graph computes the same
        traced = self._graph.traced
        start = time.perf_counter()
        out = self._graph(*self._args(inputs, lengths)).numpy()
        if traced:  # eager calls and tracing say nothing about the graph's speed
            elapsed = time.perf_counter() - start
            self._graph_s[shape] += elapsed
            self._graph_calls[shape] += 1
            if shape in self._trials and shape not in self._verdict:
                self._graph_trials[shape].append(elapsed)
                self._decide(shape)
        return out

    def _use_xla(self, shape: tuple[int, int]) -> bool:
        if self._xla_failed or self._verdict.get(shape) == "graph":
            return False
        if shape in self._trials:  # decided for XLA, or trials alternating (XLA first)
            return shape in self._verdict or len(self._trials[shape]) <= len(self._graph_trials[shape])
        return self._graph_s[shape] >= self._compile_s and len(self._trials) < XLA_MAX_SHAPES

    def _run_xla(
        self, shape: tuple[int, int], inputs: np.ndarray, lengths: np.ndarray, steps: int
    ) -> np.ndarray:
        if self._xla is None:
            self._xla = tf.function(self._fn, input_signature=self._signature, jit_compile=True)
        start = time.perf_counter()
        args = self._args(inputs, lengths)
        out = self._xla(
            *(tf.convert_to_tensor(a, s.dtype) for a, s in zip(args, self._signature, strict=True))
        )
        out = out[:, :steps] if self._spec.per_step_output else out
        result = out.numpy()  # inside the timing: the graph's calls are timed to their result too
        elapsed = time.perf_counter() - start
        if shape not in self._trials:
            self._trials[shape] = []
            self._compile_s = elapsed
        elif shape not in self._verdict:
            self._trials[shape].append(elapsed)
            self._decide(shape)
        return result

    def _decide(self, shape: tuple[int, int]) -> None:
        xla_s, graph_s = self._trials[shape], self._graph_trials[shape]
        if len(xla_s) >= XLA_TRIALS and len(graph_s) >= XLA_TRIALS:
            self._verdict[shape] = "xla" if _xla_is_faster(xla_s, graph_s) else "graph"

    def _args(self, inputs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
        return (inputs, lengths)[: len(self._signature)]


def _xla_is_faster(xla_s: list[float], graph_s: list[float]) -> bool:
    return float(np.median(xla_s)) < float(np.median(graph_s))


def _pad_steps(spec: ModelSpec, inputs: np.ndarray, steps: int) -> np.ndarray:
    """`inputs` right-padded to `steps` steps (with the padding id, or zeros)."""
    extra = steps - inputs.shape[1]
    if extra == 0:
        return inputs
    fill = (spec.input.padding_idx or 0) if spec.input.kind == "tokens" else 0
    widths = [(0, 0), (0, extra)] + [(0, 0)] * (inputs.ndim - 2)
    return np.pad(inputs, widths, constant_values=fill)


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

        self.forward = _Forward(forward, spec)
        self.gradient = _TracedOnReuse(gradient, [*signature, tf.TensorSpec(None, spec.dtype)])
        self._model = ref
        self._full_forward: _Forward | None = None
        self._has_twin = masks_some_layer(spec)

    def forward_for(self, inputs: np.ndarray, lengths: np.ndarray) -> _Forward:
        """The forward that computes this batch fastest: the mask-free twin's if nothing is padded."""
        if not self._has_twin or int(lengths.min()) != inputs.shape[1]:
            return self.forward
        if self._full_forward is None:
            model = self._model()
            assert model is not None, "the runner lives only as long as its model"
            twin = full_length_twin(model)  # holds the model's layers, not the model

            def full_forward(x: Any) -> Any:
                shape = tf.shape(x)
                return twin([x, tf.fill(shape[:1], shape[1])], training=False)

            self._full_forward = _Forward(full_forward, spec_of(model), full_length=True)
        return self._full_forward


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
    lengths = lengths.astype(np.int32)
    out = _runner(model).forward_for(inputs, lengths)(inputs, lengths)
    return np.asarray(out, dtype=spec_of(model).dtype)


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
