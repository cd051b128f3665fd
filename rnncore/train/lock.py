"""One writer per run: an exclusive lock file held while a run trains, resumes or is replaced.

Two `rnncore train --out SAME` at once used to both exit 0 and leave a mix of their files;
`--resume` while the run still trained read a half-written checkpoint. Now the process that
writes a run first creates ``.NAME.lock`` beside the run folder (O_CREAT | O_EXCL: exactly
one process can), holding its pid, host and start time, and removes it when it is done.
The lock lives beside the folder, not in it, so that it exists before the run does and
survives `--overwrite` swapping the folder.

A lock whose process is gone (killed, machine rebooted) is stale: on the same host rnncore
checks the pid and takes the lock over. A lock from another host cannot be checked from
here; the message says which file to remove once that run is known to be over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOCK_FORMAT = "rnncore.lock/1"
_UNREADABLE_GRACE_S = 10.0  # a lock file being written right now is briefly empty


class RunLockedError(ValueError):
    """Another process holds the run; the message names it and what to do."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"process {self.pid} on {self.host} (since {when})"


def lock_path(run: Path) -> Path:
    return run.parent / f".{run.name}.lock"


def holder(run: Path) -> Holder | None:
    """Who holds `run`'s lock, if a live process does (None for no lock or a stale one)."""
    found = _read(lock_path(run))
    return found if found is not None and _alive(found) else None


@contextmanager
def run_lock(run: Path, doing: str = "train") -> Iterator[Holder]:
    """Hold `run`'s lock for the block; RunLockedError when a live process holds it."""
    path = lock_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = Holder(os.getpid(), socket.gethostname(), time.time())
    fd = _create(path, run, doing)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"format": LOCK_FORMAT, "pid": me.pid, "host": me.host, "started": me.started}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        yield me
    finally:
        if _read(path) == me:  # never remove a lock someone else took over
            path.unlink(missing_ok=True)


def _create(path: Path, run: Path, doing: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(2):
        try:
            return os.open(path, flags, 0o644)
        except FileExistsError:
            current = _read(path)
            if current is None and time.time() - _mtime(path) < _UNREADABLE_GRACE_S:
                raise RunLockedError(
                    f"cannot {doing} {run}: another process is taking its lock ({path})"
                ) from None
            if current is not None and _alive(current):
                raise RunLockedError(
                    f"cannot {doing} {run}: {current.describe()} is writing it; wait for it to finish or "
                    f"stop it. If that process is gone, remove {path}"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
    raise RunLockedError(f"cannot {doing} {run}: another process took its lock ({path}) meanwhile")


def _read(path: Path) -> Holder | None:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(4096))
        return Holder(int(data["pid"]), str(data["host"]), float(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def _alive(found: Holder) -> bool:
    """Whether the holder's process still runs; a lock from another host counts as alive."""
    if found.host != socket.gethostname():
        return True
    if found.pid <= 0:
        return False
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def describe_holder(run: Path) -> str | None:
    """ "process P on H (since T)" while a live process holds `run`, else None."""
    found = holder(run)
    return None if found is None else found.describe()
