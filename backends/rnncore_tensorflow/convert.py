"""Canonical weights <-> Keras variables: every layout difference, written once.

A `Binding` pairs one Keras variable with the canonical tensors it holds and two pure
functions between the layouts. Weights and gradients go through the same functions (the maps
are transposes and block permutations, so they are linear and gradients map like weights).

What differs, and why:
- Keras kernels are `(in, out)`; canonical matrices are torch's `(out, in)`: transpose.
- LSTM: Keras stacks gates i, f, c, o, canonical i, f, g, o; Keras' c is the cell candidate,
  canonical g, so the order matches and only the transpose remains. One bias each.
- GRU: Keras stacks z, r, h, canonical r, z, n: the first two blocks swap. With
  reset_after=True Keras keeps both biases in one `(2, 3H)` variable, row 0 the input bias
  (canonical b_ih), row 1 the recurrent bias (b_hh).
- SimpleRNN: one gate block, one bias.
- Dense: kernel `(in, out)`, canonical `(out, in)`. Embedding `(V, E)` is the same in both.
- CRF: transitions (from, to), start and end, the same in both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnncore.spec import ModelSpec
from rnncore.weights import Weights, head_layer_names, iter_layers

from . import naming

# Gate blocks in stacking order; Keras' LSTM "c" and GRU "h" are canonical "g" and "n".
KERAS_GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("z", "r", "n"), "rnn": ("h",)}
CANONICAL_GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ("h",)}


@dataclass(frozen=True)
class Binding:
    """One Keras variable and the canonical tensors it holds."""

    variable: Any
    to_canonical: Callable[[np.ndarray], Weights]
    to_native: Callable[[Mapping[str, np.ndarray]], np.ndarray]


def _reorder(value: np.ndarray, src: tuple[str, ...], dst: tuple[str, ...], axis: int) -> np.ndarray:
    blocks = np.split(value, len(src), axis=axis)
    return np.concatenate([blocks[src.index(gate)] for gate in dst], axis=axis)


def _same(variable: Any, name: str) -> Binding:
    return Binding(variable, lambda a: {name: a}, lambda w: w[name])


def _transposed(variable: Any, name: str) -> Binding:
    return Binding(variable, lambda a: {name: a.T}, lambda w: w[name].T)


def _gate_matrix(variable: Any, name: str, cell: str) -> Binding:
    keras_order, canonical = KERAS_GATES[cell], CANONICAL_GATES[cell]
    return Binding(
        variable,
        lambda a: {name: _reorder(a, keras_order, canonical, axis=1).T},
        lambda w: _reorder(w[name], canonical, keras_order, axis=0).T,
    )


def _gate_bias(variable: Any, name: str, cell: str) -> Binding:
    keras_order, canonical = KERAS_GATES[cell], CANONICAL_GATES[cell]
    return Binding(
        variable,
        lambda a: {name: _reorder(a, keras_order, canonical, axis=0)},
        lambda w: _reorder(w[name], canonical, keras_order, axis=0),
    )


def _gru_biases(variable: Any, prefix: str) -> Binding:
    keras_order, canonical = KERAS_GATES["gru"], CANONICAL_GATES["gru"]
    names = (f"{prefix}.b_ih", f"{prefix}.b_hh")  # rows 0 and 1 of the Keras variable
    return Binding(
        variable,
        lambda a: {n: _reorder(row, keras_order, canonical, axis=0) for n, row in zip(names, a, strict=True)},
        lambda w: np.stack([_reorder(w[n], canonical, keras_order, axis=0) for n in names]),
    )


def _recurrent(model: Any, layer: int, direction: str) -> Any:
    wrapper = model.get_layer(naming.encoder(layer))
    if direction == "fwd":
        return getattr(wrapper, "forward_layer", wrapper)
    return wrapper.backward_layer


def _cell_bindings(cell_kind: str, cell: Any, prefix: str) -> Iterator[Binding]:
    yield _gate_matrix(cell.kernel, f"{prefix}.W_ih", cell_kind)
    yield _gate_matrix(cell.recurrent_kernel, f"{prefix}.W_hh", cell_kind)
    if cell_kind == "gru":
        yield _gru_biases(cell.bias, prefix)
    else:
        yield _gate_bias(cell.bias, f"{prefix}.b", cell_kind)


def bindings(spec: ModelSpec, model: Any) -> list[Binding]:
    """Every Keras variable that holds canonical weights, found by walking the spec."""
    found: list[Binding] = []
    if spec.input.kind == "tokens":
        found.append(_same(model.get_layer(naming.EMBEDDING).embeddings, "embedding.weight"))
    for layer, direction, prefix in iter_layers(spec):
        cell = _recurrent(model, layer, direction).cell
        found.extend(_cell_bindings(spec.encoder.cell, cell, prefix))
    if spec.pooling == "attention":
        pooling = model.get_layer(naming.POOLING)
        found.append(_same(pooling.attention_weight, "pooling.attention.weight"))
    for name in head_layer_names(spec):
        dense = model.get_layer(naming.head(name))
        found.append(_transposed(dense.kernel, f"{name}.weight"))
        found.append(_same(dense.bias, f"{name}.bias"))
    if spec.head is not None and spec.head.crf:
        crf = model.get_layer(naming.CRF)
        found.extend(_same(getattr(crf, part), f"crf.{part}") for part in ("transitions", "start", "end"))
    return found


def to_canonical(found: list[Binding], native: list[np.ndarray]) -> Weights:
    """Canonical tensors (C-ordered copies) from native arrays, one per binding, in order."""
    out: Weights = {}
    for binding, value in zip(found, native, strict=True):
        for name, array in binding.to_canonical(np.asarray(value)).items():
            out[name] = np.array(array, order="C", copy=True)
    return out


def to_native(found: list[Binding], weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Native arrays, one per binding, from canonical tensors."""
    return [np.ascontiguousarray(binding.to_native(weights)) for binding in found]
