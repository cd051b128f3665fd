"""What an app needs beside an exported model: the tokenizer, the labels, and the inputs.

An exported ONNX / TorchScript / SavedModel / TFLite file holds the network only. To go from
a raw string to a label an app also needs the tokenizer that made the ids, the label names in
class-id order, and the names, dtypes and shapes of the inputs, the padding id and the length
the model was trained to read. `rnncore export` writes them beside the model, named after it
(for `model.onnx`):

    model.onnx.json            {"format": "rnncore.app/1", the model file, its format, its
                               inputs and output (name, dtype, shape), padding_id, unknown_id,
                               max_len, the task, the labels, and the names of the files below}
    model.onnx.tokenizer.json  the Hugging Face `tokenizers` file (normalizer, pre-tokenizer,
                               vocabulary): `tokenizers.Tokenizer.from_file` reads it
    model.onnx.vocab.txt       the vocabulary, one token per line, line n = id n (for an app
                               without the `tokenizers` library)
    model.onnx.labels.txt      the label names, one per line, line n = class id n

Every format takes the same dtypes: ids and lengths int64 (what numpy and the tokenizer hand
out, and torch's index dtype; the TensorFlow files cast lengths to int32 inside), features
in the model's dtype. docs/cli.md has the few lines per runtime that go from a string to a
label with these files only; tests/test_appfiles.py runs them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from . import bundle
from .export import ExportResult
from .spec import ModelSpec

APP_FORMAT = "rnncore.app/1"
ID_DTYPE = LENGTH_DTYPE = "int64"


def side_file(model_path: Path, suffix: str) -> Path:
    """`model.onnx` -> `model.onnx<suffix>` in the same folder: the whole name, so that
    `model.onnx` and `model.tflite` exported side by side keep their own files."""
    return model_path.parent / f"{model_path.name}{suffix}"


def describe_inputs(spec: ModelSpec) -> list[dict[str, Any]]:
    inputs: dict[str, Any]
    if spec.input.kind == "tokens":
        inputs = {"name": "inputs", "dtype": ID_DTYPE, "shape": ["batch", "steps"], "meaning": "token ids"}
    else:
        inputs = {"name": "inputs", "dtype": spec.dtype, "shape": ["batch", "steps", spec.input.feature_dim],
                  "meaning": "features per step"}  # fmt: skip
    lengths = {"name": "lengths", "dtype": LENGTH_DTYPE, "shape": ["batch"],
               "meaning": "valid steps per row, 1..steps; rows are right padded"}  # fmt: skip
    return [inputs, lengths]


def describe_output(spec: ModelSpec) -> dict[str, Any]:
    width = spec.head.num_outputs if spec.head is not None else spec.features_size
    shape: list[Any] = ["batch", "steps", width] if spec.per_step_output else ["batch", width]
    meaning = "logits (argmax = class id)" if spec.head is not None else "features"
    return {"name": "outputs", "dtype": spec.dtype, "shape": shape, "meaning": meaning}


def write_app_files(model_folder: str | Path, result: ExportResult) -> list[tuple[str, Path]]:
    """Write the app files of `result` (exported from the bundle or run `model_folder`);
    returns (what, path) for each file written."""
    config = bundle.read_config(model_folder)
    spec = ModelSpec.from_dict(config["spec"])
    labels = bundle.load_labels(model_folder, spec)
    tokenizer = bundle.tokenizer_folder(model_folder)
    written: list[tuple[str, Path]] = []
    info: dict[str, Any] = {
        "format": APP_FORMAT,
        "model": result.path.name,
        "model_format": result.fmt,
        "inputs": describe_inputs(spec),
        "output": describe_output(spec),
        "task": config.get("task"),
        "max_len": config.get("max_len"),
    }
    if result.fmt in ("savedmodel", "tflite"):
        info["signature"] = "serving_default"
    if tokenizer is not None:
        info.update(_write_tokenizer(tokenizer, result.path, spec, written))
    if labels is not None:
        path = side_file(result.path, ".labels.txt")
        path.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        info.update(labels=list(labels), labels_file=path.name)
        written.append(("the label names, line n = class id n", path))
    path = side_file(result.path, ".json")
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    written.insert(0, ("what an app feeds the model: inputs, dtypes, padding id, max_len, labels", path))
    return written


def _write_tokenizer(
    folder: Path, model_path: Path, spec: ModelSpec, written: list[tuple[str, Path]]
) -> dict[str, Any]:
    from .tokenize import Tokenizer

    tokenizer = Tokenizer.from_pretrained(folder)
    vocab = [""] * tokenizer.vocab_size  # an id no token has (none in rnncore's) stays an empty line
    for token, index in tokenizer.hf.get_vocab().items():
        vocab[index] = token
    found: dict[str, Any] = {"padding_id": spec.input.padding_idx, "unknown_id": tokenizer.unk_id}
    if (folder / "tokenizer.json").is_file():
        target = side_file(model_path, ".tokenizer.json")
        shutil.copyfile(folder / "tokenizer.json", target)
        found["tokenizer"] = target.name
        written.append(("the tokenizer (Hugging Face tokenizers format)", target))
    target = side_file(model_path, ".vocab.txt")
    target.write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
    found["vocab"] = target.name
    written.append(("the vocabulary, line n = token id n", target))
    return found
