"""Running built models: eval-mode forward and gradients, traced once a model is reused.

Each model gets a forward and a gradient function, kept in a weak dictionary so that a
dropped model frees them (they hold the model only weakly). The first call of each runs
eagerly; the second traces one `tf.function` with relaxed batch/time sizes and every later
call reuses it. Tracing the gradient of a stacked RNN costs seconds and an eager call a
fraction of one, so a model asked once (a parity test) never pays for tracing, and a model
asked often gets the fast graph without a retrace per batch shape.

The forward of a batch shape that keeps coming back (a prediction or evaluation loop) may run
XLA-compiled (`_Forward`): on 2 CPU cores up to 1.6x faster than the graph at batch 64 and 4x
at batch 1, for ~0.5 s of compiling per shape and variant, though not for every model and
shape, so the paths are timed against each other and the fastest kept, along with the graph
traced again for that exact shape (static sizes: 1-8% faster than the shape-free graph, as
a hand-written `tf.function` loop over one shape is). Lengths are padded up
to a multiple of `XLA_STEP_MULTIPLE` (the model masks by `lengths`, so extra padding changes
nothing) to make shapes recur, and at most `XLA_MAX_SHAPES` shapes are compiled per model.
Outputs agree with the graph's to float rounding (~1e-7 in float32). `RNNCORE_KERAS_XLA=0`
turns the race off (every shape on the shape-free graph).

A batch without padding (every length equal to the batch's steps) of a model with masked
layers runs the model's mask-free `full_length_twin`, which takes the inputs alone (no
lengths to convert and pass, no select per step, exact shapes): at batch 1, length 128, a
1-layer LSTM's forward went from 2.68 to ~2.3 ms. Compiled, masks cost less and sometimes
help (Keras' masked loop ran 25% faster than its unmasked one for a 2-layer LSTM, 10% slower
for a 1-layer one), so XLA also compiles `fully_masked_twin` (every layer masked; lengths
filled in for unpadded batches) as one of the paths timed.
"""

from __future__ import annotations

import functools
import os
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from rnncore.crf import Allowed
from rnncore.spec import ModelSpec
from rnncore.weights import Weights

from . import convert
from .crf import decode_outputs
from .model import (
    crf_layer,
    full_length_twin,
    fully_masked_twin,
    masks_every_layer,
    masks_some_layer,
    spec_of,
)


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
        tensors = _as_tensors(args, self._signature)
        self._calls += 1
        if self._calls == 1:
            return self._fn(*tensors)
        if self._traced is None:
            self._traced = concrete(self._fn, self._signature)
        return self._traced(*tensors)


def concrete(fn: Callable[..., Any], signature: list[tf.TensorSpec], jit_compile: bool = False) -> Any:
    """`fn` traced once for `signature`, called as that concrete function from then on.

    A `tf.function` call binds and type-checks its arguments against every trace in Python
    before it runs (~0.3 ms a call on 2 cores, measured at batch 1, where an XLA-compiled
    forward takes ~0.8 ms); the concrete function of a fixed signature skips that. (XLA still
    compiles per input shape: `jit_compile` is an attribute of the traced function.)
    """
    return tf.function(fn, input_signature=signature, jit_compile=jit_compile).get_concrete_function()


def _as_tensors(arrays: tuple[Any, ...], signature: list[tf.TensorSpec]) -> list[Any]:
    return [tf.convert_to_tensor(a, s.dtype) for a, s in zip(arrays, signature, strict=True)]


XLA_STEP_MULTIPLE = 8
XLA_MAX_SHAPES = 32
XLA_COMPILE_S_GUESS = 0.5  # until a compile has been timed
# Timed calls of a shape on each path after its compile, interleaved: `XLA_TRIALS`, or fewer
# (at least `XLA_MIN_TRIALS`) once a path's trials add up to `XLA_TRIAL_S`. Short calls vary by
# +-20% on 2 busy cores: with 4 each, paths 5% apart (the graph and the graph traced for the
# shape, at ~13 ms a call) swapped verdicts from run to run of one model; calls of a second or
# more average the jitter out themselves. Trials are real calls, so more of them cost only the
# slower paths' extra time.
XLA_TRIALS = 8
XLA_MIN_TRIALS = 4
XLA_TRIAL_S = 1.0
# Short calls (under `XLA_LEAD_S`) race differently. A path's first call after another path's
# ran slow there, the XLA variants' most (XLA runs on threads of its own, idle while the graph
# ran): at a 5 ms forward (a 1-layer BiGRU at hidden 128, batch 64, length 32, masked; 2 cores)
# the masked XLA variant's trials, one call per turn, had a lower quartile of 5.3-6.7 ms against
# 4.2-4.7 in a loop of its own (5.4 in one slow process), and the race kept the graph, the
# slowest path in a loop (5.1-6.6 ms), for 3 of 4 fresh models. With each trial after an untimed
# lead call it kept the graph for none of 7 (the XLA variant for 2, the graph traced for the
# shape, 4.5-5.7 ms in a loop, for 5); with 16 such trials, the XLA variant for 7 of 14 and the
# graph for none. So a short call that opens a path's turn is a lead, untimed, and short calls
# get `XLA_SHORT_TRIALS`. In longer calls that ~1 ms is lost in the noise, and leads would
# only make the race longer.
XLA_LEAD_S = 0.05
XLA_SHORT_TRIALS = 16


def xla_enabled() -> bool:
    return os.environ.get("RNNCORE_KERAS_XLA", "1") != "0"


@functools.cache
def sees_gpu() -> bool:
    """Whether TensorFlow runs on a GPU in this process (fixed once its runtime has started).

    There Keras' LSTM and GRU layers take cuDNN's kernels, which XLA cannot compile (Keras sets
    `supports_jit = False` on such layers itself), so the XLA-compiled variants of the forward
    pass and of the whole training step are left out: every batch takes the graph. Untested on
    a GPU (see docs/gpu.md).
    """
    return bool(tf.config.list_logical_devices("GPU"))


Shape = tuple[int, int]
GRAPH = "graph"
SHAPED = "graph_for_shape"  # the graph traced again for one exact batch shape (static sizes)


class PathChooser:
    """Which path runs each batch shape: the graph, or a variant (XLA-compiled, or traced for it).

    A shape is compiled once the graph has spent as long on it as its compiles take (the last
    compile's time, per XLA variant; a guess before the first): never more than twice the time
    of the best choice in hindsight, so a few one-off batches (a validation pass of an epoch or
    two) stay on the graph, and a loop over one shape moves on within a second or two.

    Which path is fastest depends on the model and the shape, so it is measured: after the
    compiles, the next calls go round the paths (the graph and each variant), timed (see
    `XLA_TRIALS`; a short call that opens a path's turn is a lead, untimed: `XLA_LEAD_S`), and
    the shape stays on the path with the lowest lower quartile of its trials (`_fastest`). On 2
    cores XLA lost to the graph on a 1-layer LSTM at hidden 128, batch 64, length 128; compiled
    with every layer masked a 2-layer LSTM ran 25% faster than unmasked, a 1-layer one at hidden
    256 10% slower. (Round robin, because a busy machine's slow spells then hit every path
    alike; an earlier verdict of 3 XLA calls against the graph's mean before the compile
    flipped between runs of the same model.)

    The caller runs the path it is given and reports the time with `ran` (graph calls only
    once traced: eager calls and tracing say nothing about the graph's speed), or `failed()`
    when XLA cannot compile here, which keeps everything on the graph from then on (or
    `failed(variant)`, which leaves the other variants in the race). `fits(shape, variant)`,
    asked once per shape, leaves a variant out of that shape's race (one that would need too
    much memory there, say); a shape no variant fits stays on the graph.
    """

    def __init__(
        self,
        variants: list[str],
        fits: Callable[[Shape, str], bool] | None = None,
        stand_in: str | None = None,
        lead_s: float = XLA_LEAD_S,
    ):
        """`stand_in`: a variant that replaces the graph in a shape's race (the graph itself is
        not timed there), for a variant known never to lose to it beyond the trials' noise.
        `lead_s`: calls shorter than this open their path's turn with an untimed lead call."""
        self.variants = variants
        self._lead_s = lead_s
        self._fits = fits or (lambda shape, variant: True)
        self._stand_in = stand_in
        self._graph_s: defaultdict[Shape, float] = defaultdict(float)
        self._trials: dict[Shape, dict[str, list[float]]] = {}  # compiled shapes' timed calls by path
        self._compiled_paths: defaultdict[Shape, set[str]] = defaultdict(set)
        self._verdict: dict[Shape, str] = {}  # the path a shape stays on, once the trials are done
        self._led: dict[Shape, str] = {}  # the path whose lead call just ran: its trial is next
        self._compile_s = XLA_COMPILE_S_GUESS
        if not xla_enabled() or sees_gpu():
            self.variants = []

    @property
    def paths(self) -> list[str]:
        return [GRAPH, *self.variants]

    @property
    def compiled_shapes(self) -> set[Shape]:
        """The shapes XLA was given (compiled, or failed to compile)."""
        return set(self._trials)

    @property
    def decided(self) -> dict[Shape, str]:
        """The shapes whose trials are done, and the path each stays on."""
        return dict(self._verdict)

    def race(self, shape: Shape) -> dict[str, Any]:
        """What the race for `shape` found: the path it kept (None: undecided) and each path's
        trials' lower quartile in ms, the figure it compares (for benchmarks and bug reports)."""
        trials = self._trials.get(shape, {})
        q25_ms = {path: round(1000 * float(np.percentile(t, 25)), 3) for path, t in trials.items() if t}
        return {"path": self._verdict.get(shape), "trials_q25_ms": q25_ms}

    def settled(self, shape: Shape) -> bool:
        """Whether the path for `shape` is final (timed runs start here)."""
        return (
            not self.variants
            or shape in self._verdict
            or (shape not in self._trials and len(self._trials) >= XLA_MAX_SHAPES)
        )

    def failed(self, variant: str | None = None) -> None:
        """`variant` cannot run here (None: no variant can): the rest go on, the graph always."""
        self.variants = [] if variant is None else [v for v in self.variants if v != variant]
        for trials in self._trials.values():
            for path in set(trials) - set(self.paths):
                del trials[path]

    def compiled(self, shape: Shape, path: str) -> bool:
        return path in self._compiled_paths[shape]

    def path(self, shape: Shape) -> str:
        if not self.variants:
            return GRAPH
        if shape in self._verdict:
            return self._verdict[shape]
        if shape in self._trials:  # compile each variant, then round robin, fewest trials first
            trials = self._trials[shape]
            uncompiled = [p for p in trials if p != GRAPH and not self.compiled(shape, p)]
            if uncompiled:
                return uncompiled[0]
            if self._led.get(shape) in trials:
                return self._led[shape]
            return min(trials, key=lambda p: len(trials[p]))
        cost = self._compile_s * len(self.variants)
        if self._graph_s.get(shape, 0.0) >= cost and len(self._trials) < XLA_MAX_SHAPES:
            racing = [v for v in self.variants if self._fits(shape, v)]
            if not racing:
                self._verdict[shape] = GRAPH
                return GRAPH
            graph = [] if self._stand_in in racing else [GRAPH]
            self._trials[shape] = {p: [] for p in (*graph, *racing)}
            return racing[0]
        return GRAPH

    def ran(self, shape: Shape, path: str, elapsed: float) -> None:
        """`path` ran a batch of `shape` in `elapsed` seconds (a variant's first run: its compile)."""
        if path == GRAPH:
            self._graph_s[shape] += elapsed
        elif not self.compiled(shape, path):
            self._compiled_paths[shape].add(path)
            self._compile_s = elapsed
            return
        if shape not in self._trials or shape in self._verdict or path not in self._trials[shape]:
            return  # (the graph, where a stand-in races for it: after a failed compile, say)
        if self._led.pop(shape, None) != path and elapsed < self._lead_s:
            self._led[shape] = path  # the turn's lead call
            return
        trials = self._trials[shape]
        trials[path].append(elapsed)
        if all(_trials_done(times) for times in trials.values()):
            self._verdict[shape] = _fastest(trials)


def _trials_done(times: list[float]) -> bool:
    if len(times) >= XLA_MIN_TRIALS and sum(times) >= XLA_TRIAL_S:
        return True
    short = bool(times) and float(np.median(times)) < XLA_LEAD_S
    return len(times) >= (XLA_SHORT_TRIALS if short else XLA_TRIALS)


class _Forward:
    """Eval-mode forward: eager, then the traced graph; for shapes that recur, the graph traced
    for that exact shape and the XLA-compiled variants too (the path per shape is
    `PathChooser`'s).

    A graph of static shapes ran 1-8% faster than the shape-free one (2 cores, interleaved,
    medians of 10 rounds; a 1-layer BiLSTM at hidden 128, batch 64, length 32, where the graph
    is the path to beat: 14.2 against 15.0 ms over three runs, XLA 17.2; a BiGRU there 11.4
    against 12.2), and slower once (a 1-layer LSTM at batch 1, where XLA won by 3x anyway):
    TensorFlow's optimiser and Keras' loops do more with known sizes, and a hand-written
    `tf.function` loop over one shape gets that for free. The trace costs about as much as an
    XLA compile, and only shapes that recur pay it.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        xla_fns: dict[str, Callable[[], Callable[..., Any]]],
        spec: ModelSpec,
        full_length: bool = False,
    ):
        """`fn(inputs, lengths)`, or with `full_length` `fn(inputs)` for batches without padding
        (their shapes are kept exact: padding steps would make them padded). `xla_fns`: by
        path name, a maker of a function of the same arguments and result to compile."""
        self._signature = input_signature(spec)[:1] if full_length else input_signature(spec)
        self._fn = fn
        self._graph = _TracedOnReuse(fn, self._signature)
        self._xla_makers = xla_fns
        self._xla: dict[str, Any] = {}  # path -> its jit-compiled concrete function, once used
        self._shaped: dict[Shape, Any] = {}  # shape -> the graph traced for it, once used
        self._spec = spec
        self._step_multiple = 1 if full_length else XLA_STEP_MULTIPLE
        self.chooser = PathChooser([*xla_fns, SHAPED])

    def settled(self, inputs: np.ndarray) -> bool:
        """Whether the path for batches shaped like `inputs` is final (timed runs start here)."""
        return self.chooser.settled(self._shape(inputs))

    def race(self, inputs: np.ndarray) -> dict[str, Any]:
        """The race for batches shaped like `inputs` (`PathChooser.race`)."""
        return self.chooser.race(self._shape(inputs))

    def _shape(self, inputs: np.ndarray) -> Shape:
        return (inputs.shape[0], -(-inputs.shape[1] // self._step_multiple) * self._step_multiple)

    def __call__(self, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        shape = self._shape(inputs)
        path = self.chooser.path(shape)
        if path != GRAPH:
            try:
                return self._run_for_shape(path, shape, inputs, lengths)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
                if path == SHAPED:
                    raise  # the graph's own error: the graph would raise it too
                for variant in self._xla_makers:  # an op XLA cannot compile here
                    self.chooser.failed(variant)
        traced = self._graph.traced
        start = time.perf_counter()
        out = self._graph(*self._args(inputs, lengths)).numpy()
        if traced:  # eager calls and tracing say nothing about the graph's speed
            self.chooser.ran(shape, GRAPH, time.perf_counter() - start)
        return out

    def _run_for_shape(self, path: str, shape: Shape, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """`path` (an XLA variant or the graph traced for `shape`) on the batch padded to `shape`;
        its first run per shape includes its compile or trace, which `ran` takes as such."""
        steps = inputs.shape[1]
        args = self._args(_pad_steps(self._spec, inputs, shape[1]), lengths)
        start = time.perf_counter()
        out = self._function(path, shape, args)(*_as_tensors(args, self._signature))
        out = out[:, :steps] if self._spec.per_step_output else out
        result = out.numpy()  # inside the timing: the graph's calls are timed to their result too
        self.chooser.ran(shape, path, time.perf_counter() - start)
        return result

    def _function(self, path: str, shape: Shape, args: tuple[np.ndarray, ...]) -> Any:
        if path == SHAPED:
            if shape not in self._shaped:
                exact = [tf.TensorSpec(a.shape, s.dtype) for a, s in zip(args, self._signature, strict=True)]
                self._shaped[shape] = concrete(self._fn, exact)
            return self._shaped[shape]
        if path not in self._xla:  # one function for every shape: XLA compiles per shape itself
            self._xla[path] = concrete(self._xla_makers[path](), self._signature, jit_compile=True)
        return self._xla[path]

    def _args(self, inputs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
        return (inputs, lengths)[: len(self._signature)]


def dense(grads: list[Any]) -> list[Any]:
    """Gradients as dense tensors (an embedding's comes as `IndexedSlices`, the rows looked up;
    torch's optimizers update every row, as dense gradients do)."""
    return [tf.convert_to_tensor(g) for g in grads]


def _fastest(trials: dict[str, list[float]]) -> str:
    """The path with the lowest lower-quartile time (ties: the first, the graph).

    Not the median: noise on a shared machine only ever slows a call down, and it does not hit
    the paths alike within a few rounds. The first calls after the compiles ran slow on every
    path (2 cores, a 2-layer GRU at batch 64, length 512, hidden 128, masked: the graph's first
    two trials 85-94 ms against 72-76 after, the masked XLA variant's first four 65-80 against
    61-63 after), and in one of two runs of that model the median then kept the unmasked
    variant, 72 ms in steady state against the masked one's 62 (the hand-written Keras+XLA
    step: 62). The lower quartile of 8 trials stands up to 5 slow ones.
    """
    return min(trials, key=lambda path: float(np.percentile(trials[path], 25)))


def _pad_steps(spec: ModelSpec, inputs: np.ndarray, steps: int) -> np.ndarray:
    """`inputs` right-padded to `steps` steps (with the padding id, or zeros)."""
    extra = steps - inputs.shape[1]
    if extra == 0:
        return inputs
    fill = (spec.input.padding_idx or 0) if spec.input.kind == "tokens" else 0
    widths = [(0, 0), (0, extra)] + [(0, 0)] * (inputs.ndim - 2)
    return np.pad(inputs, widths, constant_values=fill)


def _eval_call(model: Any) -> Callable[[Any, Any], Any]:
    return lambda x, lengths: model([x, lengths], training=False)


def _full_length_call(model: Any) -> Callable[[Any], Any]:
    """`model` on inputs alone, every row valid to the end."""

    def run(x: Any) -> Any:
        shape = tf.shape(x)
        return model([x, tf.fill(shape[:1], shape[1])], training=False)

    return run


class _Runner:
    """A model's forward and gradient functions and the bindings that name its gradients.

    Forward paths (see `_Forward`): padded batches run the model as built, in the graph, or
    compiled with every layer masked or as built (one variant if it masks every layer already);
    batches without padding (of a model with masked layers) run its mask-free twin in the graph,
    or compiled with every layer masked or none. The twins hold the model's layers, not the
    model, and are built when first used.
    """

    def __init__(self, model: Any):
        spec = spec_of(model)
        self._model = weakref.ref(model)
        self.bindings = convert.bindings(spec, model)
        variables = [b.variable for b in self.bindings]
        features = spec.input.kind == "features"
        signature = input_signature(spec)

        def forward(x: Any, lengths: Any) -> Any:
            return _eval_call(self._model_alive())(x, lengths)

        def gradient(x: Any, lengths: Any, cotangent: Any) -> Any:
            with tf.GradientTape() as tape:
                if features:
                    tape.watch(x)
                outputs = forward(x, lengths)
                loss = tf.reduce_sum(outputs * cotangent)
            sources = [*variables, x] if features else variables
            grads = tape.gradient(loss, sources)
            # A CRF's weights do not reach the outputs (its layer passes them through): zero.
            # (UnconnectedGradients.ZERO fails on Keras variables, whose dtype is a string.)
            grads = [
                tf.zeros(s.shape, s.dtype) if g is None else g for g, s in zip(grads, sources, strict=True)
            ]
            return outputs, dense(grads)  # callers want numpy arrays of every weight's shape

        compiled = {"xla_masked": lambda: _eval_call(fully_masked_twin(self._model_alive()))}
        if not masks_every_layer(spec):
            compiled["xla"] = lambda: forward
        self.forward = _Forward(forward, compiled, spec)
        self.gradient = _TracedOnReuse(gradient, [*signature, tf.TensorSpec(None, spec.dtype)])
        self._full_forward: _Forward | None = None
        self._has_twin = masks_some_layer(spec)

    def _model_alive(self) -> Any:
        model = self._model()
        assert model is not None, "the runner lives only as long as its model"
        return model

    def forward_for(self, inputs: np.ndarray, lengths: np.ndarray) -> _Forward:
        """The forward for this batch: the mask-free twin's if nothing is padded."""
        if not self._has_twin or int(lengths.min()) != inputs.shape[1]:
            return self.forward
        if self._full_forward is None:
            model = self._model_alive()
            compiled = {
                "xla_masked": lambda: _full_length_call(fully_masked_twin(self._model_alive())),
                "xla_unmasked": lambda: _full_length_call(full_length_twin(self._model_alive())),
            }
            graph = _full_length_call(full_length_twin(model))
            self._full_forward = _Forward(graph, compiled, spec_of(model), full_length=True)
        return self._full_forward


_runners: weakref.WeakKeyDictionary[Any, _Runner] = weakref.WeakKeyDictionary()


def input_signature(spec: ModelSpec, names: tuple[str, str] | None = None) -> list[tf.TensorSpec]:
    """The model's (inputs, lengths), batch and time sizes free; `names` for exported signatures."""
    x_name, lengths_name = names or (None, None)
    if spec.input.kind == "tokens":
        x = tf.TensorSpec((None, None), tf.int64, name=x_name)
    else:
        x = tf.TensorSpec((None, None, spec.input.feature_dim), spec.dtype, name=x_name)
    return [x, tf.TensorSpec((None,), tf.int32, name=lengths_name)]


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


def decode(model: Any, inputs: np.ndarray, lengths: np.ndarray, allowed: Allowed | None = None) -> np.ndarray:
    """A tagger's best tag paths (B, T) int64: Viterbi for a CRF head, argmax (or constrained
    Viterbi over log-probabilities, under `allowed`) for a softmax one."""
    head = spec_of(model).head
    assert head is not None
    outputs = tf.constant(predict(model, inputs, lengths))
    return decode_outputs(head.num_outputs, crf_layer(model), outputs, tf.constant(lengths), allowed).numpy()


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
