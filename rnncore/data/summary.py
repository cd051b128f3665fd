"""What was read, said before training: counts per split, the label inventory, a few examples,
and warnings when the data looks wrong for the task.

A wrong reader or column gives data that trains without error: IDs for tokens, a placeholder
``_`` for most tags, review texts for labels. Accuracy then looks fine (94% on ``_``) while the
model has learnt nothing. These checks look for the signs of that, each cheap and each named:

- one label holds most of the data and looks like a placeholder (``_``, ``-``, ``NONE`` ...);
  ``O`` is a real class in IOB tagging, so its share is only stated;
- the tokens (or texts) are mostly numbers, as an ID column is;
- labels look like text (spaces, or longer than a class name would be);
- the label set is far larger than the data can teach (fewer than 5 examples per label);
- class ids of sequences that are not whole numbers (a regression target read as classes).

`summarize` returns a JSON-able dict (kept in run.json); `render` turns it into the block
printed before training.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .containers import SequenceDataset, TaggedDataset, TextDataset

TOP_LABELS = 5
EXAMPLES = 3
# Label values that mean "no annotation here" in common formats (CoNLL-U's "_", empty
# markers, and aclImdb's unlabelled "unsup" folder). "O" is not one: it is IOB's outside class.
PLACEHOLDERS = frozenset({"_", "-", "--", "?", "none", "null", "nil", "nan", "n/a", "na", "unsup",
                          "unlabeled", "unlabelled", "unknown", "missing"})  # fmt: skip
PLACEHOLDER_SHARE = 0.5  # "most of the data"
NUMERIC_SHARE = 0.5
TEXT_LIKE_LENGTH = 30  # longer than any tag set's names (UD's longest relation is 20 characters)
MIN_PER_LABEL = 5  # fewer examples per label than this on average cannot teach the labels
MIN_LABELS_FOR_SIZE_CHECK = 10  # a few classes on a tiny file are a small data set, not a wrong column
_NUMBER = re.compile(r"[+-]?\d+([.,:/-]\d+)*")


def summarize(task: str, parts: Mapping[str, Any], reader: str, source: str | None = None) -> dict[str, Any]:
    """The summary of a run's data: `parts` maps split names to datasets of `task`.

    Args:
        reader: how the data was read, for people (e.g. "CoNLL-U, FORM -> UPOS").
        source: the file or bundled name it came from.

    Returns:
        {"source", "reader", "unit", "splits": {name: counts}, "labels": {"count", "top"},
        "examples", "warnings", "notes"}: plain JSON values.
    """
    tagging = task == "tagging"
    unit = "tokens" if tagging else "examples"
    labels: Counter[str] = Counter()
    units: list[str] = []
    for part in parts.values():
        labels.update(_labels(part))
        units.extend(_units(part))
    total = sum(labels.values())
    top = [{"label": label, "count": count, "share": round(count / total, 4)}
           for label, count in labels.most_common(TOP_LABELS)]  # fmt: skip
    warnings, notes = check_labels(labels, unit, tagging)
    warnings += check_units(units, "tokens" if tagging else "texts", tagging)
    warnings += check_targets([part for part in parts.values() if isinstance(part, SequenceDataset)])
    train = parts.get("train", next(iter(parts.values())))
    return {
        "source": source,
        "reader": reader,
        "unit": unit,
        "splits": {name: _counts(part) for name, part in parts.items()},
        "labels": {"count": len(labels), "top": top},
        "examples": _examples(train),
        "warnings": warnings,
        "notes": notes,
    }


def _labels(data: Any) -> Iterable[str]:
    if isinstance(data, TaggedDataset):
        return (tag for row in data.tags for tag in row)
    if isinstance(data, TextDataset):
        return data.labels
    return _class_names(data)


def _class_names(data: SequenceDataset) -> list[str]:
    # As the run encodes them (rnncore.train.run.Encoder): class ids written as integers.
    return [str(int(y)) for y in data.y]


def _units(data: Any) -> list[str]:
    """What a numbering column would fill: the tokens, or the texts."""
    if isinstance(data, TaggedDataset):
        return [token for sentence in data.sentences for token in sentence]
    if isinstance(data, TextDataset):
        return [text.strip() for text in data.texts]
    return []


def _counts(data: Any) -> dict[str, int]:
    if isinstance(data, TaggedDataset):
        return {"sentences": len(data), "tokens": int(data.lengths.sum())}
    if isinstance(data, TextDataset):
        return {"examples": len(data), "words": sum(len(text.split()) for text in data.texts)}
    return {"examples": len(data), "steps": int(np.asarray(data.lengths).sum())}


def _examples(data: Any, width: int = 100) -> list[str]:
    rows: list[str] = []
    for i in range(min(EXAMPLES, len(data))):
        if isinstance(data, TaggedDataset):
            row = " ".join(f"{w}/{t}" for w, t in zip(data.sentences[i], data.tags[i], strict=True))
        elif isinstance(data, TextDataset):
            row = f"{data.labels[i]!r} <- {data.texts[i].strip()!r}"
        else:
            steps, features = data.x.shape[1], data.x.shape[2]
            label = _class_names(data.subset([i]))[0]
            row = f"{label!r} <- {int(data.lengths[i])} of {steps} steps x {features}"
        rows.append(row if len(row) <= width else row[: width - 3] + "...")
    return rows


def check_labels(labels: Counter[str], unit: str, tagging: bool) -> tuple[list[str], list[str]]:
    """(warnings, notes) about the label inventory: placeholders, text-like labels, too many labels."""
    warnings: list[str] = []
    notes: list[str] = []
    total = sum(labels.values())
    if not total:
        return warnings, notes
    flag = "--tag-column" if tagging else "--label-column"
    label, count = labels.most_common(1)[0]
    share = count / total
    if share > PLACEHOLDER_SHARE and label.strip().lower() in PLACEHOLDERS | {""}:
        warnings.append(
            f"{share:.0%} of {unit} are labelled {label!r}, which looks like a placeholder for 'not "
            f"annotated': a model that always answers {label!r} scores {share:.0%} accuracy. Is the label "
            f"column right? (choose it with {flag})"
        )
    if "O" in labels:
        notes.append(
            f"'O' (outside any entity) is {labels['O'] / total:.1%} of {unit}: accuracy counts it, so "
            "watch the entity F1"
        )
    textual = [name for name in labels if len(name) > TEXT_LIKE_LENGTH or any(c.isspace() for c in name)]
    if textual and len(textual) >= 0.1 * len(labels):
        shown = ", ".join(repr(_short(name, 50)) for name in textual[:3])
        warnings.append(
            f"{len(textual)} of {len(labels)} labels look like text, not class names (e.g. {shown}): is the "
            f"label column the text? (choose it with {flag})"
        )
    if len(labels) >= MIN_LABELS_FOR_SIZE_CHECK and total < MIN_PER_LABEL * len(labels):
        warnings.append(
            f"{len(labels)} distinct labels for {total} {unit} ({total / len(labels):.1f} per label): "
            f"too few to learn each label from. Is the label column right? (choose it with {flag})"
        )
    return warnings, notes


def check_units(units: list[str], unit: str, tagging: bool) -> list[str]:
    """Warnings about the tokens or texts themselves: mostly numbers means an ID column was read."""
    if not units:
        return []
    numbers = [u for u in units if _NUMBER.fullmatch(u)]
    share = len(numbers) / len(units)
    if share <= NUMERIC_SHARE:
        return []
    shown = ", ".join(repr(n) for n in list(dict.fromkeys(numbers))[:3])
    flag = "--token-column, or --data-format conllu for CoNLL-U" if tagging else "--text-column"
    return [
        f"{share:.0%} of {unit} are numbers (e.g. {shown}): is that a numbering (ID) column? (choose "
        f"the column with {flag})"
    ]


def check_targets(parts: list[SequenceDataset]) -> list[str]:
    """A warning when class ids are not whole numbers: a run reads y as int(y), so 0.7 is class 0."""
    fractional = [float(y) for part in parts for y in part.y[part.y != np.round(part.y)][:3]]
    if not fractional:
        return []
    shown = ", ".join(f"{y:g}" for y in fractional[:3])
    return [
        f"y holds values that are not whole numbers (e.g. {shown}): sequence-classification reads y as "
        "class ids and would cut them to integers. Save class ids as integers (is y a regression target?)"
    ]


def render(summary: Mapping[str, Any]) -> str:
    """The block printed before training."""
    where = f"{summary['source']}, " if summary.get("source") else ""
    lines = [f"data: {where}read as {summary['reader']}"]
    splits = summary["splits"]
    width = max(len(name) for name in splits)
    digits = max(len(f"{value:,}") for counts in splits.values() for value in counts.values())
    for name, counts in splits.items():
        numbers = ", ".join(f"{value:>{digits},} {key}" for key, value in counts.items())
        lines.append(f"  {name:<{width}}  {numbers}")
    labels = summary["labels"]
    top = ", ".join(f"{_short(row['label'])} {row['share']:.1%}" for row in labels["top"])
    lines.append(f"  labels: {labels['count']} distinct; most frequent (share of {summary['unit']}): {top}")
    for i, example in enumerate(summary["examples"]):
        lines.append(("  e.g.  " if i == 0 else "        ") + example)
    lines += [f"  note: {note}" for note in summary["notes"]]
    lines += [f"  WARNING: {warning}" for warning in summary["warnings"]]
    return "\n".join(lines)


def _short(text: str, width: int = 24) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
