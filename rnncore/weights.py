"""The canonical weight layout: one set of names and shapes every backend converts to and from.

| name                                   | shape          | notes                                   |
|----------------------------------------|----------------|-----------------------------------------|
| embedding.weight                       | (V, E)         | tokens input only; row padding_idx is 0 |
| encoder.layers.{l}.{dir}.W_ih          | (G*H, I)       | dir is fwd or bwd; gates stacked below  |
| encoder.layers.{l}.{dir}.W_hh          | (G*H, H)       |                                         |
| encoder.layers.{l}.{dir}.b             | (G*H,)         | lstm and rnn: one bias                  |
| encoder.layers.{l}.{dir}.b_ih, b_hh    | (3H,)          | gru: two biases (reset_after form)      |
| pooling.attention.weight               | (D,)           | attention pooling: score_t = x_t . w    |
| head.hidden.{i}.weight / .bias         | (out, in)/(out,) | Dense layers, torch (out, in) layout  |
| head.output.weight / .bias             | (K, in)/(K,)   | logits                                  |
| crf.transitions                        | (K, K)         | head.crf only: [i, j] scores tag i -> j |
| crf.start / crf.end                    | (K,)           | scores of a path's first / last tag     |

Gate order: LSTM i, f, g, o (G=4); GRU r, z, n (G=3); Elman RNN one block (G=1).
GRU is the "reset after" form: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
I is the layer's input width (E or F for layer 0, H*D after), D = 2 if bidirectional.
The attention score has no bias: softmax ignores a constant shift, so it would never learn.
A CRF's transitions read from (row) -> to (column), pytorch-crf's and AllenNLP's layout.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import numpy as np

from .spec import ModelSpec

Weights = dict[str, np.ndarray]


class WeightsError(ValueError):
    """A weight dict does not match the spec's canonical layout."""


def directions(spec: ModelSpec) -> tuple[str, ...]:
    return ("fwd", "bwd") if spec.encoder.bidirectional else ("fwd",)


def layer_prefix(layer: int, direction: str) -> str:
    return f"encoder.layers.{layer}.{direction}"


def cell_bias_names(cell: str) -> tuple[str, ...]:
    return ("b_ih", "b_hh") if cell == "gru" else ("b",)


def head_layer_names(spec: ModelSpec) -> list[str]:
    """Dense layers of the head, input to output."""
    if spec.head is None:
        return []
    return [f"head.hidden.{i}" for i in range(len(spec.head.hidden))] + ["head.output"]


def head_layer_sizes(spec: ModelSpec) -> list[tuple[int, int]]:
    """(in, out) of each head Dense layer, matching `head_layer_names`."""
    if spec.head is None:
        return []
    widths = [spec.features_size, *spec.head.hidden, spec.head.num_outputs]
    return list(itertools.pairwise(widths))


def canonical_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every canonical weight name with its shape, in a stable order."""
    shapes: dict[str, tuple[int, ...]] = {}
    if spec.input.kind == "tokens":
        assert spec.input.vocab_size is not None and spec.input.embedding_dim is not None
        shapes["embedding.weight"] = (spec.input.vocab_size, spec.input.embedding_dim)
    enc = spec.encoder
    gh = enc.gates * enc.hidden_size
    for layer, in_size in enumerate(spec.layer_input_sizes):
        for direction in directions(spec):
            prefix = layer_prefix(layer, direction)
            shapes[f"{prefix}.W_ih"] = (gh, in_size)
            shapes[f"{prefix}.W_hh"] = (gh, enc.hidden_size)
            for bias in cell_bias_names(enc.cell):
                shapes[f"{prefix}.{bias}"] = (gh,)
    if spec.pooling == "attention":
        shapes["pooling.attention.weight"] = (spec.features_size,)
    for name, (n_in, n_out) in zip(head_layer_names(spec), head_layer_sizes(spec), strict=True):
        shapes[f"{name}.weight"] = (n_out, n_in)
        shapes[f"{name}.bias"] = (n_out,)
    if spec.head is not None and spec.head.crf:
        tags = spec.head.num_outputs
        shapes["crf.transitions"] = (tags, tags)
        shapes["crf.start"] = (tags,)
        shapes["crf.end"] = (tags,)
    return shapes


def init_weights(spec: ModelSpec, seed: int = 0) -> Weights:
    """Fresh canonical weights, the same for every backend given the same seed.

    Recurrent and Dense weights are uniform in +-1/sqrt(fan) (PyTorch's default rule),
    the embedding is standard normal with the padding row zeroed, biases start small and
    non-zero so that tests exercise every bias path.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec.dtype)
    hidden = spec.encoder.hidden_size
    weights: Weights = {}
    for name, shape in canonical_shapes(spec).items():
        if name == "embedding.weight":
            value = rng.standard_normal(shape)
            if spec.input.padding_idx is not None:
                value[spec.input.padding_idx] = 0.0
        elif name.startswith("encoder."):
            bound = 1.0 / np.sqrt(hidden)
            value = rng.uniform(-bound, bound, shape)
        elif name == "pooling.attention.weight":
            value = rng.uniform(-1.0, 1.0, shape) / np.sqrt(shape[0])
        elif name.startswith("crf."):  # pytorch-crf's rule: small, so emissions lead at first
            value = rng.uniform(-0.1, 0.1, shape)
        else:  # head Dense: fan_in is the last axis of (out, in); biases use the layer's fan_in
            fan_in = shape[-1] if len(shape) == 2 else _head_fan_in(spec, name)
            bound = 1.0 / np.sqrt(fan_in)
            value = rng.uniform(-bound, bound, shape)
        weights[name] = value.astype(dtype)
    return weights


def _head_fan_in(spec: ModelSpec, bias_name: str) -> int:
    layer = bias_name.rsplit(".", 1)[0]
    sizes = dict(zip(head_layer_names(spec), head_layer_sizes(spec), strict=True))
    return sizes[layer][0]


def check_weights(spec: ModelSpec, weights: Mapping[str, np.ndarray]) -> Weights:
    """Validate names, shapes and dtype against the spec; return a dict of numpy arrays.

    Raises WeightsError listing every missing, unexpected or mis-shaped tensor.
    """
    expected = canonical_shapes(spec)
    problems: list[str] = []
    missing = [n for n in expected if n not in weights]
    extra = sorted(str(n) for n in weights if n not in expected)  # a stray name may be any type
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if extra:
        problems.append("not in this spec: " + ", ".join(extra))
    dtype = np.dtype(spec.dtype)
    out: Weights = {}
    for name, shape in expected.items():
        if name not in weights:
            continue
        value = np.asarray(weights[name])
        if value.shape != shape:
            problems.append(f"{name} has shape {value.shape}, the spec needs {shape}")
        elif not np.issubdtype(value.dtype, np.floating):
            problems.append(f"{name} has dtype {value.dtype}, the spec needs {dtype}")
        else:
            out[name] = value.astype(dtype, copy=False)
    if problems:
        raise WeightsError(
            "weights do not match the spec: "
            + "; ".join(problems)
            + ". Weights must come from init_weights/get_weights for this same spec."
        )
    return out


def iter_layers(spec: ModelSpec) -> Iterator[tuple[int, str, str]]:
    """(layer index, direction, canonical prefix) for every recurrent sub-layer."""
    for layer in range(spec.encoder.num_layers):
        for direction in directions(spec):
            yield layer, direction, layer_prefix(layer, direction)
