"""Numerical edge cases against the numpy oracle: 5,000-step sequences, saturating inputs,
and the largest specs the property tests draw, in float64 at the float64 tolerance."""

from __future__ import annotations

import numpy as np
import pytest

import rnncore
from rnncore.parity import random_batch
from rnncore.tolerances import assert_close

CELLS = ("lstm", "gru", "rnn-tanh", "rnn-relu")


def _spec(cell: str, dtype: str, pooling: str = "none", head: bool = False, **encoder) -> rnncore.ModelSpec:
    name, _, nonlinearity = cell.partition("-")
    task = "tagging" if pooling == "none" else "classification"
    return rnncore.ModelSpec.from_dict(
        {
            "input": {"kind": "features", "feature_dim": 3},
            "encoder": {
                "cell": name,
                "nonlinearity": nonlinearity or "tanh",
                "hidden_size": 4,
                "bidirectional": True,
                **encoder,
            },
            "pooling": pooling,
            "head": {"hidden": [3], "activation": "gelu", "num_outputs": 2, "task": task} if head else None,
            "dtype": dtype,
        }
    )


def _predict(spec, weights, backend, inputs, lengths):
    model = rnncore.build(spec, backend=backend, weights=weights)
    if backend == "tensorflow" and inputs.shape[1] > 100:
        # the Keras runtime runs a model's first call eagerly (one Python step per time step,
        # ~95 s for 5,000 steps) and traces the second (a few seconds, then fast): a short
        # first call buys the graph for a long sequence
        rnncore.predict(model, inputs[:1, :2], np.array([2]))
    return rnncore.predict(model, inputs, lengths)


@pytest.mark.parametrize(
    ("cell", "dtype"),
    [
        ("lstm", "float32"),
        ("lstm", "float64"),
        ("gru", "float64"),
        ("rnn-tanh", "float32"),
        ("rnn-relu", "float32"),
    ],
)
def test_5000_steps_stay_finite_and_match_the_oracle(cell, dtype):
    """Every step of a bidirectional layer is compared (pooling none, no head): an error that
    grows with the number of steps, or a padded tail read backwards, shows."""
    spec = _spec(cell, dtype)
    weights = rnncore.init_weights(spec, seed=0)
    inputs = np.random.default_rng(0).standard_normal((2, 5000, 3)).astype(dtype)
    lengths = np.array([5000, 3777])
    expected = rnncore.reference_forward(spec, weights, inputs, lengths)
    assert np.isfinite(expected).all() and np.abs(expected[1, 3777:]).max() == 0
    for backend in ("torch", "tensorflow"):
        outputs = _predict(spec, weights, backend, inputs, lengths)
        assert np.isfinite(outputs).all(), backend
        assert_close(outputs, expected, "outputs", dtype)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention", "none"])
@pytest.mark.parametrize("cell", CELLS)
def test_saturating_inputs_match_the_oracle(cell, pooling):
    """Features of +-1e4 saturate every sigmoid and tanh (and drive relu states to ~1e3), and
    attention scores to thousands: softmax and the gates must not overflow anywhere."""
    dtype = "float64" if (CELLS.index(cell) + len(pooling)) % 2 else "float32"  # both, across the grid
    spec = _spec(cell, dtype, pooling, head=True, num_layers=2)
    weights = rnncore.init_weights(spec, seed=1)
    inputs = 1e4 * np.random.default_rng(2).standard_normal((4, 9, 3))
    inputs[0], inputs[1] = 1e4, -1e4
    inputs = inputs.astype(dtype)
    lengths = np.array([9, 1, 5, 7])
    expected = rnncore.reference_forward(spec, weights, inputs, lengths)
    assert np.isfinite(expected).all()
    for backend in ("torch", "tensorflow"):
        assert_close(_predict(spec, weights, backend, inputs, lengths), expected, "outputs", dtype)


@pytest.mark.parametrize("cell", CELLS)
def test_the_largest_specs_agree_at_the_float64_tolerance(cell):
    """4 residual bidirectional layers of 64 units over 50 steps, every row a different length."""
    spec = _spec(cell, "float64", "attention", head=True, num_layers=4, hidden_size=64, residual=True)
    weights = rnncore.init_weights(spec, seed=3)
    inputs, lengths = random_batch(spec, batch=9, max_len=50, seed=4)
    expected = rnncore.reference_forward(spec, weights, inputs, lengths)
    for backend in ("torch", "tensorflow"):
        assert_close(_predict(spec, weights, backend, inputs, lengths), expected, "outputs", "float64")
