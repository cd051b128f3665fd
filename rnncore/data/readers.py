"""Readers for labelled text and tagged tokens: CSV/TSV, JSON lines, a folder per class, CoNLL, CoNLL-U.

Every reader takes a path (optionally ending in .gz, .bz2 or .xz), reads it as UTF-8 unless
told otherwise, keeps the file's order and returns a container from `containers`. Anything
it cannot use raises `DataError` naming the file, the line and what to change.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from ..limits import bounded
from ..wording import say
from ._files import DataError, check_line_length, format_of, read_text, split_lines
from .containers import TaggedDataset, TextDataset

Column = str | int

CONLLU_FIELDS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def read_texts(
    path: str | Path, text_column: Column = "text", label_column: Column = "label", encoding: str = "utf-8"
) -> TextDataset:
    """Labelled texts from a .csv, .tsv or .jsonl file, or from a folder per class.

    Dispatches on the suffix (ignoring a compression suffix) to `read_table`, `read_jsonl`
    or, for a directory, `read_class_folders` (which ignores the column arguments).
    """
    if Path(path).is_dir():
        return read_class_folders(path, encoding=encoding)
    kind = format_of(path)
    if kind in (".csv", ".tsv", ".tab"):
        return read_table(path, text_column, label_column, encoding=encoding)
    if kind in (".jsonl", ".ndjson"):
        return read_jsonl(path, str(text_column), str(label_column), encoding=encoding)
    raise DataError(
        f"unknown format {kind or '(no suffix)'!r}; use .csv, .tsv, .jsonl (optionally .gz/.bz2/.xz), "
        "a folder per class, or call read_table / read_jsonl directly",
        path,
    )


def read_table(
    path: str | Path,
    text_column: Column = "text",
    label_column: Column = "label",
    *,
    delimiter: str | None = None,
    header: bool = True,
    encoding: str = "utf-8",
) -> TextDataset:
    """Labelled texts from a CSV or TSV file, one example per row.

    Args:
        text_column, label_column: a header name, or a 0-based position (needed when header=False).
        delimiter: defaults to a tab for .tsv/.tab files and a comma otherwise. Comma files
            follow CSV quoting (fields may hold quoted commas and newlines); tab files are read
            without quoting, as TSV has none, so a `"` inside a text stays as it is.
        header: whether the first row names the columns.

    Returns:
        TextDataset with the labels as written (strings). Blank lines are skipped; an empty
        text or label is an error.

    Example:
        >>> ds = read_table("reviews.tsv", text_column="sentence", label_column="polarity")
    """
    if delimiter is None:
        delimiter = "\t" if format_of(path) in (".tsv", ".tab") else ","
    stream = io.StringIO(read_text(path, encoding), newline="")
    if delimiter == "\t":
        reader = csv.reader(stream, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(stream, delimiter=delimiter)
    texts: list[str] = []
    labels: list[str] = []
    width: int | None = None
    columns: tuple[int, int] | None = None
    try:
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            if columns is None:
                names = row if header else [str(i) for i in range(len(row))]
                columns = (
                    _column(path, names, text_column, "text"),
                    _column(path, names, label_column, "label"),
                )
                width = len(row)
                if header:
                    continue
            if len(row) != width:
                what = "the header has" if header else "the first row has"
                raise DataError(
                    f"row has {len(row)} fields but {what} {width}; quote fields that contain "
                    f"{delimiter!r} (CSV) or check for a missing or extra separator",
                    path,
                    reader.line_num,
                )
            text, label = row[columns[0]], row[columns[1]].strip()
            if not text.strip() or not label:
                which = "text" if not text.strip() else "label"
                raise DataError(f"empty {which}; fill it in or remove the row", path, reader.line_num)
            texts.append(text)
            labels.append(label)
    except csv.Error as err:
        raise DataError(f"malformed {delimiter!r}-separated row ({err})", path, reader.line_num) from None
    if not texts:
        raise DataError("the file has a header but no rows; expected at least one example", path)
    return TextDataset(texts, labels)


def _column(path: str | Path, names: list[str], column: Column, role: str) -> int:
    if isinstance(column, int) and not isinstance(column, bool):
        if -len(names) <= column < len(names):
            return column % len(names)
        raise DataError(
            f"{say(f'{role}_column=', f'--{role}-column ')}{column} but rows have {len(names)} "
            f"columns (0..{len(names) - 1})",
            path,
            1,
        )
    stripped = [name.strip() for name in names]
    if column in stripped:
        return stripped.index(column)
    raise DataError(
        f"no {role} column {column!r}; the header has {', '.join(repr(n) for n in stripped)}. "
        + say(
            f"Pass {role}_column=<one of these>, or header=False with a position",
            f"Pass --{role}-column <one of these>",
        ),
        path,
        1,
    )


def read_jsonl(
    path: str | Path, text_field: str = "text", label_field: str = "label", encoding: str = "utf-8"
) -> TextDataset:
    """Labelled texts from JSON lines: one object per line, e.g. ``{"text": "...", "label": "pos"}``.

    A label that is an integer or a boolean is kept as its JSON text ("1", "true"); a fraction,
    NaN or Infinity is refused (a class label is exact); blank lines are skipped.
    """
    texts: list[str] = []
    labels: list[str] = []
    for number, line in enumerate(split_lines(read_text(path, encoding)), start=1):
        if not line.strip():
            continue
        check_line_length(line, path, number)
        try:
            record = json.loads(line, parse_constant=_not_json)
        except json.JSONDecodeError as err:
            raise DataError(
                f"not valid JSON ({err.msg} at column {err.colno}); one object per line", path, number
            ) from None
        except (ValueError, RecursionError) as err:
            why = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            raise DataError(f"not valid JSON ({why}); one object per line", path, number) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object per line, got {type(record).__name__}", path, number)
        for field in (text_field, label_field):
            if field not in record:
                keys = ", ".join(bounded(k) for k in list(record)[:10]) + (
                    ", ..." if len(record) > 10 else ""
                )
                which = "text_field" if field == text_field else "label_field"
                flag = say(f"{which}=...", f"--{which.split('_')[0]}-column <one of these>")
                raise DataError(f"no field {field!r}; this object has {keys}. Pass {flag}", path, number)
        text, label = record[text_field], record[label_field]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{text_field!r} must be a non-empty string; got {bounded(text)}", path, number)
        texts.append(text)
        labels.append(_label_name(label, label_field, path, number))
    return TextDataset(texts, labels)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _label_name(label: object, field: str, path: str | Path, number: int) -> str:
    """A JSONL label as a class name: a string as it is, an integer (or a boolean) as its JSON
    text. A fraction is refused: 0.9 is no class, and truncating it would make it class 0."""
    if isinstance(label, str) and label:
        return label
    if isinstance(label, (bool, int)):
        return json.dumps(label)
    if isinstance(label, float):
        hint = f"write {int(label)}" if label.is_integer() else "labels name classes, not scores"
        raise DataError(f"{field!r} is the number {label!r}; class labels are integers or strings "
                        f"({hint})", path, number)  # fmt: skip
    raise DataError(f"{field!r} must be one string or integer; got {bounded(label)}", path, number)


def read_class_folders(
    root: str | Path, classes: Sequence[str] | None = None, pattern: str = "*.txt", encoding: str = "utf-8"
) -> TextDataset:
    """One text per file, labelled by its folder: ``root/<label>/*.txt`` (the aclImdb layout).

    Args:
        root: e.g. ``aclImdb/train``.
        classes: which subfolders to read; default every subfolder not starting with '.'.
            For aclImdb pass ``("neg", "pos")`` so that the unlabelled ``unsup`` folder is left out.
        pattern: which files in each folder are examples.

    Returns:
        TextDataset ordered by label, then file name; texts are stripped of surrounding whitespace.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("no such folder; expected one subfolder per label", root)
    if classes is None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError("has no subfolders; expected one per label, e.g. pos/ and neg/", root)
    texts: list[str] = []
    labels: list[str] = []
    for label in classes:
        folder = root / label
        files = sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []
        if not files:
            raise DataError(
                f"no {pattern} files for label {label!r}; check the folder name and pattern", folder
            )
        for file in files:
            texts.append(read_text(file, encoding).strip())
            labels.append(label)
    return TextDataset(texts, labels)


def read_conll(
    path: str | Path,
    token_column: int = 0,
    tag_column: int = -1,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> TaggedDataset:
    """Tagged sentences from CoNLL columns: one token per line, a blank line between sentences.

    Args:
        token_column, tag_column: 0-based positions; negative counts from the end, so the
            default reads CoNLL-2003 NER (``EU NNP B-NP B-ORG``) and two-column ``word<TAB>tag``.
        delimiter: default: tabs where a line has one (tokens may then hold spaces), otherwise
            runs of whitespace.

    ``-DOCSTART-`` lines end the current sentence and are skipped. Lines may have different
    numbers of columns as long as both columns exist.
    """
    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    for number, line in enumerate(split_lines(read_text(path, encoding)), start=1):
        check_line_length(line, path, number)
        if not line.strip():
            fields = []
        elif delimiter is not None:
            fields = line.split(delimiter)
        else:
            fields = line.split("\t") if "\t" in line else line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append(words)
                tags.append(labels)
            words, labels = [], []
            continue
        width = len(fields)
        token_at, tag_at = token_column % width, tag_column % width
        if not (-width <= token_column < width and -width <= tag_column < width) or token_at == tag_at:
            raise DataError(
                f"line has {width} column(s) {fields!r}; token_column={token_column} and "
                f"tag_column={tag_column} need two different columns (a token and its tag)",
                path,
                number,
            )
        # Tokens are kept as written: in a tab-separated file a token may be a space (U+3000 in
        # Japanese text, for one).
        token, tag = fields[token_at], fields[tag_at].strip()
        if not token or not tag:
            raise DataError(f"empty {'token' if not token else 'tag'} in {line!r}", path, number)
        words.append(token)
        labels.append(tag)
    if words:
        sentences.append(words)
        tags.append(labels)
    if not sentences:
        raise DataError("no sentences (only blank or -DOCSTART- lines); expected token and tag columns", path)
    return TaggedDataset(sentences, tags)


def read_conllu(path: str | Path, tag_field: str = "upos", encoding: str = "utf-8") -> TaggedDataset:
    """Tagged sentences from CoNLL-U (Universal Dependencies), with FORM as the token.

    Args:
        tag_field: which of the ten fields is the tag: "upos" (default), "xpos", "deprel", ...

    Comment lines (``#``), multiword-token ranges (``1-2``) and empty nodes (``1.1``) are
    skipped, so the tokens are the syntactic words.
    """
    if tag_field.lower() not in CONLLU_FIELDS:
        raise DataError(f"tag_field={tag_field!r}; expected one of {', '.join(CONLLU_FIELDS)}", path)
    tag_at = CONLLU_FIELDS.index(tag_field.lower())
    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    for number, line in enumerate(split_lines(read_text(path, encoding)), start=1):
        check_line_length(line, path, number)
        if not line.strip():
            if words:
                sentences.append(words)
                tags.append(labels)
            words, labels = [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != len(CONLLU_FIELDS):
            raise DataError(
                f"has {len(fields)} tab-separated field(s); CoNLL-U needs 10 "
                f"({' '.join(f.upper() for f in CONLLU_FIELDS)}); is this a CoNLL column file? "
                "Then use read_conll",
                path,
                number,
            )
        if "-" in fields[0] or "." in fields[0]:
            continue
        if fields[tag_at] in ("", "_"):
            raise DataError(
                f"token {fields[1]!r} has no {tag_field.upper()} ('{fields[tag_at]}'); pick another "
                "tag_field (--tag-column on the command line), e.g. 'upos'",
                path,
                number,
            )
        words.append(fields[1])
        labels.append(fields[tag_at])
    if words:
        sentences.append(words)
        tags.append(labels)
    if not sentences:
        raise DataError("no sentences (only comments or blank lines)", path)
    return TaggedDataset(sentences, tags)
