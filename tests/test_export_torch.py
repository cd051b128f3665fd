"""Torch exports: an ONNX file run by onnxruntime and a TorchScript file run by torch.jit.load
compute the in-memory model's function (and the oracle's) on batches of other sizes than the
export saw, with padded steps that change nothing; writing is atomic.

ONNX exports take seconds each (torch.export tracing), so the ONNX cases are few and each
covers several features; TorchScript cases are cheap and cover a few more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rnncore_torch import EXPORT_FORMATS, ExportError, export, run_exported
from rnncore_torch.export import _EXAMPLE_BATCH, _EXAMPLE_STEPS, ExportGraph, FusedLayer, ScanLayer
from support import point_id, spec_for

import rnncore
from rnncore.batch import InputError
from rnncore.parity import random_batch
from rnncore.tolerances import assert_close

# torch 2.13 deprecates torch.jit (script/save/load); the format is still what LibTorch loads
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

SUFFIX = {"onnx": "onnx", "torchscript": "pt"}
# (batch, steps) of the batches the files are run on: none is the export example's
SHAPES = [(5, 7), (1, 4), (3, 1)]


def _point(cell, layers, bi, residual, pooling, head, inp, dtype):
    return {"cell": cell, "layers": layers, "bidirectional": bi, "residual": residual, "pooling": pooling,
            "head": head, "input": inp, "dtype": dtype}  # fmt: skip


# LSTM and GRU, uni and bi; 1-3 layers, residual, every pooling, tagging, features, float64
ONNX_POINTS = [
    _point("lstm", 1, False, False, "last", "relu", "tokens", "float32"),
    _point("lstm", 2, True, True, "attention", "gelu", "tokens", "float32"),
    _point("gru", 1, False, True, "mean", "leaky_relu", "features", "float64"),
    _point("gru", 3, True, False, "none", "tanh", "tokens", "float32"),  # tagging
    _point("rnn-relu", 2, True, False, "max", "none", "features", "float64"),  # features out
]
TORCHSCRIPT_POINTS = [
    *ONNX_POINTS,
    _point("rnn-tanh", 1, False, False, "last", "gelu", "tokens", "float64"),
    _point("rnn-tanh", 3, False, True, "none", "none", "features", "float32"),  # per-step features
    _point("lstm", 2, True, False, "mean", "leaky_relu", "features", "float64"),
    _point("gru", 2, False, True, "max", "relu", "tokens", "float32"),
]
CASES = [("onnx", p) for p in ONNX_POINTS] + [("torchscript", p) for p in TORCHSCRIPT_POINTS]


def _needs_runtime(fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")


def _model(point, seed: int = 11):
    spec = spec_for(point)
    weights = rnncore.init_weights(spec, seed=seed)  # biases are non-zero
    return spec, weights, rnncore.build(spec, backend="torch", weights=weights)


def _garbage_padded_batch(spec, batch: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A right-padded batch (a full-length and a length-1 row) with junk at the padded steps."""
    x, lengths = random_batch(spec, batch=batch, max_len=steps, seed=seed)
    rng = np.random.default_rng(seed + 100)
    pad = np.arange(steps)[None, :] >= lengths[:, None]
    if spec.input.kind == "tokens":
        junk = rng.integers(0, spec.input.vocab_size, size=x.shape)
        return np.where(pad, junk, x).astype(np.int64), lengths
    junk = 10.0 * rng.standard_normal(x.shape)
    return np.where(pad[:, :, None], junk, x).astype(spec.dtype), lengths


def _check_onnx_signature(path, spec) -> None:
    """Named symbolic axes (not the example's sizes), and the spec in the metadata."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    step = [spec.input.feature_dim] if spec.input.kind == "features" else []
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes == {"inputs": ["batch", "steps", *step], "lengths": ["batch"]}
    assert [o.name for o in session.get_outputs()] == ["outputs"]
    stored = session.get_modelmeta().custom_metadata_map["rnncore.spec.json"]
    assert rnncore.ModelSpec.from_json(stored) == spec


@pytest.mark.parametrize(("fmt", "point"), CASES, ids=[f"{f}-{point_id(p)}" for f, p in CASES])
def test_exported_file_computes_the_model(tmp_path, fmt, point):
    _needs_runtime(fmt)
    spec, weights, model = _model(point)
    path = tmp_path / f"model.{SUFFIX[fmt]}"
    export(model, path, fmt)
    assert sorted(tmp_path.iterdir()) == [path], "one file, no temporary left behind"
    if fmt == "onnx":
        _check_onnx_signature(path, spec)
    for batch, steps in SHAPES:
        assert (batch, steps) != (_EXAMPLE_BATCH, _EXAMPLE_STEPS)
        x, lengths = _garbage_padded_batch(spec, batch, steps, seed=batch + steps)
        got = run_exported(path, fmt, x, lengths)
        assert got.dtype == np.dtype(spec.dtype)
        assert_close(got, rnncore.predict(model, x, lengths), "export", spec.dtype)
        assert_close(got, rnncore.reference_forward(spec, weights, x, lengths), "export", spec.dtype)
        if spec.per_step_output:
            pad = np.arange(steps)[None, :] >= lengths[:, None]
            assert np.all(got[pad] == 0), "padded steps must be zero"


@pytest.mark.parametrize("layer", [FusedLayer, ScanLayer])
def test_export_graph_shares_the_model_parameters(layer):
    _, _, model = _model(_point("lstm", 2, True, False, "attention", "relu", "tokens", "float32"))
    graph = ExportGraph(model, layer)
    own = {id(p) for p in model.parameters()}
    assert {id(p) for p in graph.parameters()} == own  # every one, and no copies
    with torch.no_grad():  # an update to the model is an update to the graph
        model.encoder[1].weight_hh_l0_reverse.add_(0.5)
    x, lengths = random_batch(model.spec, batch=4, max_len=6, seed=1)
    with torch.inference_mode():
        got = graph.eval()(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    assert_close(got, rnncore.predict(model, x, lengths), "outputs", "float32")


def test_a_model_in_training_mode_exports_its_eval_function_and_stays_in_training(tmp_path):
    base = spec_for(TORCHSCRIPT_POINTS[7])
    spec = base.replace(
        encoder={**base.encoder.to_dict(), "dropout": 0.5}, head={**base.head.to_dict(), "dropout": 0.5}
    )
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=2)).train()
    path = tmp_path / "model.pt"
    export(model, path, "torchscript")
    assert all(m.training for m in model.modules())
    x, lengths = random_batch(spec, batch=4, max_len=5, seed=4)
    assert_close(run_exported(path, "torchscript", x, lengths), rnncore.predict(model, x, lengths),
                 "export", spec.dtype)  # fmt: skip


def test_a_failed_export_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    _, _, model = _model(TORCHSCRIPT_POINTS[5])
    path = tmp_path / "model.pt"
    export(model, path, "torchscript")
    before = path.read_bytes()

    def half_written(module, target, **kwargs):
        with open(target, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch.jit, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        export(model, path, "torchscript")
    assert path.read_bytes() == before
    with pytest.raises(OSError, match="disk full"):
        export(model, tmp_path / "new.pt", "torchscript")
    assert sorted(tmp_path.iterdir()) == [path], "no new file, no temporary left behind"


def test_unknown_format_raises_and_writes_nothing(tmp_path):
    _, _, model = _model(ONNX_POINTS[0])
    with pytest.raises(ExportError, match=r"unknown export format 'savedmodel'.*onnx, torchscript"):
        export(model, tmp_path / "model.bin", "savedmodel")
    with pytest.raises(ValueError, match="unknown export format"):
        run_exported(tmp_path / "model.bin", "tflite", np.zeros((1, 1), np.int64), np.ones(1, np.int64))
    assert list(tmp_path.iterdir()) == []
    assert EXPORT_FORMATS == ("onnx", "torchscript")


def test_onnx_refuses_float64_gelu_which_onnxruntime_cannot_run(tmp_path):
    pytest.importorskip("onnxscript")
    _, _, model = _model(TORCHSCRIPT_POINTS[5])  # gelu head, float64
    with pytest.raises(ExportError, match=r"'gelu' in float64.*Erf.*torchscript"):
        export(model, tmp_path / "model.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_only_models_built_by_rnncore_export(tmp_path):
    with pytest.raises(ExportError, match=r"rnncore\.build"):
        export(torch.nn.LSTM(3, 4), tmp_path / "model.pt", "torchscript")


def test_run_exported_checks_the_batch_against_the_stored_spec(tmp_path):
    spec, _, model = _model(TORCHSCRIPT_POINTS[0])
    path = tmp_path / "model.pt"
    export(model, path, "torchscript")
    x, lengths = random_batch(spec, batch=2, max_len=3, seed=0)
    with pytest.raises(InputError, match="row 1 has length 0"):
        run_exported(path, "torchscript", x, np.array([3, 0]))
    with pytest.raises(InputError, match="outside the vocabulary"):
        run_exported(path, "torchscript", x + 1000, lengths)
