"""What the command line prints besides results: framework noise held back, one line per
warning, a summary of what was written, and what Ctrl-C kept.

TensorFlow writes its start-up lines (`WARNING: All log messages before absl::InitializeLog()
is called are written to STDERR`, `Could not find cuda drivers on your machine`, oneDNN
notices, a failed cuInit) from C++ straight to file descriptor 2, some of them before any
setting such as TF_CPP_MIN_LOG_LEVEL is read and some at the first model build or call. The
only switch that reaches all of them is the descriptor itself: `quiet_framework_logs` points
fd 2 at /dev/null for the command and keeps Python's `sys.stderr` on a copy of the original,
so rnncore's own messages, warnings and tracebacks still reach the terminal. Python-level
framework warnings (absl, Keras, torch deprecations) are filtered; rnncore's own
`DataWarning`s always show. `--verbose` turns all of this off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from .runinfo import DataWarning

FRAMEWORK_LOGGERS = ("tensorflow", "absl", "keras", "h5py", "jax")


@contextlib.contextmanager
def quiet_framework_logs(enabled: bool = True) -> Iterator[None]:
    """Hold back framework log noise (see the module docstring) while the block runs."""
    if not enabled:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    levels = {name: logging.getLogger(name).level for name in FRAMEWORK_LOGGERS}
    for name in FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), _native_stderr_silenced():
        warnings.simplefilter("ignore")
        warnings.simplefilter("default", DataWarning)
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    try:
        sys.stderr.flush()
        python_uses_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capture, a StringIO: not fd 2
        python_uses_fd2 = False
    saved = os.dup(2)
    original: TextIO = sys.stderr
    if python_uses_fd2:  # Python's own messages keep going where fd 2 went
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=original.encoding)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if python_uses_fd2:
            sys.stderr.close()
            sys.stderr = original


def show_warning(message: Any, category: Any, filename: str, lineno: int, *_: Any, **__: Any) -> None:
    """`warnings.showwarning` for the CLI: rnncore's own warnings as one line, no source line."""
    if issubclass(category, DataWarning):
        print(f"rnncore: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno), end="", file=sys.stderr)


def wrote(what: Sequence[tuple[str, str | Path]]) -> None:
    """The closing summary of a command: each thing written, and where."""
    if not what:
        return
    print("wrote:")
    width = max(len(str(path)) for _, path in what)
    for description, path in what:
        print(f"  {path!s:<{width}}  {description}")


def progress_mode(quiet: bool) -> str:
    """'bar' on a terminal, 'lines' (one per epoch) when output goes to a file or pipe,
    'none' with --quiet: a redirected run once filled 400 KB with progress-bar frames."""
    if quiet:
        return "none"
    return "bar" if sys.stderr.isatty() else "lines"
