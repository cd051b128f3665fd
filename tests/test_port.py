"""`rnncore port` and bundles: round trips between stacks, native files, and damaged input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rnncore
from rnncore import bundle, cli
from rnncore.parity import random_batch
from rnncore.tolerances import compare

SPEC = rnncore.ModelSpec.from_dict(
    {
        "input": {"kind": "tokens", "vocab_size": 30, "embedding_dim": 6, "padding_idx": 0},
        "encoder": {"cell": "lstm", "hidden_size": 5, "num_layers": 2, "bidirectional": True},
        "pooling": "max",
        "head": {"hidden": [4], "num_outputs": 3},
    }
)


@pytest.fixture
def torch_bundle(tmp_path: Path) -> Path:
    model = rnncore.build(SPEC, "torch", rnncore.init_weights(SPEC, seed=3))
    return rnncore.save(model, tmp_path / "torch-bundle", labels=["a", "b", "c"])


def _outputs(model) -> np.ndarray:
    return rnncore.predict(model, *random_batch(SPEC, batch=6, max_len=11, seed=9))


def test_round_trip_torch_keras_torch_keeps_weights_and_outputs(torch_bundle, tmp_path, capsys):
    keras_bundle, back = tmp_path / "keras-bundle", tmp_path / "torch-again"
    assert cli.main(["port", str(torch_bundle), "--to", "tensorflow", "--out", str(keras_bundle)]) == 0
    assert cli.main(["port", str(keras_bundle), "--to", "torch", "--out", str(back)]) == 0
    printed = capsys.readouterr().out
    assert "vs numpy oracle" in printed and "FAILED" not in printed
    original, ported, final = (bundle.load_weights_and_spec(p)[1] for p in (torch_bundle, keras_bundle, back))
    for name in original:  # the canonical layout is lossless: bit-identical both ways
        np.testing.assert_array_equal(original[name], ported[name], err_msg=name)
        np.testing.assert_array_equal(original[name], final[name], err_msg=name)
    assert json.loads((keras_bundle / "config.json").read_text())["backend"] == "tensorflow"
    assert bundle.load_labels(back) == ["a", "b", "c"]
    torch_out = _outputs(rnncore.load(torch_bundle, "torch"))
    keras_out = _outputs(rnncore.load(keras_bundle, "tensorflow"))
    assert np.abs(torch_out - keras_out).max() <= 1e-6
    np.testing.assert_array_equal(torch_out, _outputs(rnncore.load(back, "torch")))


def test_the_model_card_carries_the_measured_checks(torch_bundle, tmp_path):
    out = tmp_path / "ported"
    checks = rnncore.port(torch_bundle, "tensorflow", out)
    card = (out / "README.md").read_text()
    assert "torch bundle vs tensorflow (ported)" in card and "tensorflow vs numpy oracle" in card
    for check in checks:
        assert check.diff.ok and check.diff.max_abs < 1e-5
        assert f"{check.diff.max_abs:.2e}" in card


def test_a_torch_state_dict_ports_with_its_spec(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    model = rnncore.build(SPEC, "torch", rnncore.init_weights(SPEC, seed=4))
    checkpoint = tmp_path / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(SPEC.to_json())
    out = tmp_path / "keras"
    assert (
        cli.main(["port", str(checkpoint), "--spec", str(spec_file), "--to", "keras", "--out", str(out)]) == 0
    )
    assert compare(_outputs(rnncore.load(out, "tensorflow")), _outputs(model), "outputs", "float32").ok
    capsys.readouterr()
    assert cli.main(["port", str(checkpoint), "--to", "keras", "--out", str(tmp_path / "x")]) == 2
    assert "--spec" in capsys.readouterr().err
    other = SPEC.replace(encoder=SPEC.encoder.__class__(cell="gru", hidden_size=5))
    spec_file.write_text(other.to_json())
    assert (
        cli.main(
            ["port", str(checkpoint), "--spec", str(spec_file), "--to", "keras", "--out", str(tmp_path / "x")]
        )
        == 2
    )
    assert "does not fit the spec" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_pickled_object_is_refused_not_unpickled(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    evil = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "callback": Path("/etc")}, evil)  # not plain tensors
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(SPEC.to_json())
    assert (
        cli.main(["port", str(evil), "--spec", str(spec_file), "--to", "keras", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "weights_only" in capsys.readouterr().err


def test_keras_weights_file_ports_with_its_spec(tmp_path):
    model = rnncore.build(SPEC, "tensorflow", rnncore.init_weights(SPEC, seed=5))
    weights_file = tmp_path / "model.weights.h5"
    model.save_weights(weights_file)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(SPEC.to_json())
    out = tmp_path / "torch"
    assert (
        cli.main(["port", str(weights_file), "--spec", str(spec_file), "--to", "torch", "--out", str(out)])
        == 0
    )
    np.testing.assert_array_equal(
        bundle.load_weights_and_spec(out)[1]["encoder.layers.1.bwd.W_hh"],
        rnncore.get_weights(model)["encoder.layers.1.bwd.W_hh"],
    )


def _damage_truncate(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _damage_garbage(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)


def _damage_format(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["format"] = "rnncore.bundle/99"
    (folder / "config.json").write_text(json.dumps(config))


def _damage_shape(folder: Path) -> None:
    weights = bundle.read_weights(folder / "model.safetensors")
    weights["head.output.weight"] = np.zeros((3, 5), np.float32)  # (3, 4) in the spec
    bundle.write_weights(folder / "model.safetensors", weights)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_damage_truncate, "not a readable safetensors file"),
        (_damage_garbage, "not a readable safetensors file"),
        (_damage_format, "rnncore.bundle/99"),
        (_damage_shape, "head.output.weight"),
    ],
)
def test_damaged_bundles_are_refused_and_nothing_is_written(torch_bundle, tmp_path, damage, message, capsys):
    damage(torch_bundle)
    before = {p.name: p.read_bytes() for p in torch_bundle.iterdir() if p.is_file()}
    out = tmp_path / "out"
    port = ["port", str(torch_bundle), "--to", "tf", "--out", str(out)]
    export = ["export", str(torch_bundle), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    for command in (port, export):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "m.onnx").exists()
    assert before == {p.name: p.read_bytes() for p in torch_bundle.iterdir() if p.is_file()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folder left


def test_port_refuses_an_existing_destination(torch_bundle, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main(["port", str(torch_bundle), "--to", "tensorflow", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def _keras_imdb_example(dtype: str = "float32"):
    """The Keras examples' bidirectional LSTM for IMDB, shrunk: a hand-written Keras model."""
    import keras

    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(30, 6, mask_zero=True)(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(5))(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def test_a_hand_written_keras_file_ports_to_torch(tmp_path, capsys):
    model = _keras_imdb_example()
    path = tmp_path / "imdb.keras"
    model.save(path)
    out = tmp_path / "torch"
    assert cli.main(["port", str(path), "--to", "torch", "--out", str(out)]) == 0
    assert "Keras model file (hand-written) vs torch (ported)" in capsys.readouterr().out
    ids, lengths = random_batch(bundle.load_weights_and_spec(out)[0], batch=5, max_len=9, seed=2)
    ported = rnncore.load(out, "torch")
    probabilities = 1.0 / (1.0 + np.exp(-rnncore.predict(ported, ids, lengths)))
    assert compare(probabilities, np.asarray(model(ids)), "outputs", "float32").ok


def test_an_unsupported_keras_layer_is_refused_by_name(tmp_path, capsys):
    import keras

    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(30, 6, mask_zero=True)(inputs)
    x = keras.layers.GRU(4, reset_after=False, name="old_style_gru")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    path = tmp_path / "old.keras"
    model.save(path)
    assert cli.main(["port", str(path), "--to", "torch", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "old_style_gru" in err and "reset_after" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("onnx", "m.onnx"), ("torchscript", "m.pt"), ("savedmodel", "saved"), ("tflite", "m.tflite")],
)
def test_export_from_a_bundle_of_either_backend_is_checked(torch_bundle, tmp_path, fmt, name, capsys):
    out = tmp_path / name
    assert cli.main(["export", str(torch_bundle), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = printed.splitlines()[0]  # then the files written (the model and what an app needs)
    assert "max abs diff" in summary and summary.rstrip().endswith("ok")
    assert out.exists()
    diff = float(printed.split("max abs diff ")[1].split()[0])
    assert diff <= 1e-5


def test_an_export_that_disagrees_fails_and_is_removed(torch_bundle, tmp_path, monkeypatch, capsys):
    torch_backend = rnncore.get_backend("torch")
    real = torch_backend.run_exported
    monkeypatch.setattr(torch_backend, "run_exported", lambda *a: real(*a) + 1e-3)  # a broken runtime
    out = tmp_path / "m.pt"
    assert cli.main(["export", str(torch_bundle), "--format", "torchscript", "--out", str(out)]) == 1
    assert "FAILED" in capsys.readouterr().err
    assert not out.exists()
