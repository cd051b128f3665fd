"""Checking a batch of inputs and working out its lengths, once for every backend."""

from __future__ import annotations

import numpy as np

from .spec import ModelSpec


class InputError(ValueError):
    """A batch does not fit the spec (shape, dtype, token ids, lengths)."""


def prepare_batch(
    spec: ModelSpec, inputs: np.ndarray, lengths: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a right-padded batch and return (inputs, lengths) as numpy arrays.

    Token inputs come back as int64 `(B, T)`, feature inputs as `(B, T, F)` in the spec's
    dtype; lengths as int64 `(B,)`. With `lengths=None`, token rows are valid up to and
    including their last non-padding id; feature rows are full length. Every length must
    be in 1..T: an empty row has no last step and no mean, so it is an error, not a NaN.
    """
    x = np.asarray(inputs)
    x = _check_tokens(spec, x) if spec.input.kind == "tokens" else _check_features(spec, x)
    batch, steps = x.shape[:2]
    if lengths is None:
        lengths_arr = _lengths_from_padding(spec, x)
    else:
        lengths_arr = np.asarray(lengths)
        if lengths_arr.shape != (batch,) or not np.issubdtype(lengths_arr.dtype, np.integer):
            raise InputError(
                f"lengths must be integers of shape ({batch},), one per row; got "
                f"{lengths_arr.dtype} {lengths_arr.shape}"
            )
        lengths_arr = lengths_arr.astype(np.int64)
    bad = np.flatnonzero((lengths_arr < 1) | (lengths_arr > steps))
    if bad.size:
        row = int(bad[0])
        raise InputError(
            f"row {row} has length {int(lengths_arr[row])}; every row needs 1..{steps} valid steps "
            "(drop empty rows before predicting)"
        )
    return x, lengths_arr


def _check_tokens(spec: ModelSpec, x: np.ndarray) -> np.ndarray:
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise InputError(f"token inputs must be integer ids of shape (B, T); got {x.dtype} {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"empty batch of shape {x.shape}; need at least one row and one step")
    vocab = spec.input.vocab_size
    assert vocab is not None
    bad = outside_range(x, vocab)
    if bad is not None:
        raise InputError(
            f"token id {bad} is outside the vocabulary 0..{vocab - 1}; the tokenizer and the "
            "spec's vocab_size disagree"
        )
    return x.astype(np.int64, copy=False)


def outside_range(values: np.ndarray, stop: int) -> int | None:
    """An integer of `values` outside 0..stop-1 (the lowest if any is negative), or None."""
    if values.size == 0:
        return None
    low, high = int(values.min()), int(values.max())
    if low < 0:
        return low
    return high if high >= stop else None


def _check_features(spec: ModelSpec, x: np.ndarray) -> np.ndarray:
    width = spec.input.feature_dim
    if x.ndim != 3 or x.shape[2] != width:
        raise InputError(f"feature inputs must have shape (B, T, {width}); got {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"empty batch of shape {x.shape}; need at least one row and one step")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InputError(f"feature inputs must be numbers; got dtype {x.dtype}")
    return x.astype(spec.dtype, copy=False)


def _lengths_from_padding(spec: ModelSpec, x: np.ndarray) -> np.ndarray:
    batch, steps = x.shape[:2]
    pad = spec.input.padding_idx
    if spec.input.kind != "tokens" or pad is None:
        return np.full(batch, steps, dtype=np.int64)
    real = x != pad
    # index of the last real token + 1; a row of padding only gets 0 and is rejected later
    last_real = steps - np.argmax(real[:, ::-1], axis=1)
    return np.where(real.any(axis=1), last_real, 0).astype(np.int64)


def step_mask(lengths: np.ndarray, steps: int) -> np.ndarray:
    """(B, T) boolean: True at valid steps."""
    return np.arange(steps)[None, :] < lengths[:, None]
