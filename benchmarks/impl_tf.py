"""Keras-on-TensorFlow implementations: rnncore's Keras model and hand-written Keras baselines.

rnncore's Keras model (`rnncore.build(spec, "tensorflow")`) runs through the backend's forward
(`rnncore_keras`: numpy in and out, a traced graph and, once a batch shape has recurred, that
shape XLA-compiled where that is faster) and through the public `rnncore.predict`
(`rnncore_keras_api`, the same after input checks). Training is the backend trainer's step, as
`rnncore train` runs it (the graph's step, or the whole step XLA-compiled, chosen per recurring
shape the same way). Both are timed in their steady state (`settle_s` reports the calls before
it). The baselines are the model of `keras_models.build` driven by hand-written `tf.function`
steps, as in Keras' "custom training loop" guide: `model(x, training=False)` for prediction;
GradientTape, sparse categorical cross-entropy from logits and
`keras.optimizers.Adam.apply_gradients` for training; once plain (`keras_tf`) and once with XLA
(`jit_compile=True`, `keras_tf_xla`). Inputs are converted from numpy and outputs back inside
the timed call, as rnncore does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from . import keras_models
from .grid import Point
from .timing import Impl, Runner


def baseline(point: Point, xla: bool) -> Impl:
    import keras

    models: dict[bool, Any] = {}
    steps: dict[bool, tuple[Any, Any]] = {}

    def compiled(masked: bool) -> tuple[Any, Any]:
        if masked not in steps:
            keras.utils.set_random_seed(0)
            model = models[masked] = keras_models.build(point, masked)
            optimizer = keras.optimizers.Adam(learning_rate=1e-3)
            optimizer.build(model.trainable_variables)
            loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

            @tf.function(jit_compile=xla, reduce_retracing=True)
            def predict(x: Any) -> Any:
                return model(x, training=False)

            @tf.function(jit_compile=xla, reduce_retracing=True)
            def train(x: Any, y: Any) -> Any:
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, model(x, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
                return loss

            steps[masked] = (predict, train)
        return steps[masked]

    def runner(mode: str, arrays: dict[str, np.ndarray], point: Point) -> Runner | None:
        if xla and mode == "train" and not xla_step_fits(point):
            return None
        predict, train = compiled(point.masked)
        ids, labels = arrays["ids"], arrays["labels"]
        if mode == "forward":
            return lambda: predict(tf.convert_to_tensor(ids)).numpy()
        return lambda: float(train(tf.convert_to_tensor(ids), tf.convert_to_tensor(labels)))

    name = "keras_tf_xla" if xla else "keras_tf"
    note = "tf.function(jit_compile=True) steps" if xla else "tf.function steps"
    if xla:
        note += " (training not timed where XLA's step would need over 2 GiB; see xla_step_fits)"
    return Impl(name, "tensorflow", False, runner, note + ", hand-written Keras model")


def xla_step_fits(point: Point) -> bool:
    """Whether an XLA-compiled training step of this point stays within the memory limit rnncore's
    trainer keeps to (`rnncore_tensorflow.train.xla_step_fits`). XLA's step holds about one copy
    of the recurrent weights per time step: the hand-written one at a 2-layer BiGRU of hidden
    512 over 512 steps was killed for memory at 24 GB, a 1-layer one took 5.4 GB. An expert
    would not ship that step, and rnncore's trainer leaves such shapes on the graph."""
    from rnncore_tensorflow import train

    import rnncore

    return train.xla_step_fits(rnncore.ModelSpec.from_dict(point.spec_dict()), point.seq_len)


class _Settling:
    """A call of rnncore's Keras model, and `settle()`: call it until its batch shape's path is final.

    rnncore's runtime (forward) and trainer (training step) compile a recurring batch shape with
    XLA once the graph has spent as long on it as a compile takes, time the paths round robin
    and keep the fastest for that shape (`rnncore_tensorflow.runtime.PathChooser`); the harness
    times the steady state and reports the calls before it as `settle_s`.
    """

    def __init__(
        self,
        call: Runner,
        settled: Callable[[], bool],
        race: Callable[[], dict[str, Any]],
        limit_s: float = 180.0,
    ):
        """`race()`: what the race found, the path kept and each path's trials (in the JSON: a
        low figure often comes down to which path was kept)."""
        self._call, self._settled, self.race, self._limit_s = call, settled, race, limit_s

    def __call__(self) -> Any:
        return self._call()

    def settle(self) -> bool:
        """Whether the path is final (False: `limit_s` ran out first, and the timed calls may
        include the race's trials of slower paths). Long training steps need minutes: XLA
        compiles a 2-layer bidirectional step over 512 steps for tens of seconds, and each path
        then runs `XLA_MIN_TRIALS` steps of seconds each."""
        end = time.perf_counter() + self._limit_s
        # (a shape another runner of the same model has settled is settled already)
        while not self._settled() and time.perf_counter() < end:
            self._call()
        return self._settled()


def rnncore_keras(point: Point) -> list[Impl]:
    """rnncore's Keras model through the backend's forward (as `rnncore.predict` runs it, after its
    checks) and through `rnncore.predict`; training through the backend trainer's step."""
    from rnncore_tensorflow import runtime

    import rnncore
    from rnncore.registry import get_backend
    from rnncore.train.config import TrainConfig

    spec = rnncore.ModelSpec.from_dict(point.spec_dict())
    model = rnncore.build(spec, backend="tensorflow", weights=rnncore.init_weights(spec, seed=0))
    backend = get_backend("tensorflow")
    trainer = backend.make_trainer(model, TrainConfig(optimizer="adam", lr=1e-3))

    def forward_settling(call: Runner, ids: np.ndarray, lengths: np.ndarray) -> _Settling:
        def forward() -> Any:
            return runtime._runner(model).forward_for(ids, lengths)

        return _Settling(call, lambda: forward().settled(ids), lambda: forward().race(ids))

    def runner(mode: str, arrays: dict[str, np.ndarray], point: Point) -> Runner:
        ids, lengths, labels = arrays["ids"], arrays["lengths"], arrays["labels"]
        if mode == "forward":
            return forward_settling(lambda: backend.predict(model, ids, lengths), ids, lengths)

        def step() -> float:
            return trainer.step(ids, lengths, labels, 1e-3)

        return _Settling(step, lambda: trainer.settled(ids, lengths), lambda: trainer.race(ids, lengths))

    def api(mode: str, arrays: dict[str, np.ndarray], point: Point) -> Runner | None:
        if mode != "forward":
            return None  # training goes through the trainer in both
        ids, lengths = arrays["ids"], arrays["lengths"]
        return forward_settling(lambda: rnncore.predict(model, ids, lengths), ids, lengths)

    return [
        Impl("rnncore_keras", "tensorflow", True, runner, "rnncore's Keras backend forward (graph, then "
             "XLA for a recurring shape); training: the backend trainer's step (the same)"),
        Impl("rnncore_keras_api", "tensorflow", True, api, "rnncore.predict(model, ids, lengths)"),
    ]  # fmt: skip


def impls(point: Point, xla: bool = True) -> list[Impl]:
    found = [*rnncore_keras(point), baseline(point, xla=False)]
    if xla:
        found.append(baseline(point, xla=True))
    return found
