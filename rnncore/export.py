"""Export a model to a serving format and prove the file computes what the model does.

    onnx, torchscript      written by the torch backend
    savedmodel, tflite     written by the TensorFlow backend

A model from the other backend is rebuilt from its canonical weights first, so any model
exports to any format. Every export is then run by its own runtime (onnxruntime, TorchScript,
TensorFlow, LiteRT) on a right-padded batch whose size and length differ from anything seen
while exporting, and compared with the in-memory model under the ("export", dtype) tolerance.
A file that fails the check is removed: a deploy script must never pick up a wrong model.
The export is written and checked under a hidden name beside its destination and only then
renamed into place, so a failed `--overwrite` keeps the previous file.

A CRF tagger's file also decodes (Viterbi inside the graph: TorchScript's `decode` method, the
SavedModel's `tags` output; ONNX and TFLite refuse a CRF tagger); its tag paths on the check
batch must equal the in-memory model's exactly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .api import build, get_weights, predict, spec_of
from .parity import random_batch
from .registry import EXPORT_FORMATS, backend_for_format, backend_of
from .tolerances import Diff, compare, tolerance

FORMATS = tuple(fmt for formats in EXPORT_FORMATS.values() for fmt in formats)
CHECK_BATCH, CHECK_MAX_LEN = 7, 13  # odd sizes: unlikely to match an example traced at export


class ExportError(ValueError):
    """An export could not be written, or its file does not compute what the model does."""


@dataclass(frozen=True)
class ExportResult:
    fmt: str
    path: Path
    diff: Diff  # exported file vs in-memory model on the check batch
    batch_shape: tuple[int, ...]
    dtype: str = "float32"
    tags_match: bool | None = None  # a CRF tagger's decoded paths vs the in-memory model's

    def summary(self) -> str:
        tol = tolerance("export", self.dtype)
        verdict = "ok" if self.diff.ok and self.tags_match is not False else "FAILED"
        return (
            f"{self.fmt} -> {self.path}: max abs diff {self.diff.max_abs:.2e} vs the in-memory model "
            f"on a padded batch {self.batch_shape} (tolerance atol {tol.atol:g}, rtol {tol.rtol:g})"
            + (
                ""
                if self.tags_match is None
                else f", Viterbi tag paths {'identical' if self.tags_match else 'DIFFER'}"
            )
            + f": {verdict}"
        )


def _on_backend(model: Any, backend: Any) -> Any:
    """`model` itself if `backend` built it, else the same weights rebuilt there."""
    if backend.owns(model):
        return model
    return build(spec_of(model), backend=backend.NAME, weights=get_weights(model))


def export(model: Any, path: str | Path, fmt: str, *, overwrite: bool = False, seed: int = 0) -> ExportResult:
    """Write `model` (built by either backend) as `fmt` at `path`, then check the file.

    Raises ExportError (and removes the file) when the exported model's outputs on a padded
    batch differ from the in-memory model's beyond the export tolerance.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    exists = path.exists() or path.is_symlink()
    if exists and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another path or pass --overwrite")
    if exists:
        _check_replaceable(path, fmt)
    backend_of(model)  # refuses a model rnncore did not build, with the reason
    backend = backend_for_format(fmt)
    native = _on_backend(model, backend)
    spec = spec_of(native)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.export-", dir=path.parent))
    try:
        staged = work / path.name  # the same name: a format may read meaning into the suffix
        backend.export(native, staged, fmt)
        inputs, lengths = random_batch(spec, batch=CHECK_BATCH, max_len=CHECK_MAX_LEN, seed=seed)
        expected = predict(native, inputs, lengths)
        actual = backend.run_exported(staged, fmt, inputs, lengths)
        tags_match = None
        if spec.head is not None and spec.head.crf:
            decoded = backend.decode_exported(staged, fmt, inputs, lengths)
            tags_match = bool(np.array_equal(decoded, backend.decode(native, inputs, lengths)))
        diff = compare(actual, expected, "export", spec.dtype)
        result = ExportResult(fmt, path, diff, inputs.shape, spec.dtype, tags_match)
        if not result.diff.ok or tags_match is False:
            kept = f"{path} is unchanged" if exists else "nothing was written"
            raise ExportError(result.summary() + f"; the new export was discarded and {kept}")
        _move_into_place(staged, path, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _check_replaceable(path: Path, fmt: str) -> None:
    """`--overwrite` replaces an earlier export of the same kind, never anything else (a
    mistyped path could be a home folder)."""
    if fmt == "savedmodel":
        if not (path.is_dir() and not path.is_symlink() and (path / "saved_model.pb").is_file()):
            raise ExportError(f"{path} exists and is not a SavedModel folder; refusing to replace it")
    elif not path.is_file() and not path.is_symlink():
        raise ExportError(f"{path} exists and is not a file; refusing to replace it")


def _move_into_place(staged: Path, path: Path, work: Path) -> None:
    """Rename the checked export onto `path`; an old folder is moved aside first (a rename
    cannot replace a non-empty folder), a link at `path` is replaced, never followed."""
    if path.is_dir() and not path.is_symlink():
        os.replace(path, work / "previous")
    os.replace(staged, path)
