"""Reading the small JSON documents rnncore writes (bundle config, run info, tokenizer meta,
training config): one place that turns a damaged file into an error naming it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_json(path: Path, fail: Callable[[str], Exception], fmt: str | None = None) -> Any:
    """The parsed document at `path`; `fail(message)` builds the error for a damaged one.

    With `fmt`, the document must be an object whose "format" is `fmt` (versioned files).
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise fail(f"{path} is not valid JSON ({err})") from None
    if fmt is not None and (not isinstance(document, dict) or document.get("format") != fmt):
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise fail(f"{path}: format is {found!r}; this rnncore reads {fmt!r}")
    return document
