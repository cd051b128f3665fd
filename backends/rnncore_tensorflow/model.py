"""Spec -> functional `keras.Model`, and canonical weights in and out of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from rnncore.spec import ModelSpec
from rnncore.weights import Weights, check_weights, head_layer_names

from . import convert, naming
from .layers import HeadActivation, SequencePooling, StepMask, ZeroPaddedSteps

# Where the spec lives on a built model. A plain attribute: Keras does not save it, so a
# model reloaded from disk is an ordinary Keras model, no longer owned by rnncore.
SPEC_ATTR = "_rnncore_spec"

# build() loads canonical weights right after creating the layers, so initializers only
# cost time (the default orthogonal recurrent init runs a QR per kernel).
_NO_INIT = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}
_NO_INIT_RNN = {**_NO_INIT, "recurrent_initializer": "zeros"}


def _inputs(spec: ModelSpec) -> tuple[Any, Any]:
    if spec.input.kind == "tokens":
        x = keras.Input(shape=(None,), dtype="int64", name="tokens")
    else:
        x = keras.Input(shape=(None, spec.input.feature_dim), dtype=spec.dtype, name="features")
    lengths = keras.Input(shape=(), dtype="int32", name=naming.INPUT_LENGTHS)
    return x, lengths


def _embed(spec: ModelSpec, x: Any) -> Any:
    if spec.input.kind != "tokens":
        return x
    # no mask_zero: padding is given by lengths, and padding_idx may be any id or null
    embedding = keras.layers.Embedding(
        spec.input.vocab_size,
        spec.input.embedding_dim,
        embeddings_initializer="zeros",
        dtype=spec.dtype,
        name=naming.EMBEDDING,
    )
    return embedding(x)


def _recurrent_layer(spec: ModelSpec, name: str) -> Any:
    enc = spec.encoder
    common = {"return_sequences": True, "dtype": spec.dtype, "name": name, **_NO_INIT_RNN}
    if enc.cell == "lstm":
        return keras.layers.LSTM(enc.hidden_size, unit_forget_bias=False, **common)
    if enc.cell == "gru":
        return keras.layers.GRU(enc.hidden_size, reset_after=True, **common)
    return keras.layers.SimpleRNN(enc.hidden_size, activation=enc.nonlinearity, **common)


def _encoder_layer(spec: ModelSpec, layer: int, seq: Any, step_mask: Any) -> Any:
    name = naming.encoder(layer)
    rnn = _recurrent_layer(spec, name)
    if spec.encoder.bidirectional:
        rnn = keras.layers.Bidirectional(rnn, merge_mode="concat", dtype=spec.dtype, name=name)
    out = rnn(seq, mask=step_mask)
    # An explicit layer, not the RNN's dropout= (which drops the cell's *inputs*), placed
    # before the residual so that a residual layer computes x + dropout(rnn(x)).
    out = keras.layers.Dropout(
        spec.encoder.dropout, dtype=spec.dtype, name=naming.encoder_part(layer, "dropout")
    )(out)
    if spec.residual_layers[layer]:
        out = keras.layers.Add(dtype=spec.dtype, name=naming.encoder_part(layer, "residual"))([out, seq])
    zero = ZeroPaddedSteps(dtype=spec.dtype, name=naming.encoder_part(layer, "zero_padding"))
    return zero(out, step_mask)


def _pool(spec: ModelSpec, seq: Any, step_mask: Any) -> Any:
    if spec.per_step_output:
        return seq
    backward = spec.encoder.hidden_size if spec.encoder.bidirectional else 0
    pooling = SequencePooling(spec.pooling, backward, dtype=spec.dtype, name=naming.POOLING)
    return pooling(seq, step_mask)


def _head(spec: ModelSpec, features: Any, step_mask: Any) -> Any:
    if spec.head is None:
        return features
    head = spec.head
    names = head_layer_names(spec)
    for canonical, width in zip(names[:-1], head.hidden, strict=True):
        name = naming.head(canonical)
        features = keras.layers.Dense(width, dtype=spec.dtype, name=name, **_NO_INIT)(features)
        activation = HeadActivation(
            head.activation, head.negative_slope, dtype=spec.dtype, name=f"{name}_activation"
        )
        features = activation(features)
        dropout = keras.layers.Dropout(head.dropout, dtype=spec.dtype, name=f"{name}_dropout")
        features = dropout(features)
    output = keras.layers.Dense(head.num_outputs, dtype=spec.dtype, name=naming.head(names[-1]), **_NO_INIT)
    logits = output(features)
    if spec.per_step_output:
        logits = ZeroPaddedSteps(dtype=spec.dtype, name=naming.OUTPUT_MASK)(logits, step_mask)
    return logits


def build(spec: ModelSpec, weights: Mapping[str, np.ndarray]) -> keras.Model:
    """A functional `keras.Model` for `spec`, holding `weights` (canonical layout).

    The model takes `[inputs, lengths]`: token ids `(B, T)` int64 or features `(B, T, F)`,
    and lengths `(B,)` int32. Every layer computes in `spec.dtype`.

    Example:
        >>> model = build(spec, rnncore.init_weights(spec))
        >>> logits = model([ids, lengths], training=False)
    """
    x, lengths = _inputs(spec)
    step_mask = StepMask(dtype=spec.dtype, name=naming.STEP_MASK)(x, lengths)
    seq = _embed(spec, x)
    for layer in range(spec.encoder.num_layers):
        seq = _encoder_layer(spec, layer, seq, step_mask)
    outputs = _head(spec, _pool(spec, seq, step_mask), step_mask)
    model = keras.Model([x, lengths], outputs, name="rnncore")
    setattr(model, SPEC_ATTR, spec)
    set_weights(model, weights)
    return model


def owns(model: Any) -> bool:
    """True for models built by this backend."""
    return isinstance(model, keras.Model) and isinstance(getattr(model, SPEC_ATTR, None), ModelSpec)


def spec_of(model: Any) -> ModelSpec:
    """The spec `model` was built from."""
    if not owns(model):
        raise TypeError(f"{type(model).__name__} was not built by rnncore_tensorflow.build")
    spec: ModelSpec = getattr(model, SPEC_ATTR)
    return spec


def get_weights(model: Any) -> Weights:
    """The model's weights in the canonical layout (numpy copies)."""
    found = convert.bindings(spec_of(model), model)
    return convert.to_canonical(found, [b.variable.numpy() for b in found])


def set_weights(model: Any, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical weights; bit-exact (only transposes and gate-block moves)."""
    spec = spec_of(model)
    checked = check_weights(spec, weights)
    found = convert.bindings(spec, model)
    for binding, value in zip(found, convert.to_native(found, checked), strict=True):
        binding.variable.assign(value)
