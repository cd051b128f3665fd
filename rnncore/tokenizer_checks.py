"""Checks on a tokenizer folder before the Rust `tokenizers` library reads it.

Two things in a small `tokenizer.json` can cost far more than its size, and Rust cannot be
interrupted from Python once it runs:

- an id: a vocabulary holding the id 4,000,000,000 makes an embedding table of that many rows
  (and aborts the process inside Rust); every id must be below MAX_VOCAB (`rnncore.limits`);
- a regular expression (a `Split` pre-tokenizer or a `Replace` normalizer): Oniguruma
  backtracks, so `(a+)+$` takes seconds on a kilobyte of text and years on a page. We refuse a
  repeated group that itself holds a repetition (star height above MAX_REGEX_STAR_HEIGHT,
  1 by default), the shape of nearly every catastrophic pattern; every tokenizer we know of
  (BERT, GPT-2, GPT-4's cl100k/o200k, Llama) has star height 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .jsonfile import read_json
from .limits import bounded, how_to_raise, limit


def check_tokenizer_folder(folder: Path) -> None:
    """Raise ValueError naming the file and the problem when the folder's tokenizer.json or
    vocab.txt holds an id or a pattern beyond the budgets above."""
    path = folder / "tokenizer.json"
    if path.is_file():
        document = read_json(
            path, lambda why: ValueError(f"{folder}: not a tokenizer folder that can be read ({why})")
        )
        _check_ids(document, path)
        for pattern in _regexes(document):
            _check_regex(pattern, path)
    elif (folder / "vocab.txt").is_file():
        vocab = folder / "vocab.txt"
        with vocab.open("rb") as handle:
            count = sum(1 for _ in handle)
        if count > limit("MAX_VOCAB"):
            raise ValueError(f"{vocab} holds {count:,} tokens, above the limit of {limit('MAX_VOCAB'):,}; "
                             + how_to_raise("MAX_VOCAB"))  # fmt: skip


def _check_ids(document: Any, path: Path) -> None:
    most = limit("MAX_VOCAB")
    for where, value in _ids(document):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < most:
            raise ValueError(
                f"{path}: {where} is {bounded(value)}; token ids are integers in 0..{most - 1:,} "
                "(an embedding table holds a row for every id up to the largest); "
                + how_to_raise("MAX_VOCAB")
            )


def _ids(document: Any) -> Iterator[tuple[str, Any]]:
    if not isinstance(document, dict):
        return
    model = document.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):  # WordPiece, WordLevel, BPE: token -> id
        for token, value in vocab.items():
            yield f"the id of token {bounded(token)}", value
    added = document.get("added_tokens")
    for entry in added if isinstance(added, list) else ():
        if isinstance(entry, dict) and "id" in entry:
            yield f"the id of added token {bounded(entry.get('content'))}", entry["id"]


def _regexes(node: Any) -> Iterator[str]:
    """Every {"Regex": pattern} anywhere in the document (pre-tokenizers, normalizers, decoders)."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("Regex"), str):
                yield node["Regex"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_regex(pattern: str, path: Path) -> None:
    height, most = star_height(pattern), limit("MAX_REGEX_STAR_HEIGHT")
    if height > most:
        raise ValueError(
            f"{path}: the pattern {bounded(pattern)} repeats a group that itself repeats (star height "
            f"{height}), which can backtrack for minutes on a short text; rewrite it without the "
            f"nested repetition, or {how_to_raise('MAX_REGEX_STAR_HEIGHT')}"
        )


def star_height(pattern: str) -> int:
    """How deeply unbounded repetitions (*, +, {n,}) nest in a regular expression.

    A scan of the pattern's structure, not a full parser: escapes and character classes are
    skipped, groups are matched by parentheses. `a+b*` has height 1, `(a+)+` height 2.

    Example:
        >>> star_height(r" ?\\p{L}+| ?\\p{N}+|\\s+(?!\\S)"), star_height("(x+x+)+y")
        (1, 2)
    """
    groups = [0]  # per open group: the greatest height inside it so far
    last = 0  # height of the atom just before a quantifier (a closed group's inner height)
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i, last = i + 2, 0
            continue
        if char == "[":
            i, last = _skip_class(pattern, i), 0
            continue
        if char == "(":
            groups.append(0)
            i += 1
            if pattern.startswith("?", i):  # (?:, (?=, (?<name>: not a quantifier
                i += 1
            last = 0
            continue
        if char == ")":
            last = groups.pop() if len(groups) > 1 else 0
            groups[-1] = max(groups[-1], last)
            i += 1
            continue
        if char in "*+" or (char == "{" and _unbounded_brace(pattern, i)):
            groups[-1] = max(groups[-1], last + 1)
            last = 0
        i += 1
        if char not in "*+{?":
            last = 0
    return max(groups)


def _skip_class(pattern: str, start: int) -> int:
    """The index just after the character class opening at `start` (nested [..] included)."""
    depth, i = 0, start
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            depth += 1
            if pattern.startswith("^", i + 1):
                i += 1
            if pattern.startswith("]", i + 1):  # a leading ] is a literal
                i += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _unbounded_brace(pattern: str, start: int) -> bool:
    """Whether `{` at `start` opens {n,} (unbounded), as opposed to {n} or {n,m} or a literal."""
    end = pattern.find("}", start)
    body = pattern[start + 1 : end] if end > 0 else ""
    head, comma, tail = body.partition(",")
    return bool(comma) and head.strip().isdigit() and not tail.strip()
