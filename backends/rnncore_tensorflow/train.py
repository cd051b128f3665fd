"""Training steps on Keras/TensorFlow with the update rules of `rnncore.train.config`.

Keras' own optimizers differ from torch.optim in small ways that add up (Adam's epsilon sits
before the bias correction, `clipnorm` is per variable, the learning rate is a float32
variable even for float64 models). So the update is written out here, op for op in the order
torch's single-tensor CPU path uses, in the model's dtype, on one traced `tf.function`.

The update (clipping and optimizer) is compiled by XLA, which fuses the elementwise ops into
one pass per variable: op by op, every op is a pass over memory (Adam on a 20000x128
embedding: 10 ms per step on 2 cores, 3.4 ms compiled). XLA keeps the float operations
(no fast-math on CPU), so results stay torch's; TensorFlow's own fused `ResourceApplyAdam`
would be as fast but computes `1 - beta2` in float32 (1.3e-5 relative off torch's), which
moves float32 weights beyond the training tolerance within 50 steps.

The whole step (forward, backward and update) compiled by XLA is faster still on some shapes
and slower on others: on 2 cores 1.3-1.9x faster at batch 1 and hidden 128, 15% faster for a
GRU at hidden 512, batch 64, 10-50% slower for LSTMs at batch 64. So each batch shape that
recurs is decided as the forward's are (`runtime.PathChooser`): the graph's step first, the
whole step compiled once the graph has spent as long on the shape as a compile takes (1-2 s),
then both timed in turn and the faster kept. Results agree to float rounding either way, but
which path a shape takes depends on timing, so two runs of one seed can differ in the last
bits (as with cuDNN's autotuning); `RNNCORE_KERAS_XLA=0` keeps every step on one path (the
graph, op by op). Batches are checked in numpy before the step
(`check_training_batch`): compiled, an out-of-range label would train on NaN, not raise.

Optimizer slots live in native layout, one per Keras variable, and are exchanged in canonical
names through the same bindings as the weights (the layout maps are permutations and
transposes, which commute with the elementwise optimizer math).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnncore.spec import ModelSpec
from rnncore.train.config import TrainConfig, dropout_seed
from rnncore.train.losses import CRF_LOSS, IGNORE_INDEX, check_training_batch, loss_name
from rnncore.weights import Weights, canonical_shapes

from . import convert
from .crf import Crf
from .model import crf_layer, full_length_twin, masks_some_layer, spec_of
from .runtime import GRAPH, SHAPED, PathChooser, concrete, dense, input_signature, xla_enabled

XLA = "xla"  # the whole step compiled (forward, backward and update)
# XLA's whole step holds about 1.1-1.7x one copy of every recurrent weight matrix per time step
# (measured, float32: a GRU 1L bi at hidden 512, length 512 took 5.4 GB at batch 1, 5.9 GB at
# batch 16, unidirectional 2.1 GB, where the graph's step takes 0.5 GB; a 2-layer BiGRU there
# was killed for memory at 24 GB). It does not depend on the batch and grows with length x
# weights, so a model that trains fine on the graph can exhaust memory compiled.
XLA_STEP_BYTES_PER_WEIGHT_STEP = 1.7
XLA_STEP_MAX_BYTES = 2 * 2**30  # shapes estimated above this stay off the whole-step XLA path

# Steps shorter than this race with a lead call opening each path's turn (as short forwards
# do, `runtime.XLA_LEAD_S`), because a step right after the other path's step can run slow for
# a while: a 2-layer LSTM at batch 1, length 32, hidden 512 (~48 ms steps) alternating one step
# per path ran, in some fresh processes, its graph traced for the shape at 53-60 ms after each
# XLA step against 47.7 in a loop of its own (XLA: 51-52 either way). Racing one step per turn,
# 3 of 17 processes kept XLA (55-58 ms a step in a loop in most processes); with leads, 0 of 15.
# The benchmark had timed rnncore at 0.85-0.92x the hand-written graph step in the sittings
# where the race kept XLA there (0.94-1.02 where it kept the graph).
STEP_LEAD_S = 0.2
_SLOTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq")}


def compute_loss(name: str, outputs: Any, targets: Any, lengths: Any, crf: Crf | None = None) -> Any:
    if name == "cross_entropy":
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=outputs))
    if name == "binary_cross_entropy":
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=outputs))
    if name == "mean_squared_error":
        return tf.reduce_mean(tf.square(outputs - targets))
    steps = tf.shape(targets)[1]
    valid = (tf.range(steps)[None, :] < tf.cast(lengths, tf.int32)[:, None]) & (targets != IGNORE_INDEX)
    if name == CRF_LOSS:  # the chain of labelled steps (`rnncore.train.losses.labelled_first`)
        assert crf is not None
        order = tf.argsort(tf.cast(~valid, tf.int32), axis=1, stable=True)
        counts = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
        emissions = tf.gather(outputs, order, axis=1, batch_dims=1)
        ll = crf.log_likelihood(
            emissions, tf.gather(targets, order, axis=1, batch_dims=1), tf.maximum(counts, 1)
        )
        total = -tf.reduce_sum(tf.where(counts > 0, ll, tf.zeros_like(ll)))
        return total / tf.cast(tf.maximum(tf.reduce_sum(counts), 1), outputs.dtype)
    per_step = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.where(valid, targets, 0), logits=outputs
    )
    valid_f = tf.cast(valid, outputs.dtype)
    return tf.reduce_sum(per_step * valid_f) / tf.maximum(tf.reduce_sum(valid_f), 1.0)


def step_signature(spec: ModelSpec) -> list[tf.TensorSpec]:
    """(inputs, lengths, targets, learning rate) of a training step, batch and time sizes free."""
    assert spec.head is not None
    if loss_name(spec) in ("binary_cross_entropy", "mean_squared_error"):
        targets = tf.TensorSpec([None, spec.head.num_outputs], spec.dtype)
    elif spec.head.task == "tagging":
        targets = tf.TensorSpec([None, None], tf.int64)
    else:
        targets = tf.TensorSpec([None], tf.int64)
    return [*input_signature(spec), targets, tf.TensorSpec([], tf.float64)]


def xla_step_bytes(spec: ModelSpec, steps: int) -> float:
    """Estimated memory of the whole training step compiled by XLA for `steps` time steps."""
    shapes = canonical_shapes(spec)
    recurrent = sum(int(np.prod(shape)) for name, shape in shapes.items() if name.endswith(("W_ih", "W_hh")))
    itemsize = np.dtype(spec.dtype).itemsize
    return XLA_STEP_BYTES_PER_WEIGHT_STEP * steps * recurrent * itemsize


def xla_step_fits(spec: ModelSpec, steps: int) -> bool:
    """Whether the whole step compiled for `steps` time steps stays within `XLA_STEP_MAX_BYTES`."""
    return xla_step_bytes(spec, steps) <= XLA_STEP_MAX_BYTES


class _StepPaths:
    """One training step, run per batch shape on one of three paths, as `PathChooser` decides:
    the graph traced once for any shape (first); once a shape has recurred long enough to pay
    for it, the whole step compiled by XLA, and the graph traced again for that exact shape;
    those two timed in turn, the faster kept.

    The shape-free graph is not in that race: the graph traced for the shape stands in for it.
    Interleaved over 6-10 rounds it was never slower (2 cores, against the shape-free graph:
    2-layer BiGRU at batch 64, length 128, hidden 512, masked: 2.5% faster; 1-layer BiLSTM at
    batch 1, length 512, hidden 512: 4.5%; at batch 64, hidden 128: 9%), but at steps of
    0.5-4 s each, 4 trials apiece let noise pick the shape-free graph in two benchmark sittings,
    which then ran 6-10% slower than a hand-written `tf.function` step (traced for the shape).

    A graph of static shapes is 10-15% faster than the shape-free one on 2 cores (measured:
    2-layer BiRNN at batch 64, length 32, masked: 50 vs 56 ms; GRU at batch 1, length 32: 11.6
    vs 13.6 ms): TensorFlow's optimiser and Keras' recurrent loops do more with known sizes.
    Hand-written `tf.function` steps get it for free on a loop over one shape, and pay a trace
    (1-2 s) for every new shape, which a bucketed epoch is full of; here only recurring shapes
    pay it. Every trial is a real step: the paths compute the same update (to float rounding),
    so the trials train as well as any other step. Shapes are exact (a training batch is not
    padded to recur: padded steps would cost their backward pass too).
    """

    def __init__(self, step: Callable[..., Any], signature: list[tf.TensorSpec], xla: bool, spec: ModelSpec):
        self._step, self._signature = step, signature
        self._graph: Any = None
        self._graph_ran = False  # its first run pays one-time work (graph optimisation): untimed
        self._xla: Any = None
        self._shaped: dict[tuple[int, int], Any] = {}  # the graph traced per shape, once chosen

        def fits(shape: tuple[int, int], path: str) -> bool:
            return path != XLA or xla_step_fits(spec, shape[1])

        self.chooser = PathChooser([XLA, SHAPED], fits, stand_in=SHAPED, lead_s=STEP_LEAD_S)
        if not xla:
            self.chooser.failed()

    def __call__(self, args: list[Any]) -> float:
        shape = (int(args[0].shape[0]), int(args[0].shape[1]))
        path = self.chooser.path(shape)
        if path == SHAPED:
            start = time.perf_counter()  # the first run's time includes the trace: its "compile"
            if shape not in self._shaped:
                exact = [tf.TensorSpec(a.shape, s.dtype) for a, s in zip(args, self._signature, strict=True)]
                self._shaped[shape] = concrete(self._step, exact)
            loss = float(self._shaped[shape](*args))
            self.chooser.ran(shape, SHAPED, time.perf_counter() - start)
            return loss
        if path == XLA:
            if self._xla is None:
                self._xla = concrete(self._step, self._signature, jit_compile=True)
            try:
                start = time.perf_counter()
                loss = float(self._xla(*args))
                self.chooser.ran(shape, XLA, time.perf_counter() - start)  # the first: its compile
                return loss
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError):
                if self.chooser.compiled(shape, XLA):
                    raise  # it compiled and ran before: this error is the batch's, not XLA's
                # XLA cannot compile this step here; the failed call changed nothing (the whole
                # step is the compiled call). The graphs compute the same.
                self.chooser.failed(XLA)
        if self._graph is None:
            self._graph = concrete(self._step, self._signature)
        start = time.perf_counter()
        loss = float(self._graph(*args))
        if self._graph_ran:
            self.chooser.ran(shape, GRAPH, time.perf_counter() - start)
        self._graph_ran = True
        return loss


class Trainer:
    """One model, its optimizer slots, and one traced training step."""

    def __init__(self, model: Any, config: TrainConfig):
        self.model, self.config = model, config
        self.spec = spec_of(model)
        self.dtype = tf.as_dtype(self.spec.dtype)
        self.bindings = convert.bindings(self.spec, model)
        self.variables = [b.variable for b in self.bindings]
        self.slots = {
            slot: [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
            for slot in _SLOTS[config.optimizer]
        }
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.signature = step_signature(self.spec)
        self._paths: dict[bool, _StepPaths] = {}  # by "no row padded" (the twin's step)
        self.use_xla = xla_enabled()  # for the update in the graph's step; see the module's docstring
        self._xla_ran = False
        # each Dropout layer that draws masks keeps its own seed state; `step` sets it per update
        self._dropout_layers = sorted(
            (layer for layer in model.layers if isinstance(layer, keras.layers.Dropout) and layer.rate > 0),
            key=lambda layer: layer.name,
        )

    def step(self, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray, lr: float) -> float:
        inputs, lengths, targets = check_training_batch(self.spec, inputs, lengths, targets)
        full_length = self._full_length(inputs, lengths)
        args = self._tensors(inputs, lengths, targets, lr)
        self._seed_dropout()
        try:
            loss = self._step_paths(full_length)(args)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError):
            if not self.use_xla or self._xla_ran:
                raise
            # XLA could not compile the update here (a GPU without its toolchain, say); the
            # failed step changed nothing (the whole update, step count included, is the
            # compiled call). Trace again with everything op by op; an error that was not
            # XLA's recurs there.
            self.use_xla, self._paths = False, {}
            return self._step_paths(full_length)(args)
        self._xla_ran = self.use_xla
        return loss

    def _seed_dropout(self) -> None:
        """Set each Dropout layer's seed state from `dropout_seed(seed, step, layer)` before the
        update draws its masks: Keras seeds a layer's generator at random when the layer is
        made, so a run would not repeat from its seed, nor a resumed run draw what the
        uninterrupted one would. Keras' TensorFlow backend takes 32-bit seeds."""
        if not self._dropout_layers:
            return
        step = int(self.steps.numpy())
        for stream, layer in enumerate(self._dropout_layers):
            state = layer.seed_generator.state
            seed = dropout_seed(self.config.seed, step, stream) % 2**31
            state.assign(np.array([seed, 0], dtype=state.dtype))

    def settled(self, inputs: np.ndarray, lengths: np.ndarray) -> bool:
        """Whether steps on batches shaped like this have their final path (graph or XLA)."""
        return self._chooser(inputs, lengths).settled(inputs.shape[:2])

    def race(self, inputs: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
        """The race for steps on batches shaped like this (`runtime.PathChooser.race`)."""
        return self._chooser(inputs, lengths).race(inputs.shape[:2])

    def _chooser(self, inputs: np.ndarray, lengths: np.ndarray) -> PathChooser:
        """The path chooser that steps on batches like this one go through."""
        return self._step_paths(self._full_length(inputs, lengths)).chooser

    def _full_length(self, inputs: np.ndarray, lengths: np.ndarray) -> bool:
        # No row padded: the twin without step masks computes the same, 5-10% faster (Keras
        # selects outputs and states per masked step). (Models whose layers need no mask run
        # without one anyway.)
        return masks_some_layer(self.spec) and int(np.min(lengths)) == inputs.shape[1]

    def _step_paths(self, full_length: bool) -> _StepPaths:
        if full_length not in self._paths:
            model = full_length_twin(self.model) if full_length else self.model

            def step(x: Any, lengths: Any, targets: Any, lr: Any) -> Any:
                return self._step(x, lengths, targets, lr, model=model)

            self._paths[full_length] = _StepPaths(step, self.signature, xla=self.use_xla, spec=self.spec)
        return self._paths[full_length]

    def _tensors(self, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray, lr: float) -> list[Any]:
        return [
            tf.convert_to_tensor(value, spec.dtype)
            for value, spec in zip((inputs, lengths, targets, lr), self.signature, strict=True)
        ]

    def _step(self, x: Any, lengths: Any, targets: Any, lr: Any, model: Any = None) -> Any:
        loss, grads = self._gradients(x, lengths, targets, model=model)
        (self._xla_update if self.use_xla else self._update)(grads, lr)
        return loss

    def _update(self, grads: list[Any], lr: Any) -> None:
        self._apply(self._clipped(dense(grads)), lr)

    @tf.function(jit_compile=True)
    def _xla_update(self, grads: list[Any], lr: Any) -> None:
        self._update(grads, lr)

    def _gradients(
        self, x: Any, lengths: Any, targets: Any, weight: Any = None, model: Any = None
    ) -> tuple[Any, list[Any]]:
        """The batch's mean loss, and the gradients of `weight` times it (`model`: this trainer's
        model, or its full-length twin, which shares its variables). The embedding's come as
        `IndexedSlices` (rows of the batch's tokens): `_update` makes them dense inside the
        compiled update, ~1 ms a step less than a dense tensor made before it (20000x128
        embedding, 2-layer BiRNN at batch 64: 49.9 vs 51.0 ms on 2 cores)."""
        with tf.GradientTape() as tape:
            outputs = (self.model if model is None else model)([x, lengths], training=True)
            loss = compute_loss(loss_name(self.spec), outputs, targets, lengths, crf_layer(self.model))
            scaled = loss if weight is None else loss * tf.cast(weight, loss.dtype)
        grads = tape.gradient(scaled, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, grads

    def _clipped(self, grads: list[Any]) -> list[Any]:
        return grads if self.config.clip_norm is None else self._clip(grads)

    def _apply(self, grads: list[Any], lr: Any) -> None:
        """The optimizer step, one variable after the other, on the final gradients."""
        self.steps.assign_add(1)
        update = {"sgd": self._sgd, "adam": self._adam, "adamw": self._adam}[self.config.optimizer]
        for i, grad in enumerate(grads):
            self._update_variable(i, update, grad, lr)

    def _update_variable(self, i: int, update: Any, grad: Any, lr: Any) -> None:
        update(i, self.variables[i], grad, lr)

    def _clip(self, grads: list[Any]) -> list[Any]:
        # torch.nn.utils.clip_grad_norm_: the norm of the per-tensor norms, coefficient capped at 1
        total = tf.norm(tf.stack([tf.norm(tf.reshape(g, [-1])) for g in grads]))
        coef = tf.minimum(tf.constant(self.config.clip_norm, self.dtype) / (total + 1e-6), 1.0)
        return [g * coef for g in grads]

    def _sgd(self, i: int, var: Any, grad: Any, lr: Any) -> None:
        c = self.config
        if c.weight_decay:
            grad = grad + c.weight_decay * var
        if c.momentum:
            buf = self.slots["momentum_buffer"][i]
            # the zero-initialised buffer makes the first step buf = grad, as torch's clone
            buf.assign(buf * c.momentum + grad)
            grad = grad + c.momentum * buf if c.nesterov else tf.identity(buf)
        var.assign_add(-tf.cast(lr, self.dtype) * grad)

    def _adam(self, i: int, var: Any, grad: Any, lr: Any) -> None:
        c = self.config
        if c.optimizer == "adamw":
            var.assign(var * tf.cast(1.0 - lr * c.weight_decay, self.dtype))
        elif c.weight_decay:
            grad = grad + c.weight_decay * var
        m, v = self.slots["exp_avg"][i], self.slots["exp_avg_sq"][i]
        m.assign(m + (grad - m) * (1.0 - c.beta1))  # torch's lerp_(grad, 1 - beta1)
        v.assign(v * c.beta2 + grad * grad * (1.0 - c.beta2))
        # Scalars in float64, then cast, as torch computes them in Python floats.
        # (tf.constant, not tf.cast: casting a Python float goes through float32 first.)
        t = tf.cast(self.steps, tf.float64)
        bias1 = 1.0 - tf.pow(tf.constant(c.beta1, tf.float64), t)
        bias2_sqrt = tf.sqrt(1.0 - tf.pow(tf.constant(c.beta2, tf.float64), t))
        step_size = tf.cast(lr / bias1, self.dtype)
        denom = tf.sqrt(v) / tf.cast(bias2_sqrt, self.dtype) + c.eps
        var.assign_add(-step_size * (m / denom))

    def optimizer_state(self) -> Weights:
        """Optimizer slots in canonical names (`<weight>/<slot>`), plus the update count `step`."""
        state: Weights = {}
        for slot, variables in self.slots.items():
            canonical = convert.to_canonical(self.bindings, [v.numpy() for v in variables])
            state.update({f"{name}/{slot}": value for name, value in canonical.items()})
        state["step"] = np.array(int(self.steps.numpy()), dtype=np.int64)
        return state

    def load_optimizer_state(self, state: Weights) -> None:
        for slot, variables in self.slots.items():
            prefix = f"/{slot}"
            canonical = {k[: -len(prefix)]: v for k, v in state.items() if k.endswith(prefix)}
            for var, value in zip(variables, convert.to_native(self.bindings, canonical), strict=True):
                var.assign(value.astype(self.spec.dtype))
        self.steps.assign(int(np.asarray(state["step"]).ravel()[0]))  # stored as (1,)


def make_trainer(model: Any, config: TrainConfig) -> Trainer:
    return Trainer(model, config)
