"""Spec -> functional `keras.Model`, and canonical weights in and out of it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from rnncore.spec import ModelSpec
from rnncore.weights import Weights, check_weights, head_layer_names

from . import convert, naming
from .crf import Crf
from .device import DEVICE_ATTR, placement
from .layers import HeadActivation, SequencePooling, StepMask, ZeroPaddedSteps

# Where the spec lives on a built model. A plain attribute: Keras does not save it, so a
# model reloaded from disk is an ordinary Keras model, no longer owned by rnncore.
SPEC_ATTR = "_rnncore_spec"

# build() loads canonical weights right after creating the layers, so initializers only
# cost time (the default orthogonal recurrent init runs a QR per kernel).
_NO_INIT = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}
_NO_INIT_RNN = {**_NO_INIT, "recurrent_initializer": "zeros"}


# How the graph builders get a layer: `layers(make, name, *args, **kwargs)` calls
# `make(*args, name=name, **kwargs)` when building a model, or returns the model's own layer of
# that name when building a twin that shares its weights.
LayerSource = Callable[..., Any]


def _new_layer(make: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Any:
    return make(*args, name=name, **kwargs)


def _inputs(spec: ModelSpec) -> tuple[Any, Any]:
    if spec.input.kind == "tokens":
        x = keras.Input(shape=(None,), dtype="int64", name="tokens")
    else:
        x = keras.Input(shape=(None, spec.input.feature_dim), dtype=spec.dtype, name="features")
    lengths = keras.Input(shape=(), dtype="int32", name=naming.INPUT_LENGTHS)
    return x, lengths


def _embed(spec: ModelSpec, layers: LayerSource, x: Any) -> Any:
    if spec.input.kind != "tokens":
        return x
    # no mask_zero: padding is given by lengths, and padding_idx may be any id or null
    embedding = layers(
        keras.layers.Embedding,
        naming.EMBEDDING,
        spec.input.vocab_size,
        spec.input.embedding_dim,
        embeddings_initializer="zeros",
        dtype=spec.dtype,
    )
    return embedding(x)


def _recurrent_layer(spec: ModelSpec, name: str, return_sequences: bool = True) -> Any:
    enc = spec.encoder
    common = {"return_sequences": return_sequences, "dtype": spec.dtype, "name": name, **_NO_INIT_RNN}
    if enc.cell == "lstm":
        layer = keras.layers.LSTM(enc.hidden_size, unit_forget_bias=False, **common)
    elif enc.cell == "gru":
        layer = keras.layers.GRU(enc.hidden_size, reset_after=True, **common)
    else:
        layer = keras.layers.SimpleRNN(enc.hidden_size, activation=enc.nonlinearity, **common)
    if enc.bidirectional:
        layer = keras.layers.Bidirectional(layer, merge_mode="concat", dtype=spec.dtype, name=name)
    return layer


def needs_step_mask(spec: ModelSpec) -> bool:
    """Whether the recurrent layers must see the step mask to compute right-padded batches.

    Padding follows each row's valid steps, so a forward-only layer run over it computes every
    valid output exactly (the padded outputs are zeroed after it, so they reach no gradient) and
    skips the per-step selects of outputs and states a mask costs Keras (5-20% of a step). A
    backward direction must start at each row's last valid step: masked. So is a ReLU RNN, whose
    state can grow without bound over a long run of padding (inf * 0 = nan in its gradients).
    """
    enc = spec.encoder
    return enc.bidirectional or (enc.cell == "rnn" and enc.nonlinearity == "relu")


def pools_in_last_layer(spec: ModelSpec) -> bool:
    """Whether the last recurrent layer returns `last` pooling itself (return_sequences=False).

    Masked, Keras' forward direction ends holding each row's output at its last valid step and
    the backward direction its output at step 0: `last` pooling, unless a residual acts on the
    outputs first. The layer then skips writing out every step and the gather after it (under
    XLA a 1-layer LSTM at batch 64, length 32 ran in 7.7 ms instead of 9.8). Training dropout
    acts on the pooled features: the same distribution as on the sequence, another draw.
    """
    return spec.pooling == "last" and not spec.residual_layers[-1]


def masks_some_layer(spec: ModelSpec) -> bool:
    """Whether any recurrent layer of the model gets the step mask (so that its mask-free
    `full_length_twin` is faster on batches without padding)."""
    return needs_step_mask(spec) or pools_in_last_layer(spec)


def masks_every_layer(spec: ModelSpec) -> bool:
    """Whether every recurrent layer of the model gets the step mask (its `fully_masked_twin`
    is the same graph)."""
    return needs_step_mask(spec) or (spec.encoder.num_layers == 1 and pools_in_last_layer(spec))


def _encoder_layer(
    spec: ModelSpec, layers: LayerSource, layer: int, seq: Any, step_mask: Any, masks: str
) -> Any:
    name = naming.encoder(layer)
    pools = layer == spec.encoder.num_layers - 1 and pools_in_last_layer(spec)
    rnn = layers(_recurrent_layer, name, spec, return_sequences=not pools)
    # a layer that pools must stop at each row's last valid step: masked (unless nothing is padded)
    mask_it = masks == "all" or (masks == "needed" and (pools or needs_step_mask(spec)))
    out = rnn(seq, mask=step_mask if mask_it else None)
    # An explicit layer, not the RNN's dropout= (which drops the cell's *inputs*), placed
    # before the residual so that a residual layer computes x + dropout(rnn(x)).
    dropout = layers(
        keras.layers.Dropout, naming.encoder_part(layer, "dropout"), spec.encoder.dropout, dtype=spec.dtype
    )
    out = dropout(out)
    if pools:
        return out  # (B, features): pooled already, nothing padded left to zero
    if spec.residual_layers[layer]:
        out = layers(keras.layers.Add, naming.encoder_part(layer, "residual"), dtype=spec.dtype)([out, seq])
    if layer < spec.encoder.num_layers - 1:
        # Between layers padded steps stay as they are (as in the torch backend): the next
        # layer is masked, so it never reads them, or unidirectional, so they come after every
        # valid step; either way no valid output depends on them, and they are finite (a ReLU
        # RNN, which could overflow, is always masked). Zeroing them cost a select over the
        # whole sequence: a 2-layer RNN at batch 64, length 512, hidden 128, masked, compiled,
        # ran 21.2 ms a forward with it and 19.7 without (the hand-written Keras+XLA model:
        # 20.2 and 19.5 in the same two processes).
        return out
    zero = layers(ZeroPaddedSteps, naming.encoder_part(layer, "zero_padding"), dtype=spec.dtype)
    return zero(out, step_mask)


def _pool(spec: ModelSpec, layers: LayerSource, seq: Any, step_mask: Any) -> Any:
    if spec.per_step_output or pools_in_last_layer(spec):
        return seq
    backward = spec.encoder.hidden_size if spec.encoder.bidirectional else 0
    pooling = layers(SequencePooling, naming.POOLING, spec.pooling, backward, dtype=spec.dtype)
    return pooling(seq, step_mask)


def _head(spec: ModelSpec, layers: LayerSource, features: Any, step_mask: Any) -> Any:
    if spec.head is None:
        return features
    head = spec.head
    names = head_layer_names(spec)
    for canonical, width in zip(names[:-1], head.hidden, strict=True):
        name = naming.head(canonical)
        dense = layers(keras.layers.Dense, name, width, dtype=spec.dtype, **_NO_INIT)
        activation = layers(
            HeadActivation, f"{name}_activation", head.activation, head.negative_slope, dtype=spec.dtype
        )
        dropout = layers(keras.layers.Dropout, f"{name}_dropout", head.dropout, dtype=spec.dtype)
        features = dropout(activation(dense(features)))
    output = layers(
        keras.layers.Dense, naming.head(names[-1]), head.num_outputs, dtype=spec.dtype, **_NO_INIT
    )
    logits = output(features)
    if spec.per_step_output:
        logits = layers(ZeroPaddedSteps, naming.OUTPUT_MASK, dtype=spec.dtype)(logits, step_mask)
    if head.crf:  # passes the logits through; it holds the CRF's weights (see `crf.Crf`)
        logits = layers(Crf, naming.CRF, head.num_outputs, dtype=spec.dtype)(logits)
    return logits


def _graph(spec: ModelSpec, layers: LayerSource, masks: str) -> keras.Model:
    """The model's graph from `layers`; `masks` says which recurrent layers get the step mask:
    "needed" (see `needs_step_mask` and `pools_in_last_layer`), "none" (`full_length_twin`) or
    "all" (`fully_masked_twin`)."""
    x, lengths = _inputs(spec)
    step_mask = layers(StepMask, naming.STEP_MASK, dtype=spec.dtype)(x, lengths)
    seq = _embed(spec, layers, x)
    for layer in range(spec.encoder.num_layers):
        seq = _encoder_layer(spec, layers, layer, seq, step_mask, masks)
    outputs = _head(spec, layers, _pool(spec, layers, seq, step_mask), step_mask)
    return keras.Model([x, lengths], outputs, name="rnncore")


def build(spec: ModelSpec, weights: Mapping[str, np.ndarray], device: str | None = None) -> keras.Model:
    """A functional `keras.Model` for `spec`, holding `weights` (canonical layout).

    The model takes `[inputs, lengths]`: token ids `(B, T)` int64 or features `(B, T, F)`,
    and lengths `(B,)` int32. Every layer computes in `spec.dtype`.

    Example:
        >>> model = build(spec, rnncore.init_weights(spec))
        >>> logits = model([ids, lengths], training=False)
    """
    with placement(device):  # `device`: a resolved rnncore device, or None for TensorFlow's choice
        model = _graph(spec, _new_layer, masks="needed")
    setattr(model, SPEC_ATTR, spec)
    setattr(model, DEVICE_ATTR, device)
    set_weights(model, weights)
    return model


def full_length_twin(model: keras.Model) -> keras.Model:
    """A model made of `model`'s own layers (same weights) for batches with no padding.

    Its recurrent layers get no step mask, which on a batch whose rows all have the full length
    is the same function without a select per step (the runtime and the trainer call it for
    such batches). The twin is not rnncore-owned: it is only ever called, never saved.
    """
    return _twin(model, masks="none")


def fully_masked_twin(model: keras.Model) -> keras.Model:
    """A model made of `model`'s own layers in which every recurrent layer gets the step mask.

    One of the variants the runtime compiles with XLA: compiled, Keras' masked recurrent loop
    ran 12-25% faster than its unmasked one on 2 cores for 2-layer LSTM/GRU/RNN models (batch
    64, length 128, padded or not) and 10% slower for a 1-layer LSTM at hidden 256, so the
    runtime times both. Same function: a mask only stops layers at each row's last valid step,
    which unmasked layers reach anyway on right padding.
    """
    return _twin(model, masks="all")


def _twin(model: keras.Model, masks: str) -> keras.Model:
    return _graph(spec_of(model), lambda make, name, *args, **kwargs: model.get_layer(name), masks=masks)


def crf_layer(model: Any) -> Crf | None:
    """The model's CRF layer, or None for a model without a CRF head."""
    head = spec_of(model).head
    return model.get_layer(naming.CRF) if head is not None and head.crf else None


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
