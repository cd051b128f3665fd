"""Zero silent wrong imports: random small native models, built from supported and unsupported
parts, are either refused or compute what the native model computes.

Each model is drawn from a seed. The check uses its own random padded batch (not the probe
`from_native` verifies with): the native model's output against the numpy oracle's output of
the import, on valid steps, within the output tolerance of `rnncore/tolerances.py`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnncore
from rnncore.native import ImportNotVerified, UnsupportedNativeModel, from_native
from rnncore.tolerances import compare

VOCAB, EMB, FEAT, HID, OUT = 15, 4, 3, 4, 3
BATCH, STEPS = 6, 8
TORCH_SEEDS = range(96)
KERAS_SEEDS = range(12)

# how the forward turns RNN results into the head's input; the unsupported ones compute
# something rnncore has no spec for, which must be refused (by the reader or the probe)
SUPPORTED_POOLS = ("h_n[-1]", "h_n fwd+bwd", "h_n bwd+fwd", "mean", "max", "per-step")
UNSUPPORTED_POOLS = ("attention", "first step", "scaled state", "stateful", "sum over time")


@dataclass(frozen=True)
class Draw:
    tokens: bool
    padding_idx: int | None
    cell: type[nn.RNNBase]
    layers: int
    bidirectional: bool
    batch_first: bool
    packed: bool
    pool: str
    hidden: int  # 0: one Linear
    batchnorm: bool
    final: str  # "", "sigmoid", "log_softmax"
    declared: bool

    @classmethod
    def from_seed(cls, seed: int) -> Draw:
        rng = np.random.default_rng(seed)

        def pick(options: Any) -> Any:
            return options[int(rng.integers(len(options)))]

        pool = pick(SUPPORTED_POOLS + UNSUPPORTED_POOLS)
        return cls(
            tokens=bool(rng.random() < 0.7),
            padding_idx=pick((0, None)),
            cell=pick((nn.LSTM, nn.GRU, nn.RNN)),
            layers=int(rng.integers(1, 3)),
            bidirectional=bool(rng.random() < 0.5) or pool in ("h_n fwd+bwd", "h_n bwd+fwd"),
            batch_first=bool(rng.random() < 0.7),
            packed=bool(rng.random() < 0.6),
            pool=pool,
            hidden=pick((0, 0, 5)),
            batchnorm=bool(rng.random() < 0.3) and pool != "per-step",
            final=pick(("", "", "sigmoid", "log_softmax")),
            declared=bool(rng.random() < 0.3),
        )


class Drawn(nn.Module):
    """One model of the draw; the forward branches on the draw only (plain Python constants)."""

    def __init__(self, d: Draw) -> None:
        super().__init__()
        self.d = d
        if d.tokens:
            self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=d.padding_idx)
        width = EMB if d.tokens else FEAT
        self.rnn = d.cell(width, HID, d.layers, batch_first=d.batch_first, bidirectional=d.bidirectional)
        one_state = d.pool in ("h_n[-1]", "stateful", "scaled state", "attention")  # last row of h_n
        features = HID * (2 if d.bidirectional and not one_state else 1)
        layers: list[nn.Module] = [nn.BatchNorm1d(features)] if d.batchnorm else []
        if d.hidden:
            layers += [nn.Linear(features, d.hidden), nn.Tanh()]
            features = d.hidden
        layers.append(nn.Linear(features, OUT))
        if d.final == "sigmoid":
            layers.append(nn.Sigmoid())
        elif d.final == "log_softmax":
            layers.append(nn.LogSoftmax(dim=-1))
        self.head = nn.Sequential(*layers)
        self.state: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        d = self.d
        x = self.embedding(x) if d.tokens else x
        if d.packed:
            x = pack_padded_sequence(x, lengths, batch_first=d.batch_first, enforce_sorted=False)
        hx = self.state if d.pool == "stateful" else None
        out, state = self.rnn(x, hx)
        if d.pool == "stateful":
            self.state = state
        h_n = state[0] if isinstance(state, tuple) else state
        time = 1 if d.batch_first else 0
        if d.packed:
            pad = float("-inf") if d.pool == "max" else 0.0
            out, _ = pad_packed_sequence(out, batch_first=d.batch_first, padding_value=pad)
        if d.pool in ("h_n[-1]", "stateful"):
            pooled = h_n[-1]
        elif d.pool == "h_n fwd+bwd":
            pooled = torch.cat((h_n[-2], h_n[-1]), dim=1)
        elif d.pool == "h_n bwd+fwd":
            pooled = torch.cat((h_n[-1], h_n[-2]), dim=1)
        elif d.pool == "mean":
            pooled = out.mean(dim=time)
        elif d.pool == "sum over time":
            pooled = out.sum(dim=time)
        elif d.pool == "max":
            pooled = out.max(dim=time).values
        elif d.pool == "first step":
            pooled = out[:, 0] if d.batch_first else out[0]
        elif d.pool == "scaled state":
            pooled = h_n[-1] * 2.0
        elif d.pool == "attention":
            steps = out if d.batch_first else out.transpose(0, 1)
            steps = steps[:, :, :HID]  # the forward half, to score against h_n[-1]
            alpha = F.softmax(torch.bmm(steps, h_n[-1].unsqueeze(2)), dim=1)
            pooled = (steps * alpha).sum(dim=1)
        else:  # per-step
            return self.head(out)
        return self.head(pooled)


def _declared_pooling(d: Draw) -> str:
    return {"mean": "mean", "max": "max", "per-step": "none"}.get(d.pool, "last")


def _batch(d: Draw, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A right-padded batch; unpacked feature models see full rows (rnncore takes lengths there)."""
    lengths = rng.integers(1, STEPS + 1, BATCH)
    lengths[0] = STEPS
    if not d.tokens and not d.packed:
        lengths[:] = STEPS
    valid = np.arange(STEPS)[None, :] < lengths[:, None]
    if d.tokens:
        ids = rng.integers(1, VOCAB, (BATCH, STEPS))  # real ids never 0
        return np.where(valid, ids, 0).astype(np.int64), lengths
    return (rng.standard_normal((BATCH, STEPS, FEAT)) * valid[:, :, None]).astype("float32"), lengths


def _native(model: Drawn, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    inputs = torch.from_numpy(x if model.d.batch_first else np.ascontiguousarray(x.swapaxes(0, 1)))
    with torch.no_grad():
        out = model(inputs, torch.from_numpy(lengths)).numpy()
    if model.d.pool == "per-step" and not model.d.batch_first:
        out = out.swapaxes(0, 1)
    return out


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.uniform_(-0.6, 0.6)
            if name.startswith("embedding") and model.d.padding_idx is not None:
                p[model.d.padding_idx] = 0
        for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.3, 2.0)
    return model.eval()


def _outcome(model: Any, options: dict, native: Any, spec_input: Any, passes_lengths: bool) -> str:
    """'refused', or 'imported' after checking the import on a fresh batch.

    rnncore gets the lengths the native model gets where that model uses them (it packs),
    and derives them otherwise (tokens: up to the last non-padding id; features: full rows).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ImportNotVerified)  # every model here can be called
            spec, weights = from_native(model, **options)
    except UnsupportedNativeModel:
        return "refused"
    x, lengths, expected = spec_input()
    given = lengths if passes_lengths else None
    got = rnncore.native.activate(rnncore.reference_forward(spec, weights, x, given), native)
    if spec.per_step_output:
        valid = np.arange(STEPS)[None, :] < lengths[:, None]
        got, expected = got[valid], expected[valid]
    diff = compare(got, expected, "outputs", spec.dtype)
    assert diff.ok, f"silently wrong import: max abs diff {diff.max_abs:.3g}"
    return "imported"


def _torch_outcome(seed: int) -> str:
    d = Draw.from_seed(seed)
    model = _randomised(Drawn(d), seed)
    rng = np.random.default_rng(1000 + seed)

    def fresh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        model.state = None  # a stateful forward starts over, as a user's first call would
        x, lengths = _batch(d, rng)
        return x, lengths, _native(model, x, lengths)

    options = {"pooling": _declared_pooling(d)} if d.declared else {}
    outcome = _outcome(model, options, d.final or "linear", fresh, d.packed)
    assert outcome == "refused" or d.pool in SUPPORTED_POOLS, f"seed {seed}: {d}"
    return outcome


def test_random_torch_models_are_imported_exactly_or_refused():
    outcomes = {seed: _torch_outcome(seed) for seed in TORCH_SEEDS}
    imported = [s for s, o in outcomes.items() if o == "imported"]
    # both outcomes occur, and for traced and declared readings alike
    assert 0 < len(imported) < len(outcomes)
    assert {Draw.from_seed(s).declared for s in imported} == {True, False}


# ---- Keras --------------------------------------------------------------------------------


def _keras_model(seed: int) -> tuple[Any, str]:
    import keras

    rng = np.random.default_rng(seed)
    cell = [keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN][int(rng.integers(3))]
    bidirectional = bool(rng.random() < 0.5)
    ending = ["last", "average", "max", "per-step", "max-masked"][int(rng.integers(5))]

    # one part at most with no exact rnncore equivalent (or none)
    odd = ["", "", "scaled", "layer norm", "sum of directions", "reset_after=False", "no mask"][
        int(rng.integers(7))
    ]

    def recurrent(sequences: bool) -> Any:
        options = {"reset_after": False} if odd == "reset_after=False" and cell is keras.layers.GRU else {}
        layer = cell(HID, return_sequences=sequences, **options)
        if not bidirectional:
            return layer
        return keras.layers.Bidirectional(layer, merge_mode="sum" if odd == "sum of directions" else "concat")

    embedding = keras.layers.Embedding(VOCAB, EMB, mask_zero=odd != "no mask")
    layers = [keras.Input(shape=(None,), dtype="int32"), embedding]
    layers += [recurrent(True)] if rng.random() < 0.5 else []
    layers.append(recurrent(ending != "last"))
    if ending == "average":
        layers.append(keras.layers.GlobalAveragePooling1D())
    elif ending.startswith("max"):
        layers.append(keras.layers.GlobalMaxPooling1D())
    if odd == "scaled":
        layers.append(keras.layers.Rescaling(2.0))
    elif odd == "layer norm":
        layers.append(keras.layers.LayerNormalization())
    if rng.random() < 0.3 and ending != "per-step":
        layers.append(keras.layers.BatchNormalization())
    activation = ["linear", "softmax", "sigmoid"][int(rng.integers(3))]
    layers.append(keras.layers.Dense(OUT, activation=activation))
    model = keras.Sequential(layers)
    weights = np.random.default_rng(seed)
    for variable in model.weights:
        low = 0.3 if "variance" in variable.path else -0.6
        variable.assign(weights.uniform(low, low + 1.2, variable.shape).astype(variable.dtype))
    return model, activation


@pytest.mark.parametrize("seed", KERAS_SEEDS)
def test_random_keras_models_are_imported_exactly_or_refused(seed):
    rnncore.get_backend("tensorflow")  # Keras' backend, torch imported first
    model, activation = _keras_model(seed)
    rng = np.random.default_rng(1000 + seed)

    def fresh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lengths = rng.integers(1, STEPS + 1, BATCH)
        lengths[0] = STEPS
        ids = np.where(np.arange(STEPS) < lengths[:, None], rng.integers(1, VOCAB, (BATCH, STEPS)), 0)
        return ids, lengths, np.asarray(model(ids, training=False))

    _outcome(model, {}, activation, fresh, False)  # Keras masks by itself: lengths derived
