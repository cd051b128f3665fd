"""What the tutorial scripts share: where they write, and running a command as `rnncore ...` would."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from rnncore.cli import main


def work_folder(default: str) -> Path:
    """The folder given as the script's argument, else `default`; created, and must be empty."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else default)
    if folder.exists() and any(folder.iterdir()):
        sys.exit(f"{folder} is not empty; give an empty or new folder as the argument")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def rnncore(*args: object) -> None:
    """Run one command line in this process, exactly as the `rnncore` command would, and echo it."""
    argv = [str(a) for a in args]
    print(f"\n$ rnncore {shlex.join(argv)}", flush=True)
    status = main(argv)
    if status != 0:
        sys.exit(f"rnncore {argv[0]} exited with {status}")
