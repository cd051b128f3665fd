"""The numpy oracle: a plain, step-by-step forward pass of a spec on canonical weights.

It favours being obviously right over being fast. Every backend is tested against it.

Semantics (the definition the backends must reproduce):
- a row of length L uses steps 0..L-1 only; the forward direction runs 0 -> L-1, the
  backward direction L-1 -> 0; both start from a zero state;
- a layer's output at padded steps is zero; a residual layer adds its input at valid steps
  (in training, dropout acts on the recurrent branch before the add: x + dropout(rnn(x)));
- pooling `last` takes the forward half at step L-1 and the backward half at step 0;
  `mean`/`max`/`attention` look at valid steps only;
- the head applies Dense -> activation (-> dropout, training only) per hidden layer, then
  a Dense to logits; with per-step output (tagging) padded steps are zero.
"""

from __future__ import annotations

import math

import numpy as np

from .batch import prepare_batch, step_mask
from .spec import ModelSpec
from .weights import Weights, check_weights, head_layer_names, iter_layers


def sigmoid(x: np.ndarray) -> np.ndarray:
    # split by sign so that neither branch overflows
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def lstm_step(
    x: np.ndarray, h: np.ndarray, c: np.ndarray, w: Weights, prefix: str
) -> tuple[np.ndarray, np.ndarray]:
    hidden = h.shape[-1]
    z = x @ w[f"{prefix}.W_ih"].T + h @ w[f"{prefix}.W_hh"].T + w[f"{prefix}.b"]
    i, f, g, o = (z[:, k * hidden : (k + 1) * hidden] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def gru_step(x: np.ndarray, h: np.ndarray, w: Weights, prefix: str) -> np.ndarray:
    hidden = h.shape[-1]
    gi = x @ w[f"{prefix}.W_ih"].T + w[f"{prefix}.b_ih"]
    gh = h @ w[f"{prefix}.W_hh"].T + w[f"{prefix}.b_hh"]
    r = sigmoid(gi[:, :hidden] + gh[:, :hidden])
    z = sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
    n = np.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
    return (1.0 - z) * n + z * h


def rnn_step(x: np.ndarray, h: np.ndarray, w: Weights, prefix: str, nonlinearity: str) -> np.ndarray:
    z = x @ w[f"{prefix}.W_ih"].T + h @ w[f"{prefix}.W_hh"].T + w[f"{prefix}.b"]
    return np.tanh(z) if nonlinearity == "tanh" else np.maximum(z, 0.0)


def run_direction(spec: ModelSpec, w: Weights, prefix: str, seq: np.ndarray, backward: bool) -> np.ndarray:
    """One direction of one layer over one row `seq` (L, I) of valid steps -> (L, H)."""
    enc = spec.encoder
    steps = seq.shape[0]
    h = np.zeros((1, enc.hidden_size), dtype=seq.dtype)
    c = np.zeros_like(h)
    out = np.zeros((steps, enc.hidden_size), dtype=seq.dtype)
    order = range(steps - 1, -1, -1) if backward else range(steps)
    for t in order:
        x = seq[t : t + 1]
        if enc.cell == "lstm":
            h, c = lstm_step(x, h, c, w, prefix)
        elif enc.cell == "gru":
            h = gru_step(x, h, w, prefix)
        else:
            h = rnn_step(x, h, w, prefix, enc.nonlinearity)
        out[t] = h[0]
    return out


def encode(spec: ModelSpec, w: Weights, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Embedding + recurrent stack -> (B, T, D*H), zero at padded steps."""
    seq = w["embedding.weight"][x] if spec.input.kind == "tokens" else x
    batch, steps = seq.shape[:2]
    layer_outputs: dict[int, np.ndarray] = {}
    for layer, direction, prefix in iter_layers(spec):
        out = layer_outputs.setdefault(
            layer, np.zeros((batch, steps, spec.encoder.output_size), dtype=seq.dtype)
        )
        half = slice(0, spec.encoder.hidden_size)
        if direction == "bwd":
            half = slice(spec.encoder.hidden_size, 2 * spec.encoder.hidden_size)
        for row in range(batch):
            n = int(lengths[row])
            out[row, :n, half] = run_direction(spec, w, prefix, seq[row, :n], direction == "bwd")
        if direction == "bwd" or not spec.encoder.bidirectional:
            if spec.residual_layers[layer]:
                out = out + seq
            seq = out * step_mask(lengths, steps)[:, :, None]
    return seq


def pool(spec: ModelSpec, w: Weights, seq: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    mask = step_mask(lengths, seq.shape[1])
    rows = np.arange(seq.shape[0])
    if spec.pooling == "none":
        return seq
    if spec.pooling == "last":
        hidden = spec.encoder.hidden_size
        pooled = seq[rows, lengths - 1].copy()
        if spec.encoder.bidirectional:
            pooled[:, hidden:] = seq[:, 0, hidden:]
        return pooled
    if spec.pooling == "mean":
        return seq.sum(axis=1) / lengths[:, None].astype(seq.dtype)
    if spec.pooling == "max":
        return np.where(mask[:, :, None], seq, -np.inf).max(axis=1)
    # attention: masked softmax of a learned score over steps
    scores = seq @ w["pooling.attention.weight"]
    scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=1, keepdims=True)
    alpha = np.exp(scores)
    alpha = alpha / alpha.sum(axis=1, keepdims=True)
    return np.einsum("bt,btd->bd", alpha, seq)


def activate(spec: ModelSpec, x: np.ndarray) -> np.ndarray:
    assert spec.head is not None
    kind = spec.head.activation
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "leaky_relu":
        return np.where(x >= 0, x, spec.head.negative_slope * x)
    if kind == "tanh":
        return np.tanh(x)
    # gelu, exact (erf) form: both frameworks default to it
    erf = np.vectorize(math.erf, otypes=[x.dtype])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def head(spec: ModelSpec, w: Weights, features: np.ndarray) -> np.ndarray:
    names = head_layer_names(spec)
    for i, name in enumerate(names):
        features = features @ w[f"{name}.weight"].T + w[f"{name}.bias"]
        if i < len(names) - 1:
            features = activate(spec, features)
    return features


def reference_forward(
    spec: ModelSpec, weights: Weights, inputs: np.ndarray, lengths: np.ndarray | None = None
) -> np.ndarray:
    """The model's output (eval mode) computed in plain numpy.

    Args:
        spec: the model spec.
        weights: canonical weights (see `rnncore.weights`).
        inputs: `(B, T)` token ids or `(B, T, F)` features, right padded.
        lengths: `(B,)` valid steps per row; None derives them (see `prepare_batch`).
    Returns:
        `(B, num_outputs)` logits, `(B, T, num_outputs)` for tagging (zero at padded steps),
        or the pooled features `(B, D*H)` / `(B, T, D*H)` when the spec has no head.
    """
    w = check_weights(spec, weights)
    x, lengths = prepare_batch(spec, inputs, lengths)
    seq = encode(spec, w, x, lengths)
    out = pool(spec, w, seq, lengths)
    if spec.head is not None:
        out = head(spec, w, out)
        if spec.per_step_output:
            out = out * step_mask(lengths, out.shape[1])[:, :, None]
    return out.astype(spec.dtype, copy=False)
