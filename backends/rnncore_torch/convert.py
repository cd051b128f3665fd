"""Canonical weights <-> torch parameters. Every PyTorch quirk of the layout lives here.

- nn.LSTM/nn.GRU/nn.RNN store `weight_ih_l0` as (G*H, I) with gates stacked in the
  canonical order (LSTM i,f,g,o; GRU r,z,n): no transpose, no reordering.
- PyTorch's LSTM and Elman RNN carry two biases, `bias_ih` and `bias_hh`, that are only
  ever added together. The canonical form has one (`b`); we load it into `bias_ih` and
  keep `bias_hh` at zero and frozen (requires_grad=False), so that a training step moves
  exactly one bias, as in Keras. GRU's two biases are not interchangeable (b_hn sits
  inside r * (...)), so GRU keeps both.
- The reverse direction of a bidirectional layer is the `_reverse` suffix.
- nn.Linear stores (out, in), the canonical Dense layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from rnncore.spec import ModelSpec
from rnncore.weights import (
    Weights,
    canonical_shapes,
    cell_bias_names,
    head_layer_names,
    iter_layers,
)

# canonical bias name -> torch nn.RNNBase bias name
_RNN_BIASES = {"b": "bias_ih", "b_ih": "bias_ih", "b_hh": "bias_hh"}


def _rnn_param_name(kind: str, direction: str) -> str:
    return f"{kind}_l0" + ("_reverse" if direction == "bwd" else "")


def parameter_map(spec: ModelSpec) -> Iterator[tuple[str, str]]:
    """(canonical name, torch parameter path in the module) pairs."""
    if spec.input.kind == "tokens":
        yield "embedding.weight", "embedding.weight"
    for layer, direction, prefix in iter_layers(spec):
        rnn = f"encoder.{layer}"
        yield f"{prefix}.W_ih", f"{rnn}.{_rnn_param_name('weight_ih', direction)}"
        yield f"{prefix}.W_hh", f"{rnn}.{_rnn_param_name('weight_hh', direction)}"
        for bias in cell_bias_names(spec.encoder.cell):
            yield f"{prefix}.{bias}", f"{rnn}.{_rnn_param_name(_RNN_BIASES[bias], direction)}"
    if spec.pooling == "attention":
        yield "pooling.attention.weight", "attention.weight"
    for i, name in enumerate(head_layer_names(spec)):
        yield f"{name}.weight", f"dense.{i}.weight"
        yield f"{name}.bias", f"dense.{i}.bias"
    if spec.head is not None and spec.head.crf:
        for part in ("transitions", "start", "end"):
            yield f"crf.{part}", f"crf.{part}"


def frozen_zero_biases(spec: ModelSpec) -> Iterator[str]:
    """Torch parameters that have no canonical counterpart: LSTM/RNN `bias_hh`, kept at 0."""
    if spec.encoder.cell == "gru":
        return
    for layer, direction, _ in iter_layers(spec):
        yield f"encoder.{layer}.{_rnn_param_name('bias_hh', direction)}"


def to_canonical(spec: ModelSpec, lookup: Callable[[str], torch.Tensor | None]) -> Weights:
    """Collect canonical arrays from torch tensors (parameters or their gradients).

    `lookup` maps a torch parameter path to a tensor; a missing gradient (None) becomes zeros.
    """
    shapes = canonical_shapes(spec)
    out: Weights = {}
    for canonical, path in parameter_map(spec):
        tensor = lookup(path)
        if tensor is None:
            out[canonical] = np.zeros(shapes[canonical], dtype=spec.dtype)
        else:
            out[canonical] = tensor.detach().cpu().numpy().copy()
    return out


@torch.no_grad()
def load_canonical(module: torch.nn.Module, spec: ModelSpec, weights: Weights) -> None:
    """Copy canonical arrays into the module's parameters, in place and exactly."""
    params = dict(module.named_parameters())
    for canonical, path in parameter_map(spec):
        target = params[path]
        target.copy_(torch.from_numpy(np.ascontiguousarray(weights[canonical])).to(target.dtype))
    for path in frozen_zero_biases(spec):
        params[path].zero_()
