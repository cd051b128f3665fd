"""Importing hand-written Keras 3 models (`rnncore_tensorflow.from_native`): parity and refusals.

Each supported pattern is a small Keras model written the way the Keras examples write them.
Its weights are randomised (biases non-zero), it is imported, compiled on the *other* backend
(torch), and torch and the numpy oracle must agree with the original Keras model on a
right-padded batch with varied lengths. rnncore outputs logits, so the Keras output
activation (softmax/sigmoid) is applied to them before comparing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import rnncore
from rnncore.batch import step_mask
from rnncore.native import UnsupportedNativeModel, from_native
from rnncore.tolerances import assert_close

TF = rnncore.get_backend("tensorflow")  # chooses Keras' backend (and imports torch first)
import keras  # noqa: E402

VOCAB, EMBED, HIDDEN, STEPS = 20, 5, 4, 6
LENGTHS = np.array([STEPS, 3, 1, 5])


def _ids(lengths: np.ndarray = LENGTHS, seed: int = 0) -> np.ndarray:
    """Token ids 1..VOCAB-1, right padded with 0 (no 0 inside a row)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(len(lengths), STEPS))
    return np.where(np.arange(STEPS) < lengths[:, None], ids, 0).astype("int32")


def _features(width: int, dtype: str = "float32", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((len(LENGTHS), STEPS, width)).astype(dtype)


def _randomise(model: Any, seed: int = 0) -> Any:
    """Every weight uniform in +-0.5: biases non-zero, embedding row 0 included."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.uniform(-0.5, 0.5, variable.shape).astype(variable.dtype))
    return model


def _activate(logits: np.ndarray, activation: str | None) -> np.ndarray:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if activation == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return logits


def check_parity(
    model: Any, x: np.ndarray, lengths: np.ndarray | None, activation: str | None = None, **options: Any
) -> tuple[rnncore.ModelSpec, dict[str, np.ndarray], dict[str, float]]:
    """Import `model`; torch and the oracle must match Keras. Returns spec, weights, max abs diffs."""
    spec, weights = from_native(model, **options)
    assert list(weights) == list(rnncore.canonical_shapes(spec))
    expected = np.asarray(model(x, training=False))
    torch_model = rnncore.build(spec, backend="torch", weights=weights)
    outputs = {
        "torch": _activate(rnncore.predict(torch_model, x, lengths), activation),
        "oracle": _activate(rnncore.reference_forward(spec, weights, x, lengths), activation),
    }
    diffs = {}
    for name, got in outputs.items():
        if spec.per_step_output:  # Keras leaves padded steps non-zero; compare valid steps
            _, checked = rnncore.prepare_batch(spec, x, lengths)
            valid = step_mask(checked, x.shape[1])
            got, want = got[valid], expected[valid]
        else:
            want = expected
        assert_close(got, want, "outputs", spec.dtype)
        diffs[name] = float(np.abs(got - want).max())
    return spec, weights, diffs


# ---- supported patterns --------------------------------------------------------------


def imdb_bidirectional_lstm() -> Any:
    """The Keras IMDB example: two BiLSTMs, the last one returning its final state."""
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, EMBED, mask_zero=True)(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(HIDDEN, return_sequences=True))(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(HIDDEN))(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return _randomise(keras.Model(inputs, outputs))


def gru_average_pooling() -> Any:
    return _randomise(
        keras.Sequential(
            [
                keras.Input(shape=(None,), dtype="int32"),
                keras.layers.Embedding(VOCAB, EMBED, mask_zero=True),
                keras.layers.Dropout(0.2),
                keras.layers.GRU(HIDDEN, return_sequences=True, dropout=0.1),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dropout(0.3),
                keras.layers.Dense(3, activation="relu"),
                keras.layers.Dense(3, activation="softmax"),
            ]
        )
    )


def test_imdb_bidirectional_lstm_last_state():
    spec, _, _ = check_parity(imdb_bidirectional_lstm(), _ids(), LENGTHS, "sigmoid")
    assert spec.input.padding_idx == 0 and spec.pooling == "last"
    enc = spec.encoder
    assert (enc.cell, enc.num_layers, enc.bidirectional, enc.hidden_size) == ("lstm", 2, True, HIDDEN)
    assert spec.head is not None and (spec.head.task, spec.head.num_outputs) == ("multilabel", 1)


def test_gru_mean_pooling_with_dropout_and_hidden_dense():
    spec, _, _ = check_parity(gru_average_pooling(), _ids(), LENGTHS, "softmax")
    assert (spec.encoder.cell, spec.pooling, spec.encoder.dropout) == ("gru", "mean", 0.2)
    assert spec.head == rnncore.HeadSpec(num_outputs=3, task="classification", hidden=(3,), dropout=0.3)


def test_simple_rnn_relu_without_mask_runs_over_every_step():
    model = keras.Sequential(
        [
            keras.layers.Embedding(VOCAB, EMBED),  # mask_zero=False: Keras reads the pads too
            keras.layers.SimpleRNN(HIDDEN, activation="relu", return_sequences=True),
            keras.layers.SimpleRNN(HIDDEN, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    model.build((None, STEPS))  # a Sequential built without an Input
    spec, _, _ = check_parity(_randomise(model), _ids(), None, task="regression")
    assert spec.input.padding_idx is None and spec.encoder.nonlinearity == "relu"
    assert spec.head is not None and spec.head.task == "regression"


def test_per_step_tagger():
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, EMBED, mask_zero=True)(inputs)
    x = keras.layers.Bidirectional(keras.layers.GRU(HIDDEN, return_sequences=True))(x)
    x = keras.layers.TimeDistributed(keras.layers.Dense(3, activation="tanh"))(x)
    outputs = keras.layers.Dense(5, activation="softmax")(x)
    spec, _, _ = check_parity(_randomise(keras.Model(inputs, outputs)), _ids(), LENGTHS, "softmax")
    assert spec.pooling == "none" and spec.head is not None
    assert (spec.head.task, spec.head.hidden, spec.head.activation) == ("tagging", (3,), "tanh")


def test_features_bidirectional_max_pooling_without_mask():
    inputs = keras.Input(shape=(None, 3))
    x = keras.layers.Bidirectional(keras.layers.LSTM(HIDDEN, return_sequences=True))(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalMaxPooling1D()(x))
    spec, _, _ = check_parity(_randomise(keras.Model(inputs, outputs)), _features(3), None)
    assert (spec.input.kind, spec.input.feature_dim, spec.pooling) == ("features", 3, "max")


@pytest.mark.filterwarnings("ignore:.*does not support masking")
def test_masked_max_pooling_is_exact_after_a_unidirectional_layer():
    # GlobalMaxPooling1D drops the mask, but a unidirectional RNN repeats its step L-1 output
    # over the padding, so the max over all steps is the max over the valid ones.
    model = keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int32"),
            keras.layers.Embedding(VOCAB, EMBED, mask_zero=True),
            keras.layers.LSTM(HIDDEN, return_sequences=True),
            keras.layers.GlobalMaxPooling1D(),
            keras.layers.Dense(2),
        ]
    )
    spec, _, _ = check_parity(_randomise(model), _ids(), LENGTHS)
    assert spec.pooling == "max" and spec.input.padding_idx == 0


@pytest.fixture
def floatx64() -> Iterator[None]:
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


def float64_gru_stack() -> Any:
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, EMBED, mask_zero=True)(inputs)
    x = keras.layers.Bidirectional(keras.layers.GRU(HIDDEN, return_sequences=True))(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(HIDDEN, return_sequences=True))(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(2)(keras.layers.Dense(3, activation="tanh")(x))
    return _randomise(keras.Model(inputs, outputs))


def test_float64_model(floatx64):
    spec, weights, _ = check_parity(float64_gru_stack(), _ids(), LENGTHS)
    assert spec.dtype == "float64" and all(w.dtype == np.float64 for w in weights.values())


HIDDEN_ACTIVATIONS: dict[str, Callable[[], list[Any]]] = {
    "gelu": lambda: [keras.layers.Dense(3, activation="gelu")],
    "leaky_relu": lambda: [keras.layers.Dense(3, activation="leaky_relu")],
    "LeakyReLU_layer": lambda: [keras.layers.Dense(3), keras.layers.LeakyReLU(negative_slope=0.1)],
    "Activation_layer": lambda: [keras.layers.Dense(3), keras.layers.Activation("relu")],
}
EXPECTED_ACTIVATION = {
    "gelu": ("gelu", 0.01),
    "leaky_relu": ("leaky_relu", 0.2),
    "LeakyReLU_layer": ("leaky_relu", 0.1),
    "Activation_layer": ("relu", 0.01),
}


@pytest.mark.parametrize("kind", list(HIDDEN_ACTIVATIONS))
def test_hidden_dense_activations(kind):
    layers = [keras.Input(shape=(None, 3)), keras.layers.SimpleRNN(HIDDEN)]
    layers += HIDDEN_ACTIVATIONS[kind]() + HIDDEN_ACTIVATIONS[kind]() + [keras.layers.Dense(2)]
    spec, _, _ = check_parity(_randomise(keras.Sequential(layers)), _features(3) * 3, None)
    assert spec.head is not None
    assert (spec.head.activation, spec.head.negative_slope) == EXPECTED_ACTIVATION[kind]
    assert spec.head.hidden == (3, 3)


@pytest.mark.parametrize("cell", [keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN])
def test_no_bias_imports_zero_biases(cell):
    model = keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int32"),
            keras.layers.Embedding(VOCAB, EMBED, mask_zero=True),
            cell(HIDDEN, use_bias=False),
            keras.layers.Dense(3, activation="relu", use_bias=False),
            keras.layers.Dense(2, use_bias=False),
        ]
    )
    _, weights, _ = check_parity(_randomise(model), _ids(), LENGTHS)
    biases = [name for name in weights if re.search(r"\.(b|b_ih|b_hh|bias)$", name)]
    assert biases and all(not weights[name].any() for name in biases)


def test_model_reloaded_from_a_keras_file(tmp_path):
    model = imdb_bidirectional_lstm()
    model.save(tmp_path / "imdb.keras")
    loaded = keras.saving.load_model(tmp_path / "imdb.keras")
    spec, weights, _ = check_parity(loaded, _ids(), LENGTHS, "sigmoid")
    original_spec, original_weights = from_native(model)
    assert spec == original_spec
    assert all(np.array_equal(weights[name], value) for name, value in original_weights.items())
    # Keras keeps a (masked, never read) embedding row 0; the import zeroes it, exactly
    assert np.asarray(model.get_layer(index=1).embeddings)[0].any()
    assert not weights["embedding.weight"][0].any()


def test_a_model_built_by_rnncore_returns_its_own_spec():
    spec = rnncore.ModelSpec.from_file("rnncore/examples/sentiment_bilstm.json")
    weights = rnncore.init_weights(spec, seed=1)
    imported_spec, imported = TF.from_native(rnncore.build(spec, backend="keras", weights=weights))
    assert imported_spec == spec
    assert all(np.array_equal(imported[name], value) for name, value in weights.items())


def test_owns_native():
    assert TF.owns_native(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    assert not TF.owns_native(object())


# ---- refusals ------------------------------------------------------------------------


def _tokens_model(*layers: Any, mask_zero: bool = True) -> Any:
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, EMBED, mask_zero=mask_zero)(inputs)
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def _two_inputs() -> Any:
    a, b = keras.Input(shape=(None, 3)), keras.Input(shape=(None, 3))
    x = keras.layers.Concatenate()([a, b])
    return keras.Model([a, b], keras.layers.LSTM(HIDDEN)(x), name="two_in")


def _two_outputs() -> Any:
    inputs = keras.Input(shape=(None, 3))
    x = keras.layers.LSTM(HIDDEN)(inputs)
    return keras.Model(inputs, [keras.layers.Dense(1)(x), keras.layers.Dense(2)(x)], name="two_out")


def _residual() -> Any:
    inputs = keras.Input(shape=(None, 2 * HIDDEN))
    x = keras.layers.Bidirectional(keras.layers.LSTM(HIDDEN, return_sequences=True))(inputs)
    x = keras.layers.Add(name="residual")([x, inputs])
    return keras.Model(inputs, keras.layers.LSTM(HIDDEN)(x))


def _mixed_dtype() -> Any:
    return keras.Sequential(
        [
            keras.Input(shape=(None, 3), dtype="float64"),
            keras.layers.LSTM(HIDDEN, return_sequences=True, dtype="float64"),
            keras.layers.Dropout(0.1, name="f32_dropout"),  # float32: would round the stream
            keras.layers.LSTM(HIDDEN, dtype="float64"),
        ]
    )


def _stateful() -> Any:
    inputs = keras.Input(batch_shape=(2, None, 3))
    return keras.Model(inputs, keras.layers.LSTM(HIDDEN, stateful=True, name="st")(inputs))


def _explicit_mask() -> Any:
    # the mask mask_zero=True would give, but passed by hand to an Embedding without mask_zero
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, EMBED)(inputs)
    return keras.Model(inputs, LSTM(HIDDEN, name="l")(x, mask=keras.ops.not_equal(inputs, 0)))


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__(name="subclassed")
        self.lstm = keras.layers.LSTM(HIDDEN)

    def call(self, inputs: Any) -> Any:
        return self.lstm(inputs)


def _subclassed() -> Any:
    model = Subclassed()
    model(np.zeros((1, 2, 3), "float32"))
    return model


LSTM, GRU, Dense, Bi = keras.layers.LSTM, keras.layers.GRU, keras.layers.Dense, keras.layers.Bidirectional
SEQ = {"return_sequences": True}
Case = tuple[Callable[[], Any], str, str, dict[str, Any]]
# group -> case -> (model builder, layer named in the error, reason pattern, options)
REFUSALS: dict[str, dict[str, Case]] = {
    "recurrent_settings": {
        "gru_reset_before": (lambda: _tokens_model(GRU(4, reset_after=False, name="g")), "g",
                             "reset_after=False", {}),
        "recurrent_dropout": (lambda: _tokens_model(LSTM(4, recurrent_dropout=0.1, name="l")), "l",
                              "recurrent_dropout=0.1", {}),
        "hard_sigmoid": (lambda: _tokens_model(LSTM(4, recurrent_activation="hard_sigmoid", name="l")), "l",
                         "recurrent_activation 'hard_sigmoid'", {}),
        "lstm_relu": (lambda: _tokens_model(LSTM(4, activation="relu", name="l")), "l",
                      "activation 'relu'.*tanh", {}),
        "rnn_sigmoid": (lambda: _tokens_model(keras.layers.SimpleRNN(4, activation="sigmoid", name="r")), "r",
                        "activation 'sigmoid'.*tanh or relu", {}),
        "stateful": (_stateful, "st", "stateful=True", {}),
        "go_backwards": (lambda: _tokens_model(LSTM(4, go_backwards=True, name="l")), "l",
                         "go_backwards=True", {}),
        "merge_sum": (lambda: _tokens_model(Bi(LSTM(4), merge_mode="sum", name="bi")), "bi",
                      "merge_mode='sum'", {}),
        "different_widths": (lambda: _tokens_model(LSTM(4, **SEQ), LSTM(5, name="l2")), "l2",
                             "one kind and width", {}),
    },
    "masks": {
        "masking": (lambda: keras.Sequential([keras.Input((None, 3)), keras.layers.Masking(name="m"),
                                              LSTM(4)]), "m", "Masking .* hole", {}),
        "explicit_mask": (_explicit_mask, "l", "explicit mask", {}),
        "bidirectional_masked_max": (lambda: _tokens_model(Bi(LSTM(4, **SEQ)),
                                                           keras.layers.GlobalMaxPooling1D(name="mx")), "mx",
                                     "ignores the mask", {}),
    },
    "graph": {
        "conv1d": (lambda: _tokens_model(keras.layers.Conv1D(4, 2, name="c"), LSTM(4)), "c",
                   "Conv1D has no rnncore equivalent", {}),
        "layer_norm": (lambda: _tokens_model(LSTM(4, **SEQ), keras.layers.LayerNormalization(name="n")), "n",
                       "LayerNormalization has no rnncore equivalent", {}),
        "reshape_after_pooling": (lambda: _tokens_model(LSTM(4, **SEQ), keras.layers.GlobalAveragePooling1D(),
                                                        keras.layers.Reshape((1, 4), name="rs")), "rs",
                                  "Reshape", {}),
        "two_inputs": (_two_inputs, "two_in", "2 inputs", {}),
        "two_outputs": (_two_outputs, "two_out", "2 outputs", {}),
        "residual_add": (_residual, "residual", "several tensors", {}),
        "subclassed": (_subclassed, "subclassed", "no layer graph", {}),
        # an unbuilt Sequential is built from its Embedding; without one it has no declared input
        "unbuilt_sequential": (lambda: keras.Sequential([LSTM(4)], name="lazy"), "lazy",
                               r"declares no input; start it with keras.Input", {}),
    },
    "head": {
        "linear_hidden_dense": (lambda: _tokens_model(LSTM(4), Dense(3, name="h"), Dense(2)), "h",
                                "hidden Dense activation 'linear'", {}),
        "mixed_hidden_activations": (lambda: _tokens_model(LSTM(4), Dense(3, "relu"),
                                                           Dense(3, "tanh", name="h2"), Dense(2)), "h2",
                                     "differs from the first hidden", {}),
        "relu_output": (lambda: _tokens_model(LSTM(4), Dense(2, "relu", name="out")), "out",
                        "output activation 'relu'", {}),
        "task_conflict": (lambda: _tokens_model(LSTM(4), Dense(2, "softmax", name="out")), "out",
                          "implies task 'classification'", {"task": "regression"}),
    },
    "dtype": {
        "mixed_dtype": (_mixed_dtype, "f32_dropout", "computes in float32.*float64", {}),
    },
}  # fmt: skip


@pytest.mark.filterwarnings("ignore:.*does not support masking")
@pytest.mark.parametrize("group", list(REFUSALS))
def test_refusals_name_the_layer_and_the_reason(group):
    # one test per group, not per case: conftest's Keras clean-up costs ~1 s per test
    wrong = []
    for case, (build, layer, reason, options) in REFUSALS[group].items():
        try:
            from_native(build(), **options)
        except UnsupportedNativeModel as err:
            named = (err.layer, str(err)) == (layer, f"{layer}: {err.reason}")
            if not named or not re.search(reason, err.reason):
                wrong.append(f"{case}: got {err}; expected layer {layer!r}, reason /{reason}/")
        else:
            wrong.append(f"{case}: not refused")
    assert not wrong, "\n".join(wrong)
