"""Error messages worded for whoever reads them: a flag for CLI users, a keyword in Python.

The same check runs under `rnncore train --text-column ...` and under
`read_texts(path, text_column=...)`; its message should name what the reader typed. The CLI
marks its run with `cli_wording()`; a message built inside picks its CLI form with `say`.
A context variable (not a global) keeps two threads' wording apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_CLI = ContextVar("rnncore_cli_wording", default=False)


@contextlib.contextmanager
def cli_wording() -> Iterator[None]:
    """Messages built inside this block speak to a command-line user."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def say(python: str, cli: str) -> str:
    """`cli` inside `cli_wording()`, else `python`."""
    return cli if _CLI.get() else python
