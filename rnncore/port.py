"""Move a trained model to the other stack: read it, rebuild it there, prove nothing changed.

Sources: a bundle folder (either backend wrote it), a torch `state_dict` file plus its spec,
a Keras `.keras` file (hand-written: imported with `from_native`; rnncore-built: with its
spec) or a `.weights.h5` file plus its spec. The result is a bundle whose model card carries
the checks: source vs result and result vs the numpy oracle on a right-padded batch. Nothing
is written when a check fails.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import bundle
from .api import build, predict
from .card import ParityRow
from .native import activate
from .parity import random_batch
from .reference import reference_forward
from .registry import canonical_name, get_backend
from .spec import ModelSpec
from .tolerances import compare
from .weights import Weights

TORCH_FILES = (".pt", ".pth", ".bin", ".ckpt")
KERAS_FILES = (".keras", ".h5")


class PortError(ValueError):
    """The ported model does not compute what the source does; nothing was written."""


@dataclass
class Source:
    """A model read from disk: its spec and weights, and how to run the original."""

    what: str  # e.g. "torch bundle", "Keras model file (hand-written)"
    spec: ModelSpec
    weights: Weights
    run: Any  # (inputs, lengths) -> outputs of the original
    # what the original applies to rnncore's logits ("linear", "softmax", "sigmoid"), and
    # whether it honours padding (a hand-written model without a mask runs over every step)
    output_activation: str = "linear"
    honours_padding: bool = True
    labels: list[str] | None = None
    tokenizer_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _CopiedTokenizer:
    """Stands in for a tokenizer object in `bundle.save`: copies the source's folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    def save(self, dest: Path) -> None:
        shutil.copytree(self.folder, dest)


def _from_rnncore_model(what: str, model: Any, spec: ModelSpec, weights: Weights) -> Source:
    return Source(what, spec, weights, lambda x, lengths: predict(model, x, lengths))


def read_source(source: str | Path, spec: ModelSpec | None = None) -> Source:
    """Read any model `rnncore port` accepts (see the module docstring)."""
    path = Path(source)
    if path.is_dir():
        config = bundle.read_config(path)
        bundle_spec, weights = bundle.load_weights_and_spec(path)
        backend = str(config.get("backend", "torch"))
        model = build(bundle_spec, backend=backend, weights=weights)
        found = _from_rnncore_model(f"{backend} bundle", model, bundle_spec, weights)
        found.labels = bundle.load_labels(path, bundle_spec)
        found.tokenizer_dir = bundle.tokenizer_folder(path)  # refuses links out of the bundle
        if found.tokenizer_dir is not None:  # copied into the result: it must be one that loads
            from .tokenize import Tokenizer

            Tokenizer.from_pretrained(found.tokenizer_dir)
        found.extra = {k: config[k] for k in ("task", "max_len", "columns") if k in config}
        return found
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; give a bundle folder, a .pt/.pth state_dict or a .keras file"
        )
    if path.name.endswith(TORCH_FILES):
        weights = get_backend("torch").load_state_dict_file(path, spec)  # refuses a missing spec
        assert spec is not None
        model = build(spec, backend="torch", weights=weights)
        return _from_rnncore_model("torch state_dict", model, spec, weights)
    if path.name.endswith(KERAS_FILES):
        keras_backend = get_backend("tensorflow")
        model = keras_backend.load_keras_file(path, spec)
        if keras_backend.owns(model):
            model_spec = keras_backend.spec_of(model)
            return _from_rnncore_model(
                "Keras weights file", model, model_spec, keras_backend.get_weights(model)
            )
        reading = keras_backend.read_native(model)
        assert reading.run.call is not None  # a Keras model can always be called
        return Source(
            "Keras model file (hand-written)",
            reading.spec,
            reading.weights,
            reading.run.call,
            output_activation=reading.run.activation,
            honours_padding=reading.run.honours_padding,
        )
    raise ValueError(
        f"{path.name}: unknown model file; rnncore ports bundle folders, torch state_dicts "
        f"({', '.join(TORCH_FILES)}) and Keras files ({', '.join(KERAS_FILES)})"
    )


def check_port(source: Source, result: Any, target: str, seed: int = 0) -> list[ParityRow]:
    """Source vs result, and result vs the oracle, on one right-padded batch."""
    spec = source.spec
    inputs, lengths = random_batch(spec, batch=8, max_len=16, seed=seed)
    if not source.honours_padding:  # compare on what the original computes: every step
        lengths = np.full_like(lengths, inputs.shape[1])
    ported = predict(result, inputs, lengths)
    original = np.asarray(source.run(inputs, lengths))
    as_original = activate(ported, source.output_activation)
    if spec.per_step_output:  # padded steps: rnncore's are zero logits, a hand-written tagger's anything
        valid = (np.arange(inputs.shape[1])[None, :] < lengths[:, None])[:, :, None]
        original, as_original = original * valid, as_original * valid
    oracle = reference_forward(spec, source.weights, inputs, lengths)
    return [
        ParityRow(
            f"{source.what} vs {target} (ported)", compare(as_original, original, "outputs", spec.dtype)
        ),
        ParityRow(f"{target} (ported) vs numpy oracle", compare(ported, oracle, "outputs", spec.dtype)),
    ]


def port(
    source: str | Path, to: str, out: str | Path, *, spec: ModelSpec | None = None, overwrite: bool = False
) -> list[ParityRow]:
    """Port `source` to backend `to`, check it, and write the result as a bundle at `out`."""
    target = canonical_name(to)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another folder or pass --overwrite")
    found = read_source(source, spec)
    result = build(found.spec, backend=target, weights=found.weights)
    checks = check_port(found, result, target)
    failed = [c for c in checks if not c.diff.ok]
    if failed:
        worst = failed[0]
        raise PortError(
            f"{worst.what}: max abs diff {worst.diff.max_abs:.2e} is beyond tolerance; nothing written"
        )
    tokenizer = _CopiedTokenizer(found.tokenizer_dir) if found.tokenizer_dir else None
    bundle.save(result, out, labels=found.labels, tokenizer=tokenizer, extra=found.extra,
                overwrite=overwrite, parity=checks)  # fmt: skip
    return checks
