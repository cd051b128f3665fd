"""The command line's error boundary: what a user sees when a command fails.

Expected failures (bad input, a failed check, a missing framework) are mapped to exit codes
by `rnncore.cli.main` and printed as one line. Anything else is a bug in rnncore: the user
gets one short line saying so and where the full traceback was written (a file of its own,
created new in the temporary folder), never a screen of traceback in place of an answer.
JSON printed for scripts is always valid JSON: NaN and infinity become null.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import traceback
from typing import Any

EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: a bug, told apart from bad input (2) and failed checks (1)
MAX_MESSAGE_CHARS = 2000  # an error message quotes values, and values can be huge


def print_error(err: BaseException | str) -> None:
    """`rnncore: error: MESSAGE` on stderr, the message cut to MAX_MESSAGE_CHARS."""
    print(f"rnncore: error: {bounded_message(err)}", file=sys.stderr)


def bounded_message(err: BaseException | str) -> str:
    text = str(err)
    if len(text) > MAX_MESSAGE_CHARS:
        half, cut = MAX_MESSAGE_CHARS // 2, len(text) - MAX_MESSAGE_CHARS
        text = f"{text[:half]} ...[{cut:,} characters cut]... {text[-half:]}"
    return text


def report_unexpected(err: BaseException, command: str | None) -> int:
    """Write the traceback of an exception nobody expected to a new file; say where, in one line."""
    what = f"{type(err).__name__}: {bounded_message(err)[:300]}"
    try:
        path = write_traceback(err, command)
        where = f"the full traceback is in {path}"
    except OSError as write_err:  # nowhere to write: the traceback is all there is to give
        traceback.print_exception(err, file=sys.stderr)
        where = f"the traceback is above (could not write it to a file: {write_err})"
    print(
        f"rnncore: internal error in `rnncore {command or ''}`: {what}. This is a bug in rnncore; {where} "
        "(please attach it to a bug report)",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def write_traceback(err: BaseException, command: str | None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    fd, path = tempfile.mkstemp(prefix=f"rnncore-crash-{stamp}-", suffix=".txt")  # created new, 0600
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"rnncore {command or ''}: argv {sys.argv!r}\n\n")
        traceback.print_exception(err, file=handle)
    return path


def json_text(value: Any) -> str:
    """`json.dumps` that writes NaN and infinity as null: Python's NaN token is not JSON, and a
    script parsing our output must never choke on it."""
    return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
