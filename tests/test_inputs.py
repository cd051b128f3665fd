"""Batches: lengths, padding, and clear errors for inputs that do not fit the spec."""

from __future__ import annotations

import numpy as np
import pytest
from support import spec_for

import rnncore
from rnncore import InputError, WeightsError, prepare_batch
from rnncore.tolerances import compare

SMALL = {"layers": 1, "residual": False}
TOKENS = spec_for({**SMALL, "cell": "gru", "bidirectional": True, "pooling": "mean", "head": "tanh",
                   "input": "tokens", "dtype": "float32"})  # fmt: skip
FEATURES = spec_for({**SMALL, "cell": "lstm", "bidirectional": False, "pooling": "none", "head": "relu",
                     "input": "features", "dtype": "float64"})  # fmt: skip


def test_token_lengths_come_from_the_padding_id():
    ids = np.array([[3, 4, 5, 0], [7, 0, 0, 0], [0, 2, 0, 0]])
    _, lengths = prepare_batch(TOKENS, ids)
    # a padding id before a real token is a real step: rows are valid up to their last real id
    assert lengths.tolist() == [3, 1, 2]


def test_feature_rows_are_full_length_unless_told():
    x = np.zeros((2, 5, 3))
    assert prepare_batch(FEATURES, x)[1].tolist() == [5, 5]
    assert prepare_batch(FEATURES, x, np.array([2, 5]))[1].tolist() == [2, 5]


@pytest.mark.parametrize(
    ("spec", "inputs", "lengths", "message"),
    [
        (TOKENS, np.array([[0, 0], [1, 2]]), None, "row 0 has length 0"),
        (TOKENS, np.array([[1, 2]]), np.array([3]), "row 0 has length 3; every row needs 1..2"),
        (TOKENS, np.array([[1, 2]]), np.array([0]), "drop empty rows"),
        (TOKENS, np.array([[1, 99]]), None, "token id 99 is outside the vocabulary 0..22"),
        (TOKENS, np.array([[1, -1]]), None, "token id -1"),
        (TOKENS, np.array([[1.0, 2.0]]), None, "integer ids of shape (B, T)"),
        (TOKENS, np.zeros((0, 4), dtype=int), None, "empty batch"),
        (TOKENS, np.array([[1, 2]]), np.array([1.5]), "lengths must be integers of shape (1,)"),
        (FEATURES, np.zeros((2, 4, 7)), None, "shape (B, T, 3)"),
        (FEATURES, np.zeros((2, 0, 3)), None, "empty batch"),
    ],
)
def test_bad_batches_are_refused_with_a_reason(spec, inputs, lengths, message):
    with pytest.raises(InputError) as err:
        prepare_batch(spec, inputs, lengths)
    assert message in str(err.value)


def test_backends_refuse_bad_batches_before_the_framework_sees_them(backend):
    model = rnncore.build(TOKENS, backend=backend)
    with pytest.raises(InputError, match="outside the vocabulary"):
        rnncore.predict(model, np.array([[1, 500]]))


def test_wrong_weights_are_refused_with_every_problem_named():
    weights = rnncore.init_weights(TOKENS)
    weights["embedding.weight"] = weights["embedding.weight"][:, :2]
    del weights["head.output.bias"]
    weights["encoder.layers.9.fwd.W_ih"] = np.zeros(3)
    with pytest.raises(WeightsError) as err:
        rnncore.build(TOKENS, backend="torch", weights=weights)
    text = str(err.value)
    assert "missing: head.output.bias" in text
    assert "not in this spec: encoder.layers.9.fwd.W_ih" in text
    assert "embedding.weight has shape (23, 2), the spec needs (23, 5)" in text


def test_integer_weights_are_refused():
    weights = rnncore.init_weights(TOKENS)
    weights["head.output.bias"] = np.zeros(2, dtype=np.int64)
    with pytest.raises(WeightsError, match=r"head\.output\.bias has dtype int64"):
        rnncore.check_weights(TOKENS, weights)


def test_init_weights_is_seeded_and_in_the_spec_dtype():
    a, b, c = (rnncore.init_weights(FEATURES, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    assert {v.dtype for v in a.values()} == {np.dtype("float64")}
    assert np.all(rnncore.init_weights(TOKENS)["embedding.weight"][0] == 0), "padding row starts at zero"


def test_compare_uses_absolute_and_relative_tolerance():
    assert compare(np.array([1.0]), np.array([1.0 + 5e-6]), "outputs", "float32").ok
    assert not compare(np.array([1.0]), np.array([1.0 + 5e-5]), "outputs", "float32").ok
    assert compare(np.array([1e6]), np.array([1e6 + 5.0]), "outputs", "float32").ok  # relative
    assert not compare(np.array([np.nan]), np.array([1.0]), "outputs", "float32").ok
    assert not compare(np.zeros(3), np.zeros(4), "outputs", "float32").ok
    assert not compare(np.array([1.0]), np.array([1.0 + 1e-9]), "outputs", "float64").ok
