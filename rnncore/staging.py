"""Writing a file so that it appears whole or not at all, and never through a link.

`staged(target)` hands out a new, empty file beside `target` (created with O_EXCL, so it is
nobody else's file and no link), and renames it onto `target` when the block succeeds. A
rename replaces the *name*: when `target` is a symbolic link to a file elsewhere, the link is
replaced and the file it pointed at is left alone, where ``open(target, "w")`` would have
overwritten it. A crash leaves the previous file (and at most a hidden ``.NAME.*.tmp``).

Example:
    >>> with staged(run / "history.json") as tmp:
    ...     tmp.write_text(text, encoding="utf-8")
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(target: str | Path) -> Iterator[Path]:
    """A new temporary file beside `target`, flushed and renamed onto it when the block ends
    without an exception (and removed when it raises)."""
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(target: str | Path, text: str) -> None:
    """`target.write_text(text)`, staged: whole or not at all, never through a link."""
    with staged(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | Path, data: bytes) -> None:
    """`target.write_bytes(data)`, staged: whole or not at all, never through a link."""
    with staged(target) as tmp:
        tmp.write_bytes(data)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
