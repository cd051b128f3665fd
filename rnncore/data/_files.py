"""Reading a data file's bytes and text once, with errors that say where and how to fix it."""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..limits import how_to_raise, limit

# Compressed files are read by their last suffix; the format is the suffix before it.
_DECOMPRESS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_CHUNK = 1 << 20


class DataError(ValueError):
    """A data file or a dataset cannot be used as it is; the message names the file, the place and a fix.

    `path` and `line` are kept as attributes (None where they do not apply).
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = "" if path is None else f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


def format_of(path: str | Path) -> str:
    """The file's format suffix, lower case, without a compression suffix: 'data.tsv.gz' -> '.tsv'."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _DECOMPRESS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, decompressed when it ends in .gz, .bz2 or .xz."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file; check the path (relative paths start at the working directory)", path)
    opener = _DECOMPRESS.get(path.suffix.lower())
    if opener is None:
        return path.read_bytes()
    allowance = decompressed_allowance(path.stat().st_size)
    try:
        with opener(path, "rb") as stream:
            return _read_at_most(stream, allowance, path)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as err:
        raise DataError(f"cannot decompress as {path.suffix} ({err}); is the file complete?", path) from None


def decompressed_allowance(compressed_bytes: int) -> int:
    """How far a compressed file of this size may inflate: MAX_COMPRESSION_RATIO times its size
    (text compresses 3-10x; a "zip bomb" 1000x), at least MIN_DECOMPRESSED_ALLOWANCE, at most
    MAX_DECOMPRESSED_BYTES."""
    ratio = limit("MAX_COMPRESSION_RATIO") * compressed_bytes
    return min(limit("MAX_DECOMPRESSED_BYTES"), max(limit("MIN_DECOMPRESSED_ALLOWANCE"), ratio))


def _read_at_most(stream: Any, allowance: int, path: Path) -> bytes:
    """Decompress chunk by chunk, stopping as soon as the output passes `allowance`: the check
    comes before the memory is spent, not after."""
    chunks, total = [], 0
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
        if total > allowance:
            raise DataError(
                f"decompresses to more than {allowance:,} bytes from {path.stat().st_size:,}; refused "
                "as a likely decompression bomb. If it is real data, decompress it first, or "
                + how_to_raise("MAX_COMPRESSION_RATIO"),
                path,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole file as text; an empty file and bytes that are not `encoding` raise DataError."""
    raw = read_bytes(path)
    if not raw.strip():
        raise DataError("the file is empty; expected at least one example", path)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"not valid {encoding} (byte 0x{raw[err.start]:02x} at offset {err.start}); re-save the file "
            f"as {encoding}, or pass the encoding it was written in (e.g. encoding='latin-1')",
            path,
            line,
        ) from None
    # A byte order mark from Windows editors is not part of the first column's name.
    return text.removeprefix("\ufeff")


def check_line_length(line: str, path: str | Path, number: int) -> None:
    """Refuse a line longer than MAX_LINE_CHARS before parsing it: one megabyte-long "text" is
    no example a recurrent network reads, and parsing it (JSON, splitting) would cost its size
    again."""
    most = limit("MAX_LINE_CHARS")
    if len(line) > most:
        raise DataError(
            f"line is {len(line):,} characters long, above the limit of {most:,}; split or drop it, or "
            + how_to_raise("MAX_LINE_CHARS"),
            path,
            number,
        )


def split_lines(text: str) -> list[str]:
    """Lines split on \\n (and \\r\\n) only: str.splitlines also splits on U+2028, U+0085 and
    other separators that may sit inside a token or a JSON string."""
    return [line.removesuffix("\r") for line in text.split("\n")]
