"""Export a model to a serving format and prove the file computes what the model does.

    onnx, torchscript      written by the torch backend
    savedmodel, tflite     written by the TensorFlow backend

A model from the other backend is rebuilt from its canonical weights first, so any model
exports to any format. Every export is then run by its own runtime (onnxruntime, TorchScript,
TensorFlow, LiteRT) on a right-padded batch whose size and length differ from anything seen
while exporting, and compared with the in-memory model under the ("export", dtype) tolerance.
A file that fails the check is removed: a deploy script must never pick up a wrong model.

A CRF tagger's file also decodes (Viterbi inside the graph: TorchScript's `decode` method, the
SavedModel's `tags` output; ONNX and TFLite refuse a CRF tagger); its tag paths on the check
batch must equal the in-memory model's exactly.
"""

from __future__ import annotations

import shutil
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


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def export(model: Any, path: str | Path, fmt: str, *, overwrite: bool = False, seed: int = 0) -> ExportResult:
    """Write `model` (built by either backend) as `fmt` at `path`, then check the file.

    Raises ExportError (and removes the file) when the exported model's outputs on a padded
    batch differ from the in-memory model's beyond the export tolerance.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another path or pass --overwrite")
    backend_of(model)  # refuses a model rnncore did not build, with the reason
    backend = backend_for_format(fmt)
    native = _on_backend(model, backend)
    spec = spec_of(native)
    backend.export(native, path, fmt)
    inputs, lengths = random_batch(spec, batch=CHECK_BATCH, max_len=CHECK_MAX_LEN, seed=seed)
    expected = predict(native, inputs, lengths)
    actual = backend.run_exported(path, fmt, inputs, lengths)
    tags_match = None
    if spec.head is not None and spec.head.crf:
        decoded = backend.decode_exported(path, fmt, inputs, lengths)
        tags_match = bool(np.array_equal(decoded, backend.decode(native, inputs, lengths)))
    result = ExportResult(
        fmt, path, compare(actual, expected, "export", spec.dtype), inputs.shape, spec.dtype, tags_match
    )
    if not result.diff.ok or tags_match is False:
        _remove(path)
        raise ExportError(result.summary() + f"; {path} was removed")
    return result
