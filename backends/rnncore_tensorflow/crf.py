"""A linear-chain CRF as a Keras layer: the log-likelihood (forward algorithm) and Viterbi.

The same definition as `rnncore.crf` (the numpy oracle). The layer sits at the end of a CRF
model's graph, where it passes the per-step logits (the emission scores) through unchanged: it
is there to hold `transitions`, `start` and `end` as the model's own variables (saved, exported
and trained with it). The trainer calls `log_likelihood`, and `decode` Viterbi, on its output.

Time is a `tf.foldl`/`tf.scan` loop, so one graph serves every length; a row's steps past its
length keep the previous step's scores (Viterbi: its tag), so every row ends where it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnncore.crf import Allowed

_PACKAGE = "rnncore"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Crf(keras.layers.Layer):
    """transitions[i, j] scores tag i followed by tag j; start/end score a path's first/last tag."""

    def __init__(self, num_tags: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_tags = num_tags
        k = num_tags
        self.transitions = self.add_weight(shape=(k, k), initializer="zeros", name="transitions")
        self.start = self.add_weight(shape=(k,), initializer="zeros", name="start")
        self.end = self.add_weight(shape=(k,), initializer="zeros", name="end")

    def call(self, emissions: Any) -> Any:
        return tf.identity(emissions)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_tags": self.num_tags}

    def log_likelihood(self, emissions: Any, tags: Any, lengths: Any) -> Any:
        """log p(tags | emissions) per row (B,); `tags` past a row's length are ignored."""
        mask = _valid(lengths, emissions)
        return _score(self, emissions, tags, mask) - _log_partition(self, emissions, mask)


def _valid(lengths: Any, emissions: Any) -> Any:
    return tf.range(tf.shape(emissions)[1])[None, :] < tf.cast(lengths, tf.int32)[:, None]


def _score(crf: Crf, emissions: Any, tags: Any, mask: Any) -> Any:
    tags = tf.where(mask, tf.cast(tags, tf.int32), 0)
    weight = tf.cast(mask, emissions.dtype)
    emitted = tf.gather(emissions, tags, axis=2, batch_dims=2)
    moved = tf.gather_nd(crf.transitions, tf.stack([tags[:, :-1], tags[:, 1:]], axis=-1))
    last = tf.gather(tags, tf.reduce_sum(tf.cast(mask, tf.int32), axis=1) - 1, axis=1, batch_dims=1)
    score = tf.gather(crf.start, tags[:, 0])
    score += tf.reduce_sum(emitted * weight, axis=1) + tf.reduce_sum(moved * weight[:, 1:], axis=1)
    return score + tf.gather(crf.end, last)


def _log_partition(crf: Crf, emissions: Any, mask: Any) -> Any:
    def step(alpha: Any, inputs: Any) -> Any:
        emitted, valid = inputs
        new = tf.reduce_logsumexp(alpha[:, :, None] + crf.transitions, axis=1) + emitted
        return tf.where(valid[:, None], new, alpha)

    time_major = tf.transpose(emissions, [1, 0, 2]), tf.transpose(mask)
    alpha = tf.foldl(step, (time_major[0][1:], time_major[1][1:]), initializer=crf.start + emissions[:, 0])
    return tf.reduce_logsumexp(alpha + crf.end, axis=1)


def viterbi(emissions: Any, lengths: Any, transitions: Any, start: Any, end: Any) -> Any:
    """Best tag paths (B, T) int64 under the given scores (-inf for forbidden moves); 0 at
    padded steps; ties go to the lowest tag id (TensorFlow's CPU argmax, as numpy's)."""
    mask = _valid(lengths, emissions)
    batch, k = tf.shape(emissions)[0], tf.shape(emissions)[2]
    own = tf.broadcast_to(tf.range(k, dtype=tf.int64)[None, :], [batch, k])

    def forward(carry: Any, inputs: Any) -> Any:
        best, _ = carry
        emitted, valid = inputs
        candidates = best[:, :, None] + transitions  # (B, from, to)
        pointer = tf.argmax(candidates, axis=1)
        step = tf.reduce_max(candidates, axis=1) + emitted
        # past a row's end each tag points to itself, so the trace runs unchanged through padding
        return tf.where(valid[:, None], step, best), tf.where(valid[:, None], pointer, own)

    time_major = tf.transpose(emissions, [1, 0, 2])[1:], tf.transpose(mask)[1:]
    first = start + emissions[:, 0]
    bests, pointers = tf.scan(forward, time_major, initializer=(first, own))
    final = tf.concat([first[None], bests], axis=0)[-1]
    last_tag = tf.argmax(final + end, axis=1)

    def backward(tag: Any, pointer: Any) -> Any:
        return tf.gather(pointer, tag, axis=1, batch_dims=1)

    earlier = tf.scan(backward, pointers, initializer=last_tag, reverse=True)
    paths = tf.transpose(tf.concat([earlier, last_tag[None]], axis=0))
    return tf.where(mask, paths, tf.zeros_like(paths))


def constrained_scores(
    num_tags: int, crf: Crf | None, allowed: Allowed | None, dtype: Any
) -> tuple[Any, Any, Any]:
    """(transitions, start, end) to decode with: the CRF's (zeros for a softmax tagger), with the
    moves `allowed` forbids at -inf."""
    if crf is not None:
        scores = (crf.transitions, crf.start, crf.end)
    else:
        scores = (
            tf.zeros([num_tags, num_tags], dtype),
            tf.zeros([num_tags], dtype),
            tf.zeros([num_tags], dtype),
        )
    if allowed is None:
        return scores
    masks = (allowed.transitions, allowed.start, allowed.end)
    return tuple(
        tf.where(tf.constant(m), s, tf.constant(-np.inf, dtype)) for s, m in zip(scores, masks, strict=True)
    )


def decode_outputs(
    num_tags: int, crf: Crf | None, outputs: Any, lengths: Any, allowed: Allowed | None
) -> Any:
    """Tag paths (B, T) from a tagger's outputs, as `rnncore.crf.decode` defines them."""
    if crf is None:
        if allowed is None:
            paths = tf.argmax(outputs, axis=2)
            return tf.where(_valid(lengths, outputs), paths, tf.zeros_like(paths))
        outputs = tf.nn.log_softmax(outputs, axis=2)
    return viterbi(outputs, lengths, *constrained_scores(num_tags, crf, allowed, outputs.dtype))


def log_likelihood_and_grads(
    emissions: np.ndarray,
    tags: np.ndarray,
    lengths: np.ndarray,
    weights: Mapping[str, np.ndarray],
    cotangent: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The CRF log-likelihood per row and the gradients of `sum(ll * cotangent)` w.r.t. the
    emissions ("emissions") and the canonical CRF weights, computed by TensorFlow's autodiff."""
    dtype = np.asarray(emissions).dtype.name
    crf = Crf(int(weights["crf.start"].shape[0]), dtype=dtype)
    parts = ("transitions", "start", "end")
    for part in parts:
        getattr(crf, part).assign(np.asarray(weights[f"crf.{part}"], dtype))
    e = tf.constant(emissions)
    with tf.GradientTape() as tape:
        tape.watch(e)
        ll = crf.log_likelihood(e, tf.constant(tags), tf.constant(lengths))
        total = tf.reduce_sum(ll * tf.constant(cotangent, dtype))
    grads = tape.gradient(total, [e, *(getattr(crf, part) for part in parts)])
    named = {"emissions": grads[0], **{f"crf.{p}": g for p, g in zip(parts, grads[1:], strict=True)}}
    return ll.numpy(), {name: np.asarray(g) for name, g in named.items()}
