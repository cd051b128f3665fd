"""Property-based checks with hypothesis: random valid specs compute the oracle's function on
both backends; random invalid specs and weight dicts are refused with an error naming the field.

Profiles (`RNNCORE_HYPOTHESIS_PROFILE`):
- `ci` (default): derandomized (the same examples on every run and every machine), no example
  database, about 1,500 examples in all (280 of them parity checks); under two minutes of CPU.
- `long`: random examples, 20x as many (about 31,000; 9 minutes with `-n 2`), the database in
  `.hypothesis/` so that a failure found once is replayed first next time. Run it before a release:
  `RNNCORE_HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_properties.py -n 2`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnncore
from rnncore import ModelSpec, SpecError
from rnncore.spec import ACTIVATIONS, CELLS, DTYPES, FORMAT, NONLINEARITIES, POOLINGS, TASKS
from rnncore.tolerances import assert_close
from rnncore.weights import WeightsError, canonical_shapes

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,  # a Keras build takes about a second, a first TensorFlow call several
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("RNNCORE_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = 20 if PROFILE == "long" else 1


@pytest.fixture(autouse=True)
def subnormal_floats():
    """hypothesis refuses to draw floats where the CPU flushes subnormals to zero, and a torch
    trainer run earlier in this worker process flushes them (by design, for the whole process:
    `rnncore_torch.train`). Each test here starts with them on, as a fresh process has them."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)


def examples(n: int) -> settings:
    """`n` examples under the ci profile, 20x under `long`."""
    return settings(max_examples=n * SCALE)


# ---- valid specs -----------------------------------------------------------------------------
@st.composite
def spec_dicts(draw: st.DrawFn, max_layers: int = 4, max_hidden: int = 64) -> dict[str, Any]:
    """A valid spec dict: every cell, 1..max_layers layers, uni/bi, residual, every pooling,
    every head (or none, tagging included), tokens or features, float32/float64."""
    cell, _, nonlinearity = draw(st.sampled_from(["lstm", "gru", "rnn-tanh", "rnn-relu"])).partition("-")
    layers = draw(st.integers(1, max_layers))
    bidirectional = draw(st.booleans())
    residual = draw(st.booleans())
    hidden = draw(st.integers(1, max_hidden))
    out = hidden * (2 if bidirectional else 1)
    # a one-layer residual needs input width == output width; deeper specs sometimes match too,
    # so that layer 0 takes the residual as well as the later layers
    match = (residual and layers == 1) or draw(st.booleans())
    width = out if match else draw(st.integers(1, max_hidden))
    if draw(st.booleans()):
        vocab = draw(st.integers(1, 40))
        padding = draw(st.one_of(st.none(), st.integers(0, vocab - 1)))
        inp = {"kind": "tokens", "vocab_size": vocab, "embedding_dim": width, "padding_idx": padding}
    else:
        inp = {"kind": "features", "feature_dim": width}
    pooling = draw(st.sampled_from(POOLINGS))
    head = None
    if draw(st.integers(0, 3)):  # a head three times in four
        task = (
            "tagging"
            if pooling == "none"
            else draw(st.sampled_from(["classification", "multilabel", "regression"]))
        )
        head = {
            "hidden": draw(st.lists(st.integers(1, 16), max_size=2)),
            "activation": draw(st.sampled_from(ACTIVATIONS)),
            "negative_slope": draw(st.floats(0, 1)),
            "dropout": draw(st.floats(0, 0.9)),
            "num_outputs": draw(st.integers(1, 5)),
            "task": task,
        }
    encoder = {
        "cell": cell,
        "hidden_size": hidden,
        "num_layers": layers,
        "bidirectional": bidirectional,
        "residual": residual,
        "dropout": draw(st.floats(0, 0.9)),
        "nonlinearity": nonlinearity or "tanh",
    }
    dtype = draw(st.sampled_from(DTYPES))
    return {"input": inp, "encoder": encoder, "pooling": pooling, "head": head, "dtype": dtype}


@st.composite
def batches(draw: st.DrawFn, spec: ModelSpec, max_batch: int = 9, max_len: int = 50) -> tuple[Any, Any]:
    """A batch with random lengths; the padded steps hold random garbage, not padding values,
    so that any leak of padded steps into a result shows."""
    batch = draw(st.integers(1, max_batch))
    steps = draw(st.integers(1, max_len))
    lengths = np.array(draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch)), np.int64)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if spec.input.kind == "tokens":
        assert spec.input.vocab_size is not None
        inputs = rng.integers(0, spec.input.vocab_size, size=(batch, steps))
    else:
        scale = draw(st.sampled_from([1e-3, 1.0, 3.0]))
        inputs = (scale * rng.standard_normal((batch, steps, spec.input.size))).astype(spec.dtype)
    return inputs, lengths


def _check_against_oracle(spec: ModelSpec, seed: int, batch: tuple[Any, Any], backends: tuple[str, ...]):
    weights = rnncore.init_weights(spec, seed=seed)
    inputs, lengths = batch
    expected = rnncore.reference_forward(spec, weights, inputs, lengths)
    assert np.isfinite(expected).all()
    for backend in backends:
        model = rnncore.build(spec, backend=backend, weights=weights)
        assert_close(rnncore.predict(model, inputs, lengths), expected, "outputs", spec.dtype)


@examples(250)
@given(data=st.data(), raw=spec_dicts(), seed=st.integers(0, 2**16))
def test_torch_computes_the_oracle_function_on_random_specs(data, raw, seed):
    spec = ModelSpec.from_dict(raw)
    _check_against_oracle(spec, seed, data.draw(batches(spec)), ("torch",))


@examples(30)
@given(data=st.data(), raw=spec_dicts(), seed=st.integers(0, 2**16))
def test_torch_keras_and_the_oracle_agree_on_random_specs(data, raw, seed):
    """Keras builds cost ~0.3 s and a first (eager) call up to ~1 s: fewer examples, same space."""
    spec = ModelSpec.from_dict(raw)
    _check_against_oracle(spec, seed, data.draw(batches(spec)), ("torch", "tensorflow"))


@examples(200)
@given(raw=spec_dicts())
def test_a_valid_spec_survives_its_own_json(raw):
    spec = ModelSpec.from_dict(raw)
    assert ModelSpec.from_json(spec.to_json()) == spec


# ---- invalid specs ---------------------------------------------------------------------------
# A value of the wrong type for any field: what a hand-edited or generated file may hold.
WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.floats(allow_nan=True),
)
BAD_COUNTS = st.one_of(st.integers(max_value=0), st.floats(), st.booleans(), st.text(max_size=4), st.none())
BAD_RATES = st.one_of(
    st.floats(max_value=-1e-9),
    st.floats(min_value=1.0),
    st.just(math.nan),
    st.booleans(),
    st.text(max_size=4),
)


def _not_in(choices: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(WRONG_TYPES, st.text(max_size=12)).filter(lambda v: v not in choices)


# field -> (which specs have it, strategy of values that must be refused)
BAD_VALUES: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "format": ("any", _not_in((FORMAT,))),
    "input": ("any", WRONG_TYPES.filter(lambda v: not isinstance(v, dict))),
    "encoder": ("any", WRONG_TYPES.filter(lambda v: not isinstance(v, dict))),
    "head": ("any", WRONG_TYPES.filter(lambda v: v is not None and not isinstance(v, dict))),
    "pooling": ("any", _not_in(POOLINGS)),
    "dtype": ("any", _not_in(DTYPES)),
    "input.kind": ("any", _not_in(("tokens", "features"))),
    "input.vocab_size": ("tokens", BAD_COUNTS),
    "input.embedding_dim": ("tokens", BAD_COUNTS),
    "input.padding_idx": (
        "tokens",
        st.one_of(
            st.integers(max_value=-1),
            st.integers(min_value=41),
            st.floats(),
            st.booleans(),
            st.text(max_size=3),
        ),
    ),
    "input.feature_dim": ("features", BAD_COUNTS),
    "encoder.cell": ("any", _not_in(CELLS)),
    "encoder.hidden_size": ("any", BAD_COUNTS),
    "encoder.num_layers": ("any", BAD_COUNTS),
    "encoder.bidirectional": ("any", WRONG_TYPES.filter(lambda v: not isinstance(v, bool))),
    "encoder.residual": ("any", WRONG_TYPES.filter(lambda v: not isinstance(v, bool))),
    "encoder.dropout": ("any", BAD_RATES),
    "encoder.nonlinearity": ("any", _not_in(NONLINEARITIES)),
    "head.num_outputs": ("head", BAD_COUNTS),
    "head.task": ("head", _not_in(TASKS)),
    "head.hidden": (
        "head",
        st.one_of(
            st.text(max_size=3), st.integers(), st.none(), st.lists(BAD_COUNTS, min_size=1, max_size=3)
        ),
    ),
    "head.activation": ("head", _not_in(ACTIVATIONS)),
    "head.negative_slope": (
        "head",
        st.one_of(
            st.floats(max_value=-1e-9),
            st.just(math.nan),
            st.just(math.inf),
            st.booleans(),
            st.text(max_size=3),
            st.none(),
        ),
    ),
    "head.dropout": ("head", BAD_RATES),
}


def _has(raw: dict[str, Any], where: str) -> bool:
    return where == "any" or (where == "head" and raw["head"] is not None) or raw["input"]["kind"] == where


def _set(raw: dict[str, Any], path: str, value: Any) -> None:
    section, _, name = path.partition(".")
    if name:
        raw[section][name] = value
    else:
        raw[section] = value


@st.composite
def bad_values(draw: st.DrawFn, path: str) -> dict[str, Any]:
    """A valid spec dict that has field `path`, with a value there that must be refused."""
    where, values = BAD_VALUES[path]
    raw = draw(spec_dicts(max_layers=2, max_hidden=8).filter(lambda r: _has(r, where)))
    _set(raw, path, draw(values))
    return raw


KNOWN_FIELDS = {
    "": {"format", "input", "encoder", "pooling", "head", "dtype"},
    "input": {"kind", "vocab_size", "embedding_dim", "padding_idx", "feature_dim"},
    "encoder": {"cell", "hidden_size", "num_layers", "bidirectional", "residual", "dropout", "nonlinearity"},
    "head": {"num_outputs", "task", "hidden", "activation", "negative_slope", "dropout"},
}


@st.composite
def unknown_fields(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[str, ...]]:
    """One or two unknown keys in one section; YAML files may hold non-string keys, so ints too."""
    raw = draw(spec_dicts(max_layers=2, max_hidden=8))
    section = draw(st.sampled_from(["", "input", "encoder"] + (["head"] if raw["head"] else [])))
    target = raw[section] if section else raw
    name = st.one_of(st.text(min_size=1, max_size=10), st.integers()).filter(
        lambda k: k not in KNOWN_FIELDS[section]
    )
    keys = draw(st.lists(name, min_size=1, max_size=2, unique=True))
    for key in keys:
        target[key] = draw(WRONG_TYPES)
    return raw, tuple(f"{section}.{k}" if section else str(k) for k in keys)


@st.composite
def missing_fields(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    raw = draw(spec_dicts(max_layers=2, max_hidden=8))
    required = {"tokens": ["input.vocab_size", "input.embedding_dim"], "features": ["input.feature_dim"]}
    path = draw(st.sampled_from(["input", "encoder", *required[raw["input"]["kind"]]]))
    section, _, name = path.partition(".")
    del (raw[section] if name else raw)[name or section]
    return raw, path


@st.composite
def bad_combinations(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """Values each fine alone that make no sense together."""
    raw = draw(spec_dicts(max_layers=2, max_hidden=8))
    kind = draw(
        st.sampled_from(
            [
                "tagging_pooled",
                "pooling_none_head",
                "residual",
                "nonlinearity",
                "foreign_input_field",
                "padding_idx",
            ]
        )
    )
    head = {"num_outputs": 2}
    if kind == "tagging_pooled":
        raw["head"], raw["pooling"] = {**head, "task": "tagging"}, draw(st.sampled_from(POOLINGS[:-1]))
        return raw, "pooling"
    if kind == "pooling_none_head":
        raw["pooling"] = "none"
        raw["head"] = {**head, "task": draw(st.sampled_from(["classification", "multilabel", "regression"]))}
        return raw, "head.task"
    if kind == "residual":
        enc = raw["encoder"]
        enc.update(residual=True, num_layers=1)
        width = enc["hidden_size"] * (2 if enc["bidirectional"] else 1) + draw(st.integers(1, 5))
        raw["input"] = {"kind": "features", "feature_dim": width}
        return raw, "encoder.residual"
    if kind == "nonlinearity":
        raw["encoder"].update(cell=draw(st.sampled_from(["lstm", "gru"])), nonlinearity="relu")
        return raw, "encoder.nonlinearity"
    if kind == "foreign_input_field":
        if raw["input"]["kind"] == "tokens":
            raw["input"]["feature_dim"] = draw(st.integers(1, 8))
            return raw, "input.feature_dim"
        name = draw(st.sampled_from(["vocab_size", "embedding_dim"]))
        raw["input"][name] = draw(st.integers(1, 8))
        return raw, f"input.{name}"
    raw["input"] = {"kind": "tokens", "vocab_size": draw(st.integers(1, 9)), "embedding_dim": 3}
    raw["input"]["padding_idx"] = raw["input"]["vocab_size"] + draw(st.integers(0, 3))
    raw["encoder"]["residual"] = False
    return raw, "input.padding_idx"


def _assert_refused(raw: Any, paths: str | tuple[str, ...]) -> None:
    """from_dict raises SpecError (nothing else) whose path starts with one of `paths`."""
    with pytest.raises(SpecError) as refused:  # any other exception fails the test
        ModelSpec.from_dict(raw)
    assert str(refused.value.path).startswith(paths), f"{paths!r} expected, got {refused.value}"
    assert str(refused.value).startswith(f"{refused.value.path}: ")


@pytest.mark.parametrize("path", sorted(BAD_VALUES))
@examples(25)
@given(data=st.data())
def test_a_bad_value_is_refused_naming_the_field(path, data):
    _assert_refused(data.draw(bad_values(path)), path)


@examples(150)
@given(case=st.one_of(unknown_fields(), missing_fields(), bad_combinations()))
def test_unknown_missing_and_clashing_fields_are_refused_naming_the_field(case):
    _assert_refused(*case)


@examples(50)
@given(raw=WRONG_TYPES.filter(lambda v: not isinstance(v, dict)))
def test_a_spec_that_is_not_an_object_is_refused(raw):
    _assert_refused(raw, "spec")


# ---- weights that do not fit -----------------------------------------------------------------
@st.composite
def wrong_weights(draw: st.DrawFn) -> tuple[ModelSpec, dict[str, Any], str]:
    """A valid spec with canonical weights damaged in one way; returns what the error must name."""
    spec = ModelSpec.from_dict(draw(spec_dicts(max_layers=2, max_hidden=8)))
    weights: dict[Any, Any] = dict(rnncore.init_weights(spec, seed=0))
    name = draw(st.sampled_from(sorted(canonical_shapes(spec))))
    how = draw(st.sampled_from(["missing", "extra", "shape", "dtype"]))
    if how == "missing":
        del weights[name]
        return spec, weights, name
    if how == "extra":
        extra = draw(
            st.one_of(st.text(min_size=1, max_size=12), st.integers()).filter(lambda k: k not in weights)
        )
        weights[extra] = np.zeros(draw(st.lists(st.integers(0, 3), max_size=2)), np.float32)
        if draw(st.booleans()):  # a second stray name of another type must not break the report
            weights[-1 if isinstance(extra, str) else "stray"] = np.zeros(1)
        return spec, weights, str(extra)
    value = weights[name]
    if how == "shape":
        shapes = st.lists(st.integers(0, 5), max_size=3).map(tuple).filter(lambda s: s != value.shape)
        weights[name] = np.zeros(draw(shapes), value.dtype)
    else:
        weights[name] = value.astype(
            draw(st.sampled_from([np.int32, np.int64, np.bool_, np.complex64, "U3"]))
        )
    return spec, weights, name


@examples(200)
@given(case=wrong_weights(), backend=st.sampled_from(["torch", "tensorflow"]))
def test_weights_that_do_not_fit_are_refused_before_any_framework_sees_them(case, backend):
    spec, weights, named = case
    with pytest.raises(WeightsError, match="do not match the spec") as refused:
        rnncore.build(spec, backend=backend, weights=weights)
    assert named in str(refused.value)


@examples(40)
@given(case=wrong_weights())
def test_set_weights_refuses_a_misfit_and_keeps_the_model(case):
    spec, weights, _ = case
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=1))
    before = rnncore.get_weights(model)
    with pytest.raises(WeightsError, match="do not match the spec"):
        rnncore.set_weights(model, weights)
    after = rnncore.get_weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
