"""Idioms of public Keras models that import exactly (issue 29, part 4), each as a minimal model.

`from_native` verifies each import against the Keras model itself; these tests also compare
the import, built on torch, with the Keras model on their own padded batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rnncore
from rnncore.native import UnsupportedNativeModel, from_native, import_native
from rnncore.tolerances import assert_close

TF = rnncore.get_backend("tensorflow")  # chooses Keras' backend (and imports torch first)
import keras  # noqa: E402

VOCAB, EMBED, HIDDEN, STEPS = 20, 5, 4, 6
LENGTHS = np.array([STEPS, 3, 1, 5])


def _ids(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(len(LENGTHS), STEPS))
    return np.where(np.arange(STEPS) < LENGTHS[:, None], ids, 0).astype("int32")


def _randomise(model: Any, seed: int = 0) -> Any:
    """Every weight uniform in +-0.5; batch-norm variances kept positive."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        low = 0.2 if "variance" in variable.path else -0.5
        variable.assign(rng.uniform(low, low + 1.0, variable.shape).astype(variable.dtype))
    return model


def _torch_matches_keras(model: Any, activation: str = "linear") -> float:
    spec, weights = from_native(model)
    x = _ids()
    expected = np.asarray(model(x, training=False))
    got = rnncore.predict(rnncore.build(spec, backend="torch", weights=weights), x, LENGTHS)
    got = rnncore.native.activate(got, activation)
    assert_close(got, expected, "outputs", spec.dtype)
    return float(np.abs(got - expected).max())


CELLS = {"lstm": keras.layers.LSTMCell, "gru": keras.layers.GRUCell, "rnn": keras.layers.SimpleRNNCell}


@pytest.mark.parametrize("cell", list(CELLS))
def test_rnn_of_a_cell_reads_as_the_layer(cell):
    model = keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int32"),
            keras.layers.Embedding(VOCAB, EMBED, mask_zero=True),
            keras.layers.Bidirectional(keras.layers.RNN(CELLS[cell](HIDDEN), return_sequences=True)),
            keras.layers.RNN(CELLS[cell](HIDDEN)),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    with pytest.raises(UnsupportedNativeModel, match="rnncore stacks layers of one kind"):
        from_native(model)  # a bidirectional then a unidirectional layer: not one kind
    model = keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int32"),
            keras.layers.Embedding(VOCAB, EMBED, mask_zero=True),
            keras.layers.Bidirectional(keras.layers.RNN(CELLS[cell](HIDDEN), return_sequences=True)),
            keras.layers.Bidirectional(keras.layers.RNN(CELLS[cell](HIDDEN))),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    _randomise(model)
    spec, _ = from_native(model)
    assert (spec.encoder.cell, spec.encoder.num_layers, spec.encoder.bidirectional) == (cell, 2, True)
    assert _torch_matches_keras(model, "softmax") < 1e-5


def test_rnn_of_stacked_cells_is_refused():
    cells = keras.layers.StackedRNNCells([keras.layers.LSTMCell(HIDDEN), keras.layers.LSTMCell(HIDDEN)])
    model = keras.Sequential(
        [keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(VOCAB, EMBED),
         keras.layers.RNN(cells), keras.layers.Dense(2)]
    )  # fmt: skip
    with pytest.raises(UnsupportedNativeModel, match="RNN of StackedRNNCells is not an LSTM"):
        from_native(model)


def test_batch_normalization_folds_into_the_dense_after_it():
    model = _randomise(
        keras.Sequential(
            [
                keras.Input(shape=(None,), dtype="int32"),
                keras.layers.Embedding(VOCAB, EMBED, mask_zero=True),
                keras.layers.GRU(HIDDEN, return_sequences=True),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(6, activation="relu"),
                keras.layers.BatchNormalization(epsilon=0.01),
                keras.layers.Dropout(0.2),
                keras.layers.Dense(2),
            ]
        )
    )
    spec, _ = from_native(model)
    assert spec.head is not None and spec.head.hidden == (6,)
    assert _torch_matches_keras(model) < 1e-5


def test_batch_normalization_at_the_output_is_refused():
    model = keras.Sequential(
        [keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(VOCAB, EMBED),
         keras.layers.LSTM(HIDDEN), keras.layers.Dense(2), keras.layers.BatchNormalization()]
    )  # fmt: skip
    with pytest.raises(UnsupportedNativeModel, match="no Dense after it"):
        from_native(model)


def test_an_unbuilt_sequential_is_built_from_its_embedding():
    model = keras.Sequential(
        [
            keras.layers.Embedding(VOCAB, EMBED, mask_zero=True),
            keras.layers.LSTM(HIDDEN),
            keras.layers.Dense(2, activation="sigmoid"),
        ]
    )
    found = import_native(model)
    assert found.verified and found.spec.input.padding_idx == 0
    assert _torch_matches_keras(model, "sigmoid") < 1e-5


def test_an_unbuilt_sequential_of_features_is_refused_with_the_fix():
    model = keras.Sequential([keras.layers.LSTM(HIDDEN), keras.layers.Dense(2)])
    with pytest.raises(UnsupportedNativeModel, match=r"keras.Input\(shape=\(None, features\)\)"):
        from_native(model)


def test_a_leading_text_vectorization_is_refused_with_the_way_round():
    model = keras.Sequential(
        [keras.Input(shape=(1,), dtype="string"), keras.layers.TextVectorization(max_tokens=VOCAB),
         keras.layers.Embedding(VOCAB, EMBED), keras.layers.LSTM(HIDDEN), keras.layers.Dense(2)]
    )  # fmt: skip
    with pytest.raises(UnsupportedNativeModel, match="TextVectorization input") as err:
        from_native(model)
    assert "keras.Model(ids, outputs)" in err.value.reason
