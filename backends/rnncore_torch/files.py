"""Model files a PyTorch user already has: a `state_dict` saved with `torch.save`.

Read with `torch.load(..., weights_only=True)`, which refuses arbitrary pickled objects: a
checkpoint is tensors, never code. A state_dict holds weights, not the architecture, so the
spec must be given; its parameter names are those of rnncore's `RnnModel` (what
`torch.save(model.state_dict(), path)` writes for a model rnncore built). A hand-written
module's state_dict is imported through `from_native` on the module instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnncore.spec import ModelSpec
from rnncore.weights import Weights

from .convert import frozen_zero_biases, parameter_map

SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _read_state_dict(path: Path) -> Mapping[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} is not a state_dict that torch.load(weights_only=True) can read ({first_line}); "
            "rnncore loads tensors only, never pickled objects"
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # the common {"state_dict": ..., "epoch": ...} checkpoint
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds {type(state).__name__}, not a state_dict of tensors")
    return state


def load_state_dict_file(path: str | Path, spec: ModelSpec | None) -> Weights:
    """Canonical weights from a state_dict file of an rnncore torch model built from `spec`.

    The LSTM/RNN `bias_hh` that rnncore keeps at zero is folded into the canonical bias when a
    checkpoint has it nonzero (b = b_ih + b_hh is the same function).
    """
    path = Path(path)
    if spec is None:
        raise ValueError(
            f"{path} holds weights, not the architecture: pass the model's spec (--spec spec.json)"
        )
    state = _read_state_dict(path)
    params = dict(parameter_map(spec))
    frozen = set(frozen_zero_biases(spec))
    expected = set(params.values()) | frozen
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the spec: missing {missing[:4] or 'none'}, unexpected "
            f"{unexpected[:4] or 'none'}; is it the state_dict of a model built from this spec? "
            "For a hand-written module use rnncore.from_native(module)"
        )
    weights = {name: state[param].detach().cpu().numpy().copy() for name, param in params.items()}
    for canonical, param in params.items():
        folded = param.replace("bias_ih", "bias_hh")
        if param != folded and folded in frozen:
            weights[canonical] = weights[canonical] + state[folded].detach().cpu().numpy()
    return {k: np.asarray(v) for k, v in weights.items()}
