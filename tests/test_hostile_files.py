"""Hostile and damaged files: each is refused with an error that names it, the command exits
2, and nothing the user had is changed or written. (Truncated and garbage weights, a foreign
bundle format and a wrong shape are in tests/test_port.py; pickled torch objects there too.)"""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import rnncore
from rnncore import bundle, cli
from rnncore.data import load_bundled

COMMANDS = ("predict", "evaluate", "port", "export")
MODEL_FILES = COMMANDS  # config.json and model.safetensors: every command reads them
TEXT_FILES = ("predict", "evaluate", "port")  # tokenizer/ and labels.json: export reads neither


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small text-classifier bundle with tokenizer and labels, and a CSV to evaluate it on."""
    from rnncore.tokenize import Tokenizer

    root = tmp_path_factory.mktemp("hostile")
    data = load_bundled("rotten_tomatoes")
    tokenizer = Tokenizer.train(list(data.texts[:200]), kind="word", vocab_size=400, min_frequency=1)
    spec = rnncore.ModelSpec.from_dict(
        {"input": tokenizer.input_spec(6).to_dict(), "encoder": {"cell": "gru", "hidden_size": 5},
         "pooling": "mean", "head": {"num_outputs": 2}}
    )  # fmt: skip
    model = rnncore.build(spec, "torch", seed=0)
    extra = {"task": "text-classification", "max_len": 20}
    rnncore.save(model, root / "bundle", labels=["fresh", "rotten"], tokenizer=tokenizer, extra=extra)
    with (root / "data.csv").open("w", newline="", encoding="utf-8") as handle:
        rows = zip(data.texts[200:240], data.labels[200:240], strict=True)
        csv.writer(handle).writerows([("text", "label"), *rows])
    return root


@pytest.fixture
def model(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine / "bundle", tmp_path / "bundle"))


def _argv(command: str, folder: Path, data: Path) -> list[str]:
    out = folder.parent / f"out-{command}"
    return {
        "predict": ["predict", str(folder), "a quietly moving film"],
        "evaluate": ["evaluate", str(folder), "--data", str(data)],
        "port": ["port", str(folder), "--to", "tensorflow", "--out", str(out)],
        "export": ["export", str(folder), "--format", "torchscript", "--out", str(out)],
    }[command]


def _snapshot(root: Path) -> dict[str, object]:
    """Every entry under `root`: file bytes, link targets (not followed), folders."""
    seen: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            seen[key] = ("link", str(path.readlink()))
        elif path.is_file():
            seen[key] = path.read_bytes()
        else:
            seen[key] = "folder"
    return seen


def _assert_refused(folder: Path, data: Path, commands: tuple[str, ...], message: str, capsys) -> None:
    """Each command exits 2 naming the problem, changes nothing, and writes no output."""
    before = _snapshot(folder.parent)
    for command in commands:
        assert cli.main(_argv(command, folder, data)) == 2, command
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, f"{command}: {err}"
        assert not (folder.parent / f"out-{command}").exists(), command
    assert _snapshot(folder.parent) == before


def _edit_config(folder: Path, change: Callable[[dict], object]) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def _config(**changes: object) -> Callable[[Path], None]:
    return lambda folder: _edit_config(folder, lambda config: config.update(changes))


def _edit_weights(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        weights = bundle.read_weights(folder / "model.safetensors")
        change(weights)
        bundle.write_weights(folder / "model.safetensors", weights)

    return damage


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return damage


def _outside(name: str) -> Callable[[Path], None]:
    """Move `name` out of the bundle and leave a symbolic link to it in its place."""

    def damage(folder: Path) -> None:
        target = folder.parent / f"outside-{name.replace('/', '-')}"
        shutil.move(folder / name, target)
        (folder / name).symlink_to(target, target_is_directory=target.is_dir())

    return damage


def _huge_config(folder: Path) -> None:
    (folder / "config.json").write_text(" " * (1 << 20) + (folder / "config.json").read_text())


RUN_READERS = ("predict", "evaluate")  # run.json, task and max_len: what reads text runs
TOKENIZER = "tokenizer/tokenizer.json"
NOT_A_TOKENIZER = "tokenizer: not a tokenizer folder that can be read"
# name: (damage, commands that must refuse, what the error must say)
DAMAGE: dict[str, tuple[Callable[[Path], object], tuple[str, ...], str]] = {
    "config is not JSON": (
        _write("config.json", '{"format": '),
        MODEL_FILES,
        "config.json is not valid JSON",
    ),
    "config is binary": (
        _write("config.json", b"\xff\xfe\x00\x01"),
        MODEL_FILES,
        "config.json is not valid JSON",
    ),
    "config is over 1 MiB": (_huge_config, MODEL_FILES, "a bundle config is a few KB"),
    "config is a list": (_write("config.json", "[]"), MODEL_FILES, "format is 'list'"),
    "config names an unknown backend": (_config(backend="cobol"), MODEL_FILES, "backend is 'cobol'"),
    "spec has an unknown field": (
        lambda f: _edit_config(f, lambda c: c["spec"]["encoder"].update(peephole=True)),
        MODEL_FILES,
        "encoder.peephole: unknown field",
    ),
    "spec is missing": (lambda f: _edit_config(f, lambda c: c.pop("spec")), MODEL_FILES, "spec: got None"),
    "task is unknown": (_config(task="astrology"), RUN_READERS, "task is 'astrology'"),
    "max_len is not a number": (_config(max_len="long"), RUN_READERS, "max_len must be an integer"),
    "weights are float64": (
        _edit_weights(lambda w: w.update({k: v.astype(np.float64) for k, v in w.items()})),
        MODEL_FILES,
        "is float64, the spec says float32",
    ),
    "a weight is int32": (
        _edit_weights(lambda w: w.update({"head.output.bias": np.zeros(2, np.int32)})),
        MODEL_FILES,
        "head.output.bias is int32",
    ),
    "an extra tensor": (
        _edit_weights(lambda w: w.update({"evil.extra": np.zeros(3, np.float32)})),
        MODEL_FILES,
        "not in this spec: evil.extra",
    ),
    "a missing tensor": (
        _edit_weights(lambda w: w.pop("encoder.layers.0.fwd.W_hh")),
        MODEL_FILES,
        "missing: encoder.layers.0.fwd.W_hh",
    ),
    "weights header claims 2**62 bytes": (
        _write("model.safetensors", (2**62).to_bytes(8, "little") + b"{}"),
        MODEL_FILES,
        "not a readable safetensors file",
    ),
    "weights file is empty": (
        _write("model.safetensors", b""),
        MODEL_FILES,
        "not a readable safetensors file",
    ),
    "tokenizer.json is not JSON": (_write(TOKENIZER, "{oops"), TEXT_FILES, NOT_A_TOKENIZER),
    "tokenizer.json is not a tokenizer": (_write(TOKENIZER, '{"model": 5}'), TEXT_FILES, NOT_A_TOKENIZER),
    "rnncore_tokenizer.json is not JSON": (
        _write("tokenizer/rnncore_tokenizer.json", "x"),
        TEXT_FILES,
        "rnncore_tokenizer.json is not valid JSON",
    ),
    "labels.json is not JSON": (_write("labels.json", "{"), TEXT_FILES, "labels.json is not a JSON object"),
    "labels are not a list": (_write("labels.json", '{"labels": 5}'), TEXT_FILES, '"labels" must be a list'),
    "labels.json has the wrong count": (
        _write("labels.json", '{"labels": ["one"]}'),
        TEXT_FILES,
        "names 1 labels; the model has 2 outputs",
    ),
    "run.json is not JSON": (_write("run.json", "nope"), RUN_READERS, "run.json is not valid JSON"),
    "run.json lacks its fields": (
        _write("run.json", "{}"),
        RUN_READERS,
        'run.json: expected an object with "task"',
    ),
    "run.json's reader is not an object": (
        _write(
            "run.json",
            '{"task": "text-classification", "backend": "torch", "data": null, "reader": 5, '
            '"train": {"max_len": 16, "seed": 0}}',
        ),
        RUN_READERS,
        '"reader" must be an object naming the data "format"',
    ),
    "config.json is a link": (_outside("config.json"), MODEL_FILES, "config.json is a symbolic link"),
    "model.safetensors is a link": (
        _outside("model.safetensors"),
        MODEL_FILES,
        "model.safetensors is a symbolic link",
    ),
    "labels.json is a link": (_outside("labels.json"), TEXT_FILES, "labels.json is a symbolic link"),
    "tokenizer.json links out": (_outside(TOKENIZER), TEXT_FILES, "tokenizer.json is a symbolic link"),
    "tokenizer folder links out": (_outside("tokenizer"), TEXT_FILES, "tokenizer is a symbolic link"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_hostile_bundle_is_refused_and_nothing_changes(case, model, pristine, capsys):
    damage, commands, message = DAMAGE[case]
    damage(model)
    _assert_refused(model, pristine / "data.csv", commands, message, capsys)


def test_the_damage_cases_start_from_a_bundle_every_command_accepts(model, pristine, capsys):
    """Without this, a refusal above could come from a broken fixture instead of the damage."""
    for command in COMMANDS:
        assert cli.main(_argv(command, model, pristine / "data.csv")) == 0, capsys.readouterr().err


def test_unknown_top_level_config_keys_are_kept_for_forward_compatibility(model, pristine, capsys):
    """A newer rnncore may add keys to config.json; unknown *spec* fields are refused (above)."""
    _edit_config(model, lambda c: c.update(created_by="rnncore 9.0", provenance={"dataset": "x"}))
    assert cli.main(_argv("predict", model, pristine / "data.csv")) == 0
    assert cli.main(_argv("evaluate", model, pristine / "data.csv")) == 0
    assert "accuracy" in capsys.readouterr().out


def test_a_bundle_folder_reached_through_a_link_is_fine(model, pristine, capsys):
    """Only what is inside a bundle must be its own: `runs/latest -> runs/2024-05-01` is common."""
    alias = model.parent / "latest"
    alias.symlink_to(model, target_is_directory=True)
    assert cli.main(_argv("predict", alias, pristine / "data.csv")) == 0, capsys.readouterr().err


def test_export_never_replaces_an_existing_file(model, pristine, capsys):
    out = model.parent / "out-export"
    out.write_text("my own file")
    assert cli.main(_argv("export", model, pristine / "data.csv")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "my own file"


class _Plant:
    """Unpickling this creates the marker file: code a model file must never get to run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_a_torch_file_that_would_run_code_is_refused_and_the_code_never_runs(how, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "code-ran"
    pickle.loads(pickle.dumps(_Plant(tmp_path / "probe")))  # the payload is live: unpickled, it runs
    assert (tmp_path / "probe").exists()
    evil = tmp_path / "model.pt"
    payload = {"embedding.weight": torch.zeros(2), "hook": _Plant(marker)}
    if how == "torch.save":
        torch.save(payload, evil)
    else:  # the pre-zip format: a bare pickle stream
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"input": {"kind": "features", "feature_dim": 2},
                                "encoder": {"cell": "gru", "hidden_size": 2}}))  # fmt: skip
    out = tmp_path / "out"
    assert cli.main(["port", str(evil), "--spec", str(spec), "--to", "keras", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "weights_only" in err and "Traceback" not in err
    assert not marker.exists() and not out.exists()


def test_a_keras_file_with_a_lambda_layer_is_refused(tmp_path, capsys):
    import keras

    inputs = keras.Input(shape=(None, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)  # Python bytecode in the file
    x = keras.layers.GRU(4)(x)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Dense(2)(x)).save(path)
    out = tmp_path / "out"
    assert cli.main(["port", str(path), "--to", "torch", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "can load safely" in err and "Traceback" not in err
    assert not out.exists()


def test_a_latest_pointer_out_of_the_run_is_refused(tmp_path, capsys):
    """checkpoints/LATEST names a folder inside checkpoints/, never a path elsewhere."""
    digits = load_bundled("digits").subset(np.arange(40))
    data = tmp_path / "digits.npz"
    np.savez(data, x=digits.x, y=digits.y)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(Path(__file__).parent / "data", elsewhere)  # any folder the user owns
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "LATEST").write_text("../../elsewhere\n")
    before = _snapshot(tmp_path)
    argv = ["train", "--task", "sequence-classification", "--data", str(data), "--out", str(run), "--resume"]
    assert cli.main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'../../elsewhere', not a checkpoint folder" in err and "Traceback" not in err
    assert _snapshot(tmp_path) == before
