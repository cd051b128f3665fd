"""Keras backend exports: SavedModel and TFLite files run by their own runtimes.

Each case is exported once per module (conversion is slow) and checked against the in-memory
model (`rnncore.predict`) and the numpy oracle on right-padded batches whose shapes the export
never saw, with garbage in the padded steps, lengths from 1 to full.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import spec_for

import rnncore
from rnncore.parity import random_batch
from rnncore.tolerances import assert_close

# through the registry, which imports torch before TensorFlow (the other order can segfault)
BACKEND = rnncore.get_backend("tensorflow")
EXPORT_FORMATS, ExportError = BACKEND.EXPORT_FORMATS, BACKEND.ExportError
export, run_exported = BACKEND.export, BACKEND.run_exported
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")


def _point(cell: str, layers: int, bi: bool, pooling: str, head: str, **extra: Any) -> dict[str, Any]:
    """A grid point of `support.spec_for`: float32 tokens without residual unless `extra` says."""
    point = {"cell": cell, "layers": layers, "bidirectional": bi, "pooling": pooling, "head": head}
    return {"residual": False, "input": "tokens", "dtype": "float32", **point, **extra}


# LSTM and GRU, uni and bi, in both formats, plus a sample of every other spec feature
CASES: dict[str, dict[str, Any]] = {
    "lstm-uni-last": _point("lstm", 1, False, "last", "relu"),
    "lstm-bi-max": _point("lstm", 1, True, "max", "leaky_relu"),
    "gru-uni-attention": _point("gru", 1, False, "attention", "gelu"),
    "gru-bi-2L-tagging": _point("gru", 2, True, "none", "relu"),
    "rnnrelu-bi-2L-residual-mean-features": _point(
        "rnn-relu", 2, True, "mean", "tanh", residual=True, input="features"
    ),
    "rnntanh-bi-last-nohead": _point("rnn-tanh", 1, True, "last", "none"),
    "lstm-bi-3L-attention-features-float64": _point(
        "lstm", 3, True, "attention", "gelu", input="features", dtype="float64"
    ),
}
# two batches per case, neither shape known at export time: (batch, max_len, seed)
BATCHES = ((5, 9, 11), (2, 3, 12))

PARAMS = [
    pytest.param(name, fmt, id=f"{fmt}-{name}")
    for name, point in CASES.items()
    for fmt in EXPORT_FORMATS
    if fmt == "savedmodel" or point.get("dtype") != "float64"
]


@dataclass
class Case:
    spec: rnncore.ModelSpec
    weights: dict[str, np.ndarray]
    batches: list[tuple[np.ndarray, np.ndarray]]
    predicted: list[np.ndarray]
    reference: list[np.ndarray]


def _padded_batch(spec: rnncore.ModelSpec, batch: int, max_len: int, seed: int) -> tuple[np.ndarray, ...]:
    """A right-padded batch with garbage (not the padding id, not zeros) in the padded steps."""
    x, lengths = random_batch(spec, batch=batch, max_len=max_len, seed=seed)
    assert lengths.max() == max_len and lengths.min() == 1
    pad = np.arange(max_len)[None, :] >= lengths[:, None]
    rng = np.random.default_rng(seed)
    if spec.input.kind == "tokens":
        x = np.where(pad, rng.integers(0, spec.input.vocab_size or 1, x.shape), x)
    else:
        x = np.where(pad[:, :, None], 50.0 * rng.standard_normal(x.shape), x).astype(spec.dtype)
    return x, lengths


def _build(spec: rnncore.ModelSpec, weights: dict[str, np.ndarray]) -> Any:
    return rnncore.build(spec, backend="tensorflow", weights=weights)


def _make_case(name: str) -> Case:
    spec = spec_for(CASES[name])
    weights = rnncore.init_weights(spec, seed=len(name))
    model = _build(spec, weights)
    batches = [_padded_batch(spec, *shape) for shape in BATCHES]
    return Case(
        spec,
        weights,
        batches,
        [rnncore.predict(model, x, lengths) for x, lengths in batches],
        [rnncore.reference_forward(spec, weights, x, lengths) for x, lengths in batches],
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`get(name, fmt) -> (case, path)`, exporting each (case, format) once per module.

    The model is rebuilt from its weights for each export: the test-wide fixture clears the
    Keras session after every test, so no model is kept across tests.
    """
    folder = tmp_path_factory.mktemp("exports")
    cases: dict[str, Case] = {}
    paths: dict[tuple[str, str], Path] = {}

    def get(name: str, fmt: str) -> tuple[Case, Path]:
        if name not in cases:
            cases[name] = _make_case(name)
        case = cases[name]
        if (name, fmt) not in paths:
            path = folder / f"{name}.{fmt}"
            export(_build(case.spec, case.weights), path, fmt)
            paths[name, fmt] = path
        return case, paths[name, fmt]

    return get


@pytest.mark.parametrize(("name", "fmt"), PARAMS)
def test_exported_model_matches_predict_and_the_oracle(name: str, fmt: str, exports: Any) -> None:
    case, path = exports(name, fmt)
    for (x, lengths), predicted, reference in zip(case.batches, case.predicted, case.reference, strict=True):
        out = run_exported(path, fmt, x, lengths)
        assert out.shape == reference.shape and out.dtype == np.dtype(case.spec.dtype)
        assert_close(out, predicted, "export", case.spec.dtype)
        assert_close(out, reference, "export", case.spec.dtype)
        if case.spec.per_step_output:
            padded = np.arange(x.shape[1])[None, :] >= lengths[:, None]
            assert np.all(out[padded] == 0), "padded steps of per-step outputs must be exactly zero"


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_int64_lengths_and_int32_ids_are_accepted(fmt: str, exports: Any) -> None:
    case, path = exports("lstm-uni-last", fmt)
    x, lengths = case.batches[0]
    out = run_exported(path, fmt, x.astype(np.int32), lengths.astype(np.int64))
    assert_close(out, case.reference[0], "export", case.spec.dtype)


def test_savedmodel_serves_named_inputs(exports: Any) -> None:
    _, path = exports("lstm-uni-last", "savedmodel")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    inputs = serve.structured_input_signature[1]
    assert set(inputs) == {"inputs", "lengths"}
    assert inputs["inputs"].dtype == tf.int64 and inputs["inputs"].shape.as_list() == [None, None]
    assert inputs["lengths"].dtype == tf.int64 and inputs["lengths"].shape.as_list() == [None]
    assert set(serve.structured_outputs) == {"outputs"}


def _tflite_operators(path: Path) -> set[str]:
    """Names of every operator in every subgraph (the while-loop bodies too) of a .tflite file."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.schema_util import get_builtin_code_from_operator_code

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    builtin_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()}
    names = set()
    for code in model.operatorCodes:
        builtin = get_builtin_code_from_operator_code(code)
        # Flex ops (SELECT_TF_OPS) and custom ops are stored as CUSTOM with their own name
        custom = code.customCode.decode() if code.customCode else None
        names.add(f"CUSTOM:{custom}" if builtin == schema.BuiltinOperator.CUSTOM else builtin_names[builtin])
    return names


@pytest.mark.parametrize("name", ["lstm-bi-max", "gru-uni-attention", "rnnrelu-bi-2L-residual-mean-features"])
def test_tflite_uses_builtin_ops_only_and_dynamic_shapes(name: str, exports: Any) -> None:
    from ai_edge_litert.interpreter import Interpreter

    case, path = exports(name, "tflite")
    operators = _tflite_operators(path)
    assert not [op for op in operators if op.startswith("CUSTOM")], operators
    assert "WHILE" in operators  # the recurrence is a builtin while loop, not a Flex op
    if case.spec.encoder.bidirectional:
        assert "REVERSE_SEQUENCE" in operators
    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    shapes = {name: d["shape_signature"].tolist() for name, d in runner.get_input_details().items()}
    assert shapes["lengths"] == [-1]
    assert shapes["inputs"][:2] == [-1, -1]  # any batch size, any sequence length
    assert list(runner.get_output_details()) == ["outputs"]


def test_tflite_refuses_float64(tmp_path: Path) -> None:
    spec = spec_for({**CASES["lstm-uni-last"], "dtype": "float64"})
    model = _build(spec, rnncore.init_weights(spec, seed=0))
    with pytest.raises(ExportError, match="float32") as err:
        export(model, tmp_path / "model.tflite", "tflite")
    assert isinstance(err.value, ValueError)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    spec = spec_for(CASES["lstm-uni-last"])
    model = _build(spec, rnncore.init_weights(spec, seed=0))
    with pytest.raises(ExportError, match="savedmodel, tflite"):
        export(model, tmp_path / "model.onnx", "onnx")
    with pytest.raises(ExportError, match="unknown export format"):
        run_exported(tmp_path / "model.onnx", "onnx", np.zeros((1, 1), np.int64), np.ones(1, np.int64))


def test_failed_savedmodel_export_leaves_nothing_behind(tmp_path: Path, monkeypatch: Any) -> None:
    spec = spec_for(CASES["lstm-uni-last"])
    model = _build(spec, rnncore.init_weights(spec, seed=0))

    def half_written(model: Any, spec: Any, folder: Path) -> None:
        os.makedirs(folder)
        Path(folder, "saved_model.pb").write_bytes(b"partial")
        raise OSError("disk full")

    # The writer itself, not tf.saved_model.save: Keras' ExportArchive (keras 3.15.1 on TF 2.21)
    # reached a save that a patch of tf.saved_model.save did not intercept.
    monkeypatch.setattr(sys.modules["rnncore_tensorflow.export"], "_write_savedmodel", half_written)
    with pytest.raises(OSError, match="disk full"):
        export(model, tmp_path / "model", "savedmodel")
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_an_earlier_export_and_keeps_it_on_failure(
    tmp_path: Path, monkeypatch: Any, exports: Any
) -> None:
    case, _ = exports("lstm-uni-last", "tflite")
    model = _build(case.spec, case.weights)
    target = tmp_path / "model.tflite"
    target.write_bytes(b"an older export")
    monkeypatch.setattr(tf.lite.TFLiteConverter, "convert", _raise_conversion_error)
    with pytest.raises(RuntimeError, match="conversion failed"):
        export(model, target, "tflite")
    assert target.read_bytes() == b"an older export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]
    monkeypatch.undo()
    export(model, target, "tflite")
    x, lengths = case.batches[1]
    assert_close(run_exported(target, "tflite", x, lengths), case.reference[1], "export", "float32")
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def _raise_conversion_error(self: Any) -> bytes:
    raise RuntimeError("conversion failed")


def test_savedmodel_export_replaces_an_earlier_savedmodel(tmp_path: Path, exports: Any) -> None:
    case, _ = exports("lstm-uni-last", "savedmodel")
    target = tmp_path / "served"
    (target / "variables").mkdir(parents=True)
    (target / "saved_model.pb").write_bytes(b"an older export")
    (target / "stale.txt").write_text("from the older export")
    export(_build(case.spec, case.weights), target, "savedmodel")
    assert not (target / "stale.txt").exists()
    x, lengths = case.batches[1]
    assert_close(run_exported(target, "savedmodel", x, lengths), case.reference[1], "export", "float32")
    assert [p.name for p in tmp_path.iterdir()] == ["served"]


def test_export_refuses_to_replace_what_is_not_an_export(tmp_path: Path) -> None:
    spec = spec_for(CASES["lstm-uni-last"])
    model = _build(spec, rnncore.init_weights(spec, seed=0))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a SavedModel"):
        export(model, tmp_path / "notes", "savedmodel")
    with pytest.raises(ExportError, match="not a file"):
        export(model, tmp_path / "notes", "tflite")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_run_exported_rejects_bad_lengths(fmt: str, exports: Any) -> None:
    case, path = exports("lstm-uni-last", fmt)
    x, _ = case.batches[0]
    with pytest.raises(rnncore.InputError, match=r"1\.\.9"):
        run_exported(path, fmt, x, np.full(x.shape[0], 10))
    with pytest.raises(rnncore.InputError, match="shape"):
        run_exported(path, fmt, x, np.ones(x.shape[0] + 1, np.int64))
