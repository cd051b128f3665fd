"""Keras-on-TensorFlow implementations: rnncore's Keras model and hand-written Keras baselines.

rnncore's Keras model (`rnncore.build(spec, "tensorflow")`, inputs `[ids, lengths]`) is called
in a `tf.function` traced with the relaxed signature rnncore's runtime uses (`rnncore_keras`;
numpy in and out as for the baseline), and through the public `rnncore.predict`
(`rnncore_keras_api`, which traces its own `tf.function` on the second call); training is the
backend trainer's traced step, as `rnncore train` runs it. The baselines are the model of
`keras_models.build` driven by hand-written `tf.function` steps, as in Keras' "custom training
loop" guide: `model(x, training=False)` for prediction; GradientTape, sparse categorical
cross-entropy from logits and `keras.optimizers.Adam.apply_gradients` for training; once plain
(`keras_tf`) and once with XLA (`jit_compile=True`, `keras_tf_xla`). Inputs are converted from
numpy and outputs back inside the timed call, as rnncore does.
"""

from __future__ import annotations

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

    def runner(mode: str, arrays: dict[str, np.ndarray], point: Point) -> Runner:
        predict, train = compiled(point.masked)
        ids, labels = arrays["ids"], arrays["labels"]
        if mode == "forward":
            return lambda: predict(tf.convert_to_tensor(ids)).numpy()
        return lambda: float(train(tf.convert_to_tensor(ids), tf.convert_to_tensor(labels)))

    name = "keras_tf_xla" if xla else "keras_tf"
    note = "tf.function(jit_compile=True) steps" if xla else "tf.function steps"
    return Impl(name, "tensorflow", False, runner, note + ", hand-written Keras model")


def rnncore_keras(point: Point) -> list[Impl]:
    """rnncore's Keras model in a tf.function as the baseline's, and through rnncore.predict."""
    import rnncore
    from rnncore.registry import get_backend
    from rnncore.train.config import TrainConfig

    spec = rnncore.ModelSpec.from_dict(point.spec_dict())
    model = rnncore.build(spec, backend="tensorflow", weights=rnncore.init_weights(spec, seed=0))
    trainer = get_backend("tensorflow").make_trainer(model, TrainConfig(optimizer="adam", lr=1e-3))

    # traced once for any batch and length, as rnncore's runtime traces it (`runtime._signature`):
    # with the model's static shapes some graphs run slower (a 2-layer SimpleRNN by half)
    signature = [tf.TensorSpec((None, None), tf.int64), tf.TensorSpec((None,), tf.int32)]

    @tf.function(input_signature=signature)
    def predict(x: Any, lengths: Any) -> Any:
        return model([x, lengths], training=False)

    def runner(mode: str, arrays: dict[str, np.ndarray], point: Point) -> Runner:
        ids, lengths, labels = arrays["ids"], arrays["lengths"], arrays["labels"]
        if mode == "forward":
            lengths32 = lengths.astype(np.int32)
            return lambda: predict(tf.convert_to_tensor(ids), tf.convert_to_tensor(lengths32)).numpy()
        return lambda: trainer.step(ids, lengths, labels, 1e-3)

    def api(mode: str, arrays: dict[str, np.ndarray], point: Point) -> Runner | None:
        if mode != "forward":
            return None  # training goes through the trainer in both
        ids, lengths = arrays["ids"], arrays["lengths"]
        return lambda: rnncore.predict(model, ids, lengths)

    return [
        Impl("rnncore_keras", "tensorflow", True, runner, "rnncore's keras.Model in a tf.function with "
             "rnncore's relaxed signature; training: the backend trainer's traced step"),
        Impl("rnncore_keras_api", "tensorflow", True, api, "rnncore.predict(model, ids, lengths) (traced "
             "from the second call)"),
    ]  # fmt: skip


def impls(point: Point, xla: bool = True) -> list[Impl]:
    found = [*rnncore_keras(point), baseline(point, xla=False)]
    if xla:
        found.append(baseline(point, xla=True))
    return found
