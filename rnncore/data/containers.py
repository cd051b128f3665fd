"""What the readers return: three plain dataset containers and a label vocabulary.

The containers hold examples in file order and check that their parts line up; `subset`
takes the rows of one split. `LabelVocab` maps label strings to ids 0..K-1 in sorted order,
so the same labels always give the same ids, and it refuses labels it was not fitted on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._files import DataError

LABELS_FORMAT = "rnncore.labels/1"


def _rows(indices: Sequence[int] | np.ndarray) -> list[int]:
    return [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]


@dataclass(frozen=True)
class TextDataset:
    """Texts with one label each (labels are strings, as written in the file)."""

    texts: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"{len(self.texts)} texts but {len(self.labels)} labels; need one label per text")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextDataset:
        rows = _rows(indices)
        return TextDataset([self.texts[i] for i in rows], [self.labels[i] for i in rows])


@dataclass(frozen=True)
class TaggedDataset:
    """Sentences as token lists, with one tag per token."""

    sentences: list[list[str]]
    tags: list[list[str]]

    def __post_init__(self) -> None:
        if len(self.sentences) != len(self.tags):
            raise DataError(f"{len(self.sentences)} sentences but {len(self.tags)} tag sequences")
        for i, (words, tags) in enumerate(zip(self.sentences, self.tags, strict=True)):
            if len(words) != len(tags):
                raise DataError(f"sentence {i} has {len(words)} tokens but {len(tags)} tags")

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def lengths(self) -> np.ndarray:
        """int64 (N,): tokens per sentence, for `bucket_batches`."""
        return np.array([len(s) for s in self.sentences], dtype=np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TaggedDataset:
        rows = _rows(indices)
        return TaggedDataset([self.sentences[i] for i in rows], [self.tags[i] for i in rows])


@dataclass(frozen=True, eq=False)
class SequenceDataset:
    """Right-padded real-valued sequences: x float32 (N, T, F), y (N,), lengths int64 (N,) in 1..T.

    y is int64 for class ids and float32 for regression targets.
    """

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        x, y, lengths = np.asarray(self.x), np.asarray(self.y), np.asarray(self.lengths)
        if x.ndim != 3:
            raise DataError(f"x must have shape (N, T, F); got {x.shape}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise DataError(f"x must hold numbers; got dtype {x.dtype}")
        n, steps = x.shape[:2]
        if y.shape != (n,):
            raise DataError(f"y must have shape ({n},), one target per sequence; got {y.shape}")
        if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
            raise DataError(f"lengths must be integers of shape ({n},); got {lengths.dtype} {lengths.shape}")
        if n and (lengths.min() < 1 or lengths.max() > steps):
            row = int(np.flatnonzero((lengths < 1) | (lengths > steps))[0])
            raise DataError(f"row {row} has length {int(lengths[row])}; every length must be in 1..{steps}")
        y = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float32)
        # The dataclass is frozen so that a dataset is not swapped out under a split; set the
        # normalised arrays once here.
        object.__setattr__(self, "x", x.astype(np.float32, copy=False))
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "lengths", lengths.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray) -> SequenceDataset:
        rows = np.asarray(_rows(indices), dtype=np.int64)
        return SequenceDataset(self.x[rows], self.y[rows], self.lengths[rows])


def class_names(y: np.ndarray, where: str = "y") -> list[str]:
    """Class ids (N,) as label strings ("0", "1", ...), refusing anything that is not exactly an
    integer: 0.9 truncated would silently become class "0", and NaN has no class at all."""
    y = np.asarray(y)
    if y.dtype.kind in "iub":
        return [str(int(v)) for v in y.tolist()]
    if y.dtype.kind != "f":
        raise DataError(f"{where} must hold integer class ids; got dtype {y.dtype}")
    bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{where}[{row}] is {float(y[row]):.7g}, not an integer class id; class labels must be whole "
            "numbers (save y as integers; a regression target needs a regression model)"
        )
    return [str(int(v)) for v in y.tolist()]


@dataclass(frozen=True)
class LabelVocab:
    """Label strings <-> ids 0..K-1, in sorted order.

    Example:
        >>> vocab = LabelVocab.fit(["rotten", "fresh", "fresh"])
        >>> vocab.labels, vocab.encode(["fresh", "rotten"]).tolist()
        (('fresh', 'rotten'), [0, 1])
    """

    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        if not labels:
            raise DataError("a label vocabulary needs at least one label")
        if any(not isinstance(label, str) for label in labels):
            raise DataError(f"labels must be strings; got {labels!r}")
        if list(labels) != sorted(set(labels)):
            raise DataError(f"labels must be unique and sorted; got {labels!r}")
        object.__setattr__(self, "labels", labels)

    @classmethod
    def fit(cls, labels: Iterable[str]) -> LabelVocab:
        """The vocabulary of every distinct label (fit on the training split only)."""
        return cls(tuple(sorted(set(labels))))

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, labels: Iterable[str], where: str = "these labels") -> np.ndarray:
        """int64 ids; a label not in the vocabulary raises DataError naming it and its position.

        `where` names the data in the message, e.g. ``vocab.encode(test.labels, "the test split")``.
        """
        ids = {label: i for i, label in enumerate(self.labels)}
        out = []
        for position, label in enumerate(labels):
            if label not in ids:
                known = ", ".join(repr(x) for x in self.labels)
                raise DataError(
                    f"label {label!r} at position {position} of {where} was not seen in training "
                    f"(known: {known}); fit the vocabulary on data that has it, or drop those rows"
                )
            out.append(ids[label])
        return np.array(out, dtype=np.int64)

    def decode(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        """Label strings for ids in 0..K-1."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if not 0 <= i < len(self.labels):
                raise DataError(f"label id {i} is outside 0..{len(self.labels) - 1}")
            out.append(self.labels[i])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": LABELS_FORMAT, "labels": list(self.labels)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelVocab:
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read a label vocabulary ({err})", path) from None
        if not isinstance(data, dict) or data.get("format") != LABELS_FORMAT:
            raise DataError(
                f"not a label vocabulary: expected a JSON object with format {LABELS_FORMAT!r}", path
            )
        try:
            return cls(tuple(data.get("labels", ())))
        except DataError as err:
            raise DataError(str(err), path) from None
