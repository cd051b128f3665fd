"""Model bundles: one framework-neutral folder that either backend loads.

    config.json          {"format": "rnncore.bundle/1", "spec": ..., "backend": ..., "versions": ...,
                          optional "task" and "max_len": how `evaluate`/`predict` read text}
    model.safetensors    canonical weights (no pickle anywhere)
    labels.json          label names, index = class id (optional)
    tokenizer/           the tokenizer (optional)
    README.md            model card: the spec in words, versions, parity measured at save time

Saving is atomic: the folder is written beside its destination under a temporary name and
renamed into place, so a crash never leaves a half-written bundle where a good one was.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, staging
from .api import build, get_weights, predict, spec_of
from .card import ParityRow, render
from .jsonfile import read_json
from .limits import how_to_raise, limit
from .registry import ALIASES, backend_of
from .spec import ModelSpec, SpecError
from .weights import Weights, WeightsError, check_weights
from .wording import say

BUNDLE_FORMAT = "rnncore.bundle/1"
CONFIG, WEIGHTS, LABELS, TOKENIZER = "config.json", "model.safetensors", "labels.json", "tokenizer"
CARD = "README.md"
MAX_CONFIG_BYTES = 1 << 20  # a spec is a few hundred bytes; anything huge is not ours


class BundleError(ValueError):
    """A bundle folder is missing, malformed, or does not match its own spec."""


def _safetensors() -> Any:
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("model bundles need safetensors: pip install 'rnncore[all]'") from None
    return safetensors.numpy


def write_atomically(dest: Path, fill: Callable[[Path], None], overwrite: bool = False) -> None:
    """Create folder `dest` by filling a temporary sibling and renaming it into place."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        flag = say("pass overwrite=True", "pass --overwrite")
        raise FileExistsError(f"{dest} already exists; choose another folder or {flag}")
    if dest.exists() and not (dest.is_dir() and ((dest / CONFIG).is_file() or not any(dest.iterdir()))):
        # overwrite replaces a bundle (or an empty folder), never a folder of someone's files
        raise FileExistsError(
            f"{dest} exists and is not a model bundle (no {CONFIG}); refusing to replace it"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        fill(tmp)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_weights(path: Path, weights: Mapping[str, np.ndarray]) -> None:
    """Write a safetensors file. Serialised here and written by Python, not by safetensors'
    `save_file`: a full disk then raises OSError (ENOSPC, naming the file) like every other
    write, where the Rust writer raises its own error type with the errno only in its text."""
    data = _safetensors().save({k: np.ascontiguousarray(v) for k, v in weights.items()})
    staging.write_bytes(path, data)  # whole or not at all, never through a link


def read_weights(path: Path) -> Weights:
    """The tensors of a safetensors file, after its header was checked against the budgets."""
    _check_safetensors_header(path)
    try:
        return dict(_safetensors().load_file(str(path)))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise BundleError(f"{path} is not a readable safetensors file ({err})") from None


def _check_safetensors_header(path: Path) -> None:
    """Refuse a header too long or naming too many tensors before safetensors parses it.
    (safetensors itself checks that each tensor's bytes lie inside the file.)"""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        size = int.from_bytes(prefix, "little")
        most = limit("MAX_SAFETENSORS_HEADER_BYTES")
        if len(prefix) < 8 or size > most:
            what = "is too short" if len(prefix) < 8 else f"declares a {size:,}-byte header, limit {most:,}"
            raise BundleError(f"{path} is not a readable safetensors file (it {what})")
        header = handle.read(size)
    try:
        count = len(json.loads(header))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, TypeError) as err:
        raise BundleError(f"{path} is not a readable safetensors file (header: {err})") from None
    if count > limit("MAX_TENSORS") + 1:  # + 1: the optional __metadata__ entry
        raise BundleError(f"{path} names {count:,} tensors, above the limit of {limit('MAX_TENSORS'):,}; "
                          + how_to_raise("MAX_TENSORS"))  # fmt: skip


def _versions() -> dict[str, str]:
    import sys

    found = {"rnncore": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "tensorflow", "keras"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = str(getattr(module, "__version__", "?"))
    return found


def save(
    model: Any,
    folder: str | Path,
    *,
    labels: list[str] | None = None,
    tokenizer: Any = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    parity: Sequence[ParityRow] = (),
    notes: Sequence[str] = (),
) -> Path:
    """Write `model` (from either backend) as a bundle folder; returns its path.

    `parity` adds rows to the model card's parity table (the oracle row is always measured);
    `notes` adds lines to its Provenance section (e.g. `NativeImport.card_notes()`).
    """
    spec = spec_of(model)
    weights = get_weights(model)
    backend = backend_of(model).NAME
    rows = [oracle_row(model, backend), *parity]
    config = {
        "format": BUNDLE_FORMAT,
        "spec": spec.to_dict(),
        "backend": backend,
        "versions": _versions(),
        **(dict(extra) if extra else {}),
    }

    def fill(tmp: Path) -> None:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        write_weights(tmp / WEIGHTS, weights)
        if labels is not None:
            (tmp / LABELS).write_text(json.dumps({"labels": list(labels)}, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER)
        card = render(spec, weights, backend, config["versions"], rows, labels, extra, notes)
        (tmp / CARD).write_text(card, encoding="utf-8")

    write_atomically(Path(folder), fill, overwrite=overwrite)
    return Path(folder)


def oracle_row(model: Any, backend: str) -> ParityRow:
    """The model's outputs vs the numpy oracle on a small right-padded batch."""
    from .parity import random_batch
    from .reference import reference_forward
    from .tolerances import compare

    spec = spec_of(model)
    inputs, lengths = random_batch(spec, batch=4, max_len=12, seed=0)
    expected = reference_forward(spec, get_weights(model), inputs, lengths)
    diff = compare(predict(model, inputs, lengths), expected, "outputs", spec.dtype)
    return ParityRow(f"{backend} vs numpy oracle", diff)


def own_path(folder: str | Path, name: str) -> Path:
    """`folder/name`, refused when it is a symbolic link.

    A bundle holds its own files: a link would make loading read (and `port` copy into a new
    bundle) whatever file it points at, anywhere on the machine. The bundle folder itself may
    be a link (`runs/latest -> runs/2024-05-01`); what is inside it may not.
    """
    path = Path(folder) / name
    if path.is_symlink():
        raise BundleError(f"{path} is a symbolic link; a bundle holds its own files (copy the file in)")
    return path


def _written_by() -> str:
    return say(
        "a bundle is a folder written by rnncore.save",
        "give a run folder written by `rnncore train` or a bundle written by `rnncore port`",
    )


def read_config(folder: str | Path) -> dict[str, Any]:
    """config.json of a bundle, checked: unknown top-level keys are kept (a newer rnncore may add
    some); the format and the backend must be ones this rnncore knows."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a folder; {_written_by()}")
    path = own_path(folder, CONFIG)
    if not path.is_file():
        raise BundleError(f"{folder} has no {CONFIG}; {_written_by()}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise BundleError(f"{path} is {path.stat().st_size} bytes; a bundle config is a few KB")
    config = read_json(path, BundleError, BUNDLE_FORMAT)
    backend = config.get("backend", "torch")
    if not isinstance(backend, str) or backend.lower() not in ALIASES:
        raise BundleError(f"{path}: backend is {backend!r}; expected one of {', '.join(sorted(ALIASES))}")
    return config


def load_weights_and_spec(folder: str | Path) -> tuple[ModelSpec, Weights]:
    """The bundle's spec and canonical weights, checked against each other."""
    folder = Path(folder)
    config = read_config(folder)
    try:
        spec = ModelSpec.from_dict(config.get("spec"))  # type: ignore[arg-type]
    except SpecError as err:
        raise BundleError(f"{folder / CONFIG}: {err}") from None
    weights_path = own_path(folder, WEIGHTS)
    if not weights_path.is_file():
        raise BundleError(f"{folder} has no {WEIGHTS}")
    raw = read_weights(weights_path)
    wrong_dtype = [k for k, v in raw.items() if v.dtype != np.dtype(spec.dtype)]
    if wrong_dtype:
        name = wrong_dtype[0]
        raise BundleError(f"{weights_path}: {name} is {raw[name].dtype}, the spec says {spec.dtype}")
    try:
        weights = check_weights(spec, raw)
    except WeightsError as err:
        raise BundleError(f"{weights_path}: {err}") from None
    broken = next((name for name, value in weights.items() if not np.isfinite(value).all()), None)
    if broken is not None:  # every output would be NaN: predict would print a label for nothing
        raise BundleError(f"{weights_path}: {broken} holds NaN or infinity; the model is broken "
                          "(a diverged run?): load an earlier checkpoint")  # fmt: skip
    return spec, weights


def load(folder: str | Path, backend: str = "torch", device: str | None = None) -> Any:
    """Build the bundle's model on `backend` with its weights, on `device` (see `rnncore.build`).

    Weights are stored as CPU arrays whatever device wrote them, so any bundle loads anywhere.
    """
    spec, weights = load_weights_and_spec(folder)
    return build(spec, backend=backend, weights=weights, device=device)


def load_labels(folder: str | Path, spec: ModelSpec | None = None) -> list[str] | None:
    """The label names in labels.json ({"labels": [names]}), or None without the file; with
    `spec`, there must be one name per output of its head."""
    path = own_path(folder, LABELS)
    if not path.exists():
        return None
    if not path.is_file():
        raise BundleError(f"{path} is not a file")
    try:
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise BundleError(f"{path} is not a JSON object with a list of labels ({err})") from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise BundleError(f'{path}: "labels" must be a list of label names (strings)')
    outputs = spec.head.num_outputs if spec is not None and spec.head is not None else len(labels)
    if len(labels) != outputs:
        raise BundleError(f"{path} names {len(labels)} labels; the model has {outputs} outputs")
    return labels


def tokenizer_folder(folder: str | Path) -> Path | None:
    """The bundle's tokenizer/ folder, or None without one; every file in it must be the
    bundle's own (no links: see `own_path`)."""
    path = own_path(folder, TOKENIZER)
    if not path.is_dir():
        return None
    for entry in path.iterdir():
        own_path(path, entry.name)
    return path
