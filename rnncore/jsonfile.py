"""Reading the small JSON (and YAML) documents rnncore reads whole: bundle config, run info,
checkpoint state, tokenizer meta, training config, specs. One place that turns a damaged or
hostile file into an error naming it.

Budgets (see `rnncore.limits`): a document is at most MAX_DOCUMENT_BYTES and MAX_NESTING deep;
YAML aliases (``*name``) are refused outright, which rules out the "billion laughs" file whose
470 bytes expand to gigabytes. rnncore never writes an alias, and a spec or config gains
nothing from one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from .limits import how_to_raise, limit

Fail = Callable[[str], Exception]


def read_json(path: Path, fail: Fail, fmt: str | None = None, allow_nan: bool = False) -> Any:
    """The parsed document at `path`; `fail(message)` builds the error for a damaged one.

    With `fmt`, the document must be an object whose "format" is `fmt` (versioned files).
    `allow_nan` reads Python's NaN/Infinity tokens (a training history may hold a NaN metric).
    """
    document = parse_json(read_document(path, fail), fail, str(path), allow_nan)
    if fmt is not None and (not isinstance(document, dict) or document.get("format") != fmt):
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise fail(f"{path}: format is {str(found)[:80]!r}; this rnncore reads {fmt!r}")
    return document


def read_document(path: Path, fail: Fail) -> str:
    """The text of `path`, refused past MAX_DOCUMENT_BYTES before it is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        most = limit("MAX_DOCUMENT_BYTES")
        if size > most:
            raise fail(f"{path} is {size:,} bytes, above the limit of {most:,} for a document; "
                       + how_to_raise("MAX_DOCUMENT_BYTES"))  # fmt: skip
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise fail(
            f"{path} is not valid JSON or YAML: not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None


def parse_json(text: str, fail: Fail, where: str, allow_nan: bool = False) -> Any:
    """`json.loads` that refuses NaN/Infinity (not JSON) and documents nested too deep."""
    try:
        document = json.loads(text, parse_constant=float if allow_nan else _refuse_constant)
    except (json.JSONDecodeError, ValueError) as err:
        raise fail(f"{where} is not valid JSON ({err})") from None
    except RecursionError:
        raise fail(f"{where} is nested too deeply to be one of rnncore's documents") from None
    _check_depth(document, fail, where)
    return document


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value; write a number or null")


def parse_yaml(text: str, fail: Fail, where: str) -> Any:
    """`yaml.safe_load` without aliases, and no deeper than MAX_NESTING."""
    yaml = yaml_module()
    try:
        document = yaml.load(text, Loader=_strict_loader())  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        raise fail(f"{where} is not valid YAML for rnncore ({_yaml_problem(err)})") from None
    except RecursionError:
        raise fail(f"{where} is nested too deeply to be one of rnncore's documents") from None
    _check_depth(document, fail, where)
    return document


def _yaml_problem(err: Exception) -> str:
    """PyYAML's error in one line: the problem and where (its own text spans several lines)."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if problem and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"[:300]
    return " ".join(str(err).split())[:300]


def _check_depth(document: Any, fail: Fail, where: str) -> None:
    most = limit("MAX_NESTING")
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > most:
            raise fail(f"{where} is nested more than {most} levels deep; " + how_to_raise("MAX_NESTING"))
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def yaml_module() -> Any:
    try:
        import yaml
    except ImportError:
        raise ImportError("reading YAML specs needs PyYAML: pip install 'rnncore[yaml]'") from None
    return yaml


@cache
def _strict_loader() -> Any:
    yaml = yaml_module()

    class StrictLoader(yaml.SafeLoader):  # type: ignore[name-defined]
        """PyYAML's safe loader, refusing aliases and counting depth while it composes."""

        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in rnncore files; write the value out", mark
                )
            self.depth += 1
            try:
                if self.depth > limit("MAX_NESTING"):
                    raise yaml.composer.ComposerError(
                        None, None, f"nested more than {limit('MAX_NESTING')} levels deep",
                        self.peek_event().start_mark,
                    )  # fmt: skip
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return StrictLoader
