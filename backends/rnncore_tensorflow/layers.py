"""The custom Keras layers rnncore needs beyond the built-in ones.

Written with `keras.ops` only so they stay backend-neutral and serialisable. The step mask is
passed to them as an explicit input; they also clear Keras' implicit `_keras_mask` so that no
layer downstream picks up a mask the model did not mean to give it.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

_PACKAGE = "rnncore"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StepMask(keras.layers.Layer):
    """`(B, T)` boolean, True at the first `lengths[b]` steps of row `b`.

    Built from lengths rather than from a padding id: `padding_idx` may be any id or null,
    and feature inputs have no padding value at all.
    """

    def call(self, inputs: Any, lengths: Any) -> Any:
        steps = ops.shape(inputs)[1]
        positions = ops.arange(steps, dtype="int32")
        return ops.expand_dims(positions, 0) < ops.expand_dims(ops.cast(lengths, "int32"), 1)

    def compute_mask(self, inputs: Any, previous_mask: Any) -> None:
        return None


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZeroPaddedSteps(keras.layers.Layer):
    """Zero a `(B, T, ...)` sequence at padded steps.

    Keras RNNs repeat (or zero) their output at masked steps and a residual adds the raw
    input there; the oracle defines padded steps as exactly zero, so the encoder's last
    layer ends here (and per-step logits: the head's output mask).
    `where` rather than a multiply keeps a stray inf/nan at a padded step from leaking.
    """

    def call(self, inputs: Any, step_mask: Any) -> Any:
        keep = ops.expand_dims(step_mask, -1)
        return ops.where(keep, inputs, ops.zeros_like(inputs))

    def compute_mask(self, inputs: Any, previous_mask: Any) -> None:
        return None


def _last(inputs: Any, step_mask: Any, backward_size: int) -> Any:
    lengths = ops.sum(ops.cast(step_mask, "int32"), axis=1)
    index = ops.reshape(lengths - 1, (-1, 1, 1))
    last = ops.squeeze(ops.take_along_axis(inputs, index, axis=1), axis=1)
    if not backward_size:
        return last
    # the backward direction has read the whole row by step 0, not by step L-1
    forward_size = ops.shape(inputs)[-1] - backward_size
    return ops.concatenate([last[:, :forward_size], inputs[:, 0, forward_size:]], axis=-1)


def _mean(inputs: Any, step_mask: Any) -> Any:
    keep = ops.expand_dims(step_mask, -1)
    total = ops.sum(ops.where(keep, inputs, ops.zeros_like(inputs)), axis=1)
    count = ops.sum(ops.cast(step_mask, inputs.dtype), axis=1, keepdims=True)
    return total / count


def _max(inputs: Any, step_mask: Any) -> Any:
    keep = ops.expand_dims(step_mask, -1)
    return ops.max(ops.where(keep, inputs, float("-inf")), axis=1)


def _attention(inputs: Any, step_mask: Any, weight: Any) -> Any:
    scores = ops.einsum("btd,d->bt", inputs, weight)
    # -inf gives padded steps an attention weight of exactly 0 (every row has a valid step)
    alpha = ops.softmax(ops.where(step_mask, scores, float("-inf")), axis=1)
    return ops.einsum("bt,btd->bd", alpha, inputs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SequencePooling(keras.layers.Layer):
    """`(B, T, D)` -> `(B, D)` over the valid steps: last | mean | max | attention.

    Args:
        mode: the spec's pooling.
        backward_size: width of the backward direction's half of D (0 if unidirectional);
            `last` reads that half at step 0.
    """

    MODES = ("last", "mean", "max", "attention")

    def __init__(self, mode: str, backward_size: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"pooling mode must be one of {self.MODES}; got {mode!r}")
        self.mode = mode
        self.backward_size = backward_size

    def build(self, input_shape: Any) -> None:
        if self.mode == "attention":
            # zeros: build() always loads canonical weights right after
            self.attention_weight = self.add_weight(
                shape=(input_shape[-1],), initializer="zeros", name="attention_weight"
            )

    def call(self, inputs: Any, step_mask: Any) -> Any:
        if self.mode == "last":
            return _last(inputs, step_mask, self.backward_size)
        if self.mode == "mean":
            return _mean(inputs, step_mask)
        if self.mode == "max":
            return _max(inputs, step_mask)
        return _attention(inputs, step_mask, self.attention_weight)

    def compute_mask(self, inputs: Any, previous_mask: Any) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode, "backward_size": self.backward_size}


def _leaky_relu(inputs: Any, negative_slope: float) -> Any:
    return ops.where(inputs >= 0, inputs, negative_slope * inputs)


def _gelu(inputs: Any) -> Any:
    return 0.5 * inputs * (1.0 + ops.erf(inputs * _SQRT_HALF))


_SQRT_HALF = math.sqrt(0.5)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HeadActivation(keras.layers.Layer):
    """The head's activation with the spec's exact parameters, exact in float64 too.

    Keras' built-ins do not fit: LeakyReLU's default slope is 0.2 (torch and the spec use
    0.01), and on TensorFlow `ops.leaky_relu` stores the slope as a float32 op attribute
    while `ops.gelu(approximate=False)` rounds 1/sqrt(2) through float32, so both drift by
    ~1e-8 in float64 models. Hence plain `ops` arithmetic; gelu is the exact erf form.
    """

    KINDS = ("relu", "leaky_relu", "tanh", "gelu")

    def __init__(self, kind: str, negative_slope: float = 0.01, **kwargs: Any):
        super().__init__(**kwargs)
        if kind not in self.KINDS:
            raise ValueError(f"activation must be one of {self.KINDS}; got {kind!r}")
        self.kind = kind
        self.negative_slope = negative_slope

    def call(self, inputs: Any) -> Any:
        if self.kind == "relu":
            return ops.relu(inputs)
        if self.kind == "leaky_relu":
            return _leaky_relu(inputs, self.negative_slope)
        if self.kind == "tanh":
            return ops.tanh(inputs)
        return _gelu(inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind, "negative_slope": self.negative_slope}
