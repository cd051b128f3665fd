"""The model card written into every bundle (README.md): what the model is, and proof it works.

The parity table is measured when the bundle is saved: the saved weights run through the
model's backend and through the numpy oracle on a right-padded batch. Commands that move a
model (`rnncore port`) add their own rows (source vs result).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .spec import ModelSpec
from .tolerances import Diff, tolerance
from .weights import Weights


@dataclass(frozen=True)
class ParityRow:
    what: str  # e.g. "torch vs numpy oracle"
    diff: Diff
    kind: str = "outputs"  # names the tolerance


def describe(spec: ModelSpec) -> list[str]:
    """The spec as a few lines a person reads."""
    inp = spec.input
    if inp.kind == "tokens":
        pad = "no padding id" if inp.padding_idx is None else f"padding id {inp.padding_idx}"
        lines = [f"input: token ids, vocabulary {inp.vocab_size}, embedding {inp.embedding_dim}, {pad}"]
    else:
        lines = [f"input: {inp.feature_dim} real-valued features per step"]
    enc = spec.encoder
    kind = f"{enc.cell.upper()}" + (f" ({enc.nonlinearity})" if enc.cell == "rnn" else "")
    lines.append(
        f"encoder: {enc.num_layers} x {'bidirectional ' if enc.bidirectional else ''}{kind}, "
        f"hidden {enc.hidden_size}{', residual' if enc.residual else ''}, dropout {enc.dropout:g}"
    )
    lines.append(f"pooling: {spec.pooling}")
    if spec.head is None:
        lines.append("head: none (outputs the encoder features)")
    else:
        head = spec.head
        hidden = f"hidden {list(head.hidden)} ({head.activation}), " if head.hidden else ""
        lines.append(f"head: {head.task}, {hidden}{head.num_outputs} output(s) (logits)")
    lines.append(f"dtype: {spec.dtype}")
    return lines


def render(
    spec: ModelSpec,
    weights: Weights,
    backend: str,
    versions: dict[str, str],
    parity: Sequence[ParityRow],
    labels: Sequence[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The card's Markdown. `settings` are the data settings the bundle records (task,
    max_len, columns): the card states them, and its commands are ones that run as written
    (tests/test_cli.py runs them)."""
    settings = settings or {}
    count = sum(int(np.prod(w.shape)) for w in weights.values())
    today = datetime.date.today().isoformat()
    out = [
        "# rnncore model bundle",
        "",
        f"Saved on {today} from the {backend} backend by rnncore {versions.get('rnncore', '?')} "
        f"({', '.join(f'{k} {v}' for k, v in versions.items() if k != 'rnncore')}).",
        "",
        "## Model",
        "",
        *[f"- {line}" for line in describe(spec)],
        f"- parameters: {count:,}",
    ]
    if labels:
        out.append(f"- labels (class id order): {', '.join(labels)}")
    out += _data_lines(settings)
    if notes:  # where the model came from, e.g. "import not verified: ..." for from_native
        out += ["", "## Provenance", "", *[f"- {note}" for note in notes]]
    out += ["", "## Parity", "", "Measured when this bundle was written, on a right-padded batch.", ""]
    out += ["| check | max abs diff | tolerance (atol / rtol) | within |", "|---|---|---|---|"]
    for row in parity:
        tol = tolerance(row.kind, spec.dtype)
        within = "yes" if row.diff.ok else "NO"
        out.append(f"| {row.what} | {row.diff.max_abs:.2e} | {tol.atol:g} / {tol.rtol:g} | {within} |")
    out += [
        "",
        "## Use",
        "",
        "```python",
        "import rnncore",
        'model = rnncore.load("THIS_FOLDER", backend="tensorflow")  # or "torch"',
        "```",
        "",
        "```",
        *_commands(settings, backend, spec.dtype),
        "```",
        "",
        "Files: `config.json` (spec and versions), `model.safetensors` (canonical weights, no pickle), "
        "`labels.json` and `tokenizer/` when the model reads text.",
        "",
    ]
    return "\n".join(out)


# the file an example `evaluate` command reads, per task
EXAMPLE_DATA = {
    "text-classification": "test.csv",
    "tagging": "test.conll",
    "sequence-classification": "test.npz",
}


def _data_lines(settings: Mapping[str, Any]) -> list[str]:
    lines = []
    if "task" in settings:
        lines.append(f"- task: {settings['task']}, sequences cut to {settings.get('max_len', '?')} steps")
    if "columns" in settings:
        text, label = settings["columns"]
        lines.append(f"- reads tables with the text in column `{text}` and the label in column `{label}`")
    return lines


def _commands(settings: Mapping[str, Any], backend: str, dtype: str) -> list[str]:
    task = settings.get("task")
    other = "torch" if backend == "tensorflow" else "tensorflow"
    lines = []
    if task in EXAMPLE_DATA:  # a bundle that knows how to read data
        lines.append(f"rnncore evaluate THIS_FOLDER --data {EXAMPLE_DATA[task]}")
    if task == "text-classification":
        lines.append('rnncore predict THIS_FOLDER "a text to classify"')
    lines.append(f"rnncore port THIS_FOLDER --to {other} --out OTHER_FOLDER")
    # TFLite runs float32 only (backends/rnncore_tensorflow/export.py)
    fmt = "tflite" if dtype == "float32" else "savedmodel"
    lines.append(f"rnncore export THIS_FOLDER --format {fmt} --out model.{fmt}")
    return lines
