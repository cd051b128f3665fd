"""Which reader a data file needs, decided from what the file is, not from the task alone.

A run used to read every tagging file with the generic CoNLL reader. Given a Universal
Dependencies (CoNLL-U) file, that reader takes the ID column as the tokens and the MISC column
as the tags (``_`` for most tokens), and training reports a confident, meaningless accuracy.
Here the suffix says what a file claims to be and its first lines say what it is: CoNLL-U has
10 tab-separated fields and an ID column that counts 1, 2, 3 in each sentence (with ranges
``8-9`` for multiword tokens and decimals ``8.1`` for empty nodes). Where the two disagree, or
the layout fits no reader, the file is refused with what was seen and the flag that decides.

The choice is a plain JSON-able dict ("reader settings"), e.g. ``{"format": "conllu",
"tag_field": "upos"}``, recorded in a run's run.json so that `evaluate` reads other files the
same way (`request_from` turns it back into the choices that made it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._files import DataError, format_of, read_text, split_lines
from .readers import (
    CONLLU_FIELDS,
    Column,
    read_class_folders,
    read_conll,
    read_conllu,
    read_jsonl,
    read_table,
)
from .sequences import read_npz

# What each task can read; a file of another kind is refused by name, not read as this one.
TASK_FORMATS = {
    "text-classification": ("csv", "tsv", "jsonl", "folders"),
    "tagging": ("conllu", "conll"),
    "sequence-classification": ("npz",),
}
FORMATS = ("conllu", "conll", "csv", "tsv", "jsonl", "folders", "npz")
SUFFIX_FORMAT = {
    ".conllu": "conllu", ".conll": "conll", ".conllx": "conll", ".iob": "conll", ".bio": "conll",
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".npz": "npz",
}  # fmt: skip
_SUFFIX_HINT = {
    "text-classification": "name it .csv, .tsv or .jsonl, or give a folder per class",
    "tagging": "give CoNLL-U (.conllu) or CoNLL columns (.conll, one token per line)",
    "sequence-classification": "save the arrays with np.savez(path, x=..., y=...) as .npz",
}
_TASK_FOR_FORMAT = {fmt: task for task, formats in TASK_FORMATS.items() for fmt in formats}
_SNIFF_LINES = 2000  # enough lines to see several sentences; the readers check every line later
_ID = re.compile(r"\d+|\d+-\d+|\d+\.\d+")  # a CoNLL-U ID: word, multiword range, empty node


@dataclass(frozen=True)
class ReaderRequest:
    """What the user asked for; None leaves the choice to the file.

    Attributes:
        data_format: one of FORMATS to skip detection (``--data-format``).
        text_column, label_column: table column names (or JSONL fields) of text data.
        tag_column: a CoNLL-U field name (UPOS, XPOS, DEPREL, ...) or a CoNLL column index.
        token_column: the token's CoNLL column index (default 0).
    """

    data_format: str | None = None
    text_column: Column = "text"
    label_column: Column = "label"
    tag_column: str | int | None = None
    token_column: int | None = None


def suffix_format(path: str | Path) -> str | None:
    """The format a file's name claims ('data.tsv.gz' -> 'tsv'), None for an unknown suffix."""
    return SUFFIX_FORMAT.get(format_of(path))


def parse_tag_column(value: str) -> str | int:
    """A `--tag-column` value: a CoNLL-U field name (any case) or an integer column index."""
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.lower() in CONLLU_FIELDS:
        return text.lower()
    fields = ", ".join(f.upper() for f in CONLLU_FIELDS[2:])
    raise ValueError(f"--tag-column {value!r}: expected a CoNLL-U field ({fields}) or a column index")


def choose_reader(path: str | Path, task: str, request: ReaderRequest = ReaderRequest()) -> dict[str, Any]:
    """The reader settings for `path` as data for `task` (see the module docstring).

    Raises DataError naming what the file looks like and which flag decides, when the file
    is of a kind the task cannot read or its layout is unclear.

    Example:
        >>> choose_reader("en_ewt-ud-train.conllu", "tagging")
        {'format': 'conllu', 'tag_field': 'upos'}
    """
    if task not in TASK_FORMATS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASK_FORMATS)}", path)
    fmt, why = _detect(Path(path), task, request)
    if fmt not in TASK_FORMATS[task]:
        raise DataError(
            f"{why}, which {_TASK_FOR_FORMAT[fmt]} reads; {task} reads "
            f"{', '.join(TASK_FORMATS[task])}: pass --task {_TASK_FOR_FORMAT[fmt]}, or --data-format "
            "if the file is not what it looks like",
            path,
        )
    settings = _settings(Path(path), fmt, request)
    if request.data_format is not None:
        settings["forced"] = True  # so that a run's other files are read as this layout too
    return settings


def _detect(path: Path, task: str, request: ReaderRequest) -> tuple[str, str]:
    """(format, what it was told by) for the file; the content decides between CoNLL layouts."""
    if request.data_format is not None:
        if request.data_format not in FORMATS:
            raise DataError(f"--data-format {request.data_format!r}; expected one of {', '.join(FORMATS)}")
        return request.data_format, f"--data-format {request.data_format}"
    if path.is_dir():
        return "folders", "it is a folder (one subfolder per label)"
    suffix, claimed = format_of(path), suffix_format(path)
    if task == "tagging" and claimed in (None, "conllu", "conll", "tsv"):
        return _sniff_columns(path, claimed, request), "its lines"  # word<TAB>tag files are .tsv too
    if claimed is not None:
        return claimed, f"its suffix {suffix} says {claimed}"
    if _conllu_evidence(_sample(path))[0]:
        return "conllu", "it holds CoNLL-U (10 tab-separated fields, token IDs 1, 2, 3 ...)"
    raise DataError(
        f"cannot tell the layout from the suffix {suffix or '(none)'!r}; {_SUFFIX_HINT[task]}, "
        f"or pass --data-format ({', '.join(TASK_FORMATS[task])})",
        path,
    )


def _sample(path: Path) -> list[str]:
    """The first lines (an empty or undecodable file is refused here, by `read_text`)."""
    head = read_text(path).split("\n", _SNIFF_LINES)[:_SNIFF_LINES]
    return split_lines("\n".join(head))


def _conllu_evidence(lines: list[str]) -> tuple[bool, str]:
    """(is it CoNLL-U, what was seen): every token line 10 tab fields with an ID that counts from 1."""
    tokens = [line for line in lines if line.strip() and not line.startswith("#")]
    if not tokens:
        return False, "no token lines"
    widths = sorted({len(line.split("\t")) for line in tokens})
    ids_ok = all(_ID.fullmatch(line.split("\t", 1)[0]) for line in tokens)
    restarts = _ids_restart_at_one(lines)
    seen = f"token lines with {'/'.join(map(str, widths))} tab-separated field(s)"
    seen += ", first column " + ("token IDs" if ids_ok else repr(tokens[0].split("\t", 1)[0]))
    return widths == [len(CONLLU_FIELDS)] and ids_ok and restarts, seen


def _ids_restart_at_one(lines: list[str]) -> bool:
    """Each sentence's first ID is 1 (or a range 1-N): what tells CoNLL-U from numbers in a column."""
    previous_blank = True
    for line in lines:
        if not line.strip():
            previous_blank = True
            continue
        if line.startswith("#"):
            continue
        if previous_blank and not re.match(r"1(-\d+)?\t", line):
            return False
        previous_blank = False
    return True


def _sniff_columns(path: Path, claimed: str | None, request: ReaderRequest) -> str:
    """'conllu' or 'conll' for a token-per-line file; anything in between is refused."""
    lines = _sample(path)
    is_conllu, seen = _conllu_evidence(lines)
    if is_conllu:
        return "conllu"
    if claimed == "conllu":
        raise DataError(
            f"named .conllu but not CoNLL-U: saw {seen}, where CoNLL-U has 10 fields (ID FORM LEMMA UPOS "
            "XPOS FEATS HEAD DEPREL DEPS MISC) with IDs 1, 2, 3 in each sentence; fix the file, or pass "
            "--data-format conll to read it as plain columns",
            path,
        )
    tokens = [line for line in lines if line.strip()]
    first = [line.split("\t" if "\t" in line else None, 1)[0] for line in tokens]
    numbered = sum(bool(re.fullmatch(r"\d+(-\d+)?", f)) for f in first)
    if request.token_column is None and tokens and numbered > 0.9 * len(tokens):
        raise DataError(
            f"the first column holds numbers (token IDs?) but the layout is not CoNLL-U: saw {seen}; "
            "pass --token-column N (and --tag-column M) to read chosen columns, or --data-format conllu",
            path,
        )
    tabbed = any("\t" in line for line in tokens)
    comment = next((line for line in tokens if _is_comment(line, tabbed)), None)
    if comment is not None:
        raise DataError(
            f"has comment lines ({comment[:40]!r}) as CoNLL-U does, but not CoNLL-U's layout: saw {seen}; "
            "the CoNLL column reader would read them as tokens. Fix the lines that are not 10 fields, or "
            "remove the comments",
            path,
        )
    return "conll"


def _is_comment(line: str, tabbed: bool) -> bool:
    """A CoNLL-U style comment ('# sent_id = 1', '# text = ...'), not a '#' token: in a tab file
    a token line has a tab, and a whitespace file's '# NN O' is a token with its columns."""
    if not line.startswith("#"):
        return False
    return bool(re.match(r"#\s*[\w.-]+\s*=", line)) or (tabbed and "\t" not in line)


def _settings(path: Path, fmt: str, request: ReaderRequest) -> dict[str, Any]:
    if fmt == "conllu":
        return {"format": fmt, "tag_field": _conllu_field(path, request.tag_column)}
    if fmt == "conll":
        if isinstance(request.tag_column, str):
            raise DataError(
                f"--tag-column {request.tag_column.upper()} names a CoNLL-U field, but this file is plain "
                "CoNLL columns; give the tag's column index (0-based, -1 = last)",
                path,
            )
        token = 0 if request.token_column is None else request.token_column
        tag = -1 if request.tag_column is None else request.tag_column
        return {"format": fmt, "token_column": token, "tag_column": tag}
    if fmt in ("csv", "tsv", "jsonl"):
        return {"format": fmt, "text_column": request.text_column, "label_column": request.label_column}
    return {"format": fmt}


def _conllu_field(path: Path, tag_column: str | int | None) -> str:
    if tag_column is None:
        return "upos"
    if isinstance(tag_column, int):
        if not 2 <= tag_column < len(CONLLU_FIELDS):
            raise DataError(
                f"--tag-column {tag_column}: CoNLL-U columns 2..9 can be tags (0 is the ID, 1 the token)",
                path,
            )
        return CONLLU_FIELDS[tag_column]
    return tag_column.lower()


def read_with(path: str | Path, settings: Mapping[str, Any]) -> Any:
    """Read `path` with reader settings from `choose_reader` (or a run's run.json)."""
    fmt = settings.get("format")
    if fmt == "conllu":
        return read_conllu(path, tag_field=settings["tag_field"])
    if fmt == "conll":
        return read_conll(path, token_column=settings["token_column"], tag_column=settings["tag_column"])
    if fmt in ("csv", "tsv"):
        delimiter = "\t" if fmt == "tsv" else ","
        return read_table(path, settings["text_column"], settings["label_column"], delimiter=delimiter)
    if fmt == "jsonl":
        return read_jsonl(path, str(settings["text_column"]), str(settings["label_column"]))
    if fmt == "folders":
        return read_class_folders(path)
    if fmt == "npz":
        return read_npz(path)
    raise DataError(f"reader settings name format {fmt!r}; expected one of {', '.join(FORMATS)}", path)


def request_from(settings: Mapping[str, Any], **overrides: Any) -> ReaderRequest:
    """The choices behind recorded settings, to read another file the same way (the layout of
    the new file is detected again: a run trained on CSV can be scored on JSON lines)."""
    request = ReaderRequest(
        data_format=settings["format"] if settings.get("forced") else None,
        text_column=settings.get("text_column", "text"),
        label_column=settings.get("label_column", "label"),
        tag_column=settings.get("tag_field", settings.get("tag_column")),
        token_column=settings.get("token_column"),
    )
    return replace(request, **{k: v for k, v in overrides.items() if v is not None})


def describe(settings: Mapping[str, Any]) -> str:
    """One line for people: 'CoNLL-U, FORM -> UPOS'."""
    fmt = settings.get("format")
    if fmt == "conllu":
        return f"CoNLL-U, FORM -> {settings['tag_field'].upper()}"
    if fmt == "conll":
        return (
            f"CoNLL columns, token column {settings['token_column']} -> tag column {settings['tag_column']}"
        )
    if fmt in ("csv", "tsv", "jsonl"):
        what = "field" if fmt == "jsonl" else "column"
        return (
            f"{fmt.upper()}, text {what} {settings['text_column']!r} -> label {what} "
            f"{settings['label_column']!r}"
        )
    if fmt == "folders":
        return "a folder per class (label = folder name)"
    if fmt == "npz":
        return "numpy .npz (x, y, lengths)"
    if fmt == "bundled":
        return "rnncore's bundled copy"
    return str(fmt)
