"""Running `python -m rnncore` in a child process and measuring what it cost.

The budgets are on CPU time (`os.wait4`'s rusage of that one child) and peak memory (the
child's own VmHWM, read as it exits: rusage's maxrss would count the test process's memory,
which the child inherits at fork), not on wall time: CI machines are shared and busy, CPU
seconds are what a hostile file makes rnncore spend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

CPU_BUDGET_S = 5.0
MEMORY_BUDGET_MB = 500.0
WALL_TIMEOUT_S = 120.0  # only so that a regression fails instead of hanging the suite

# `python -m rnncore ARGS`, then the peak resident memory of this process image into a file
_MEASURED = """
import os
import sys
from rnncore.cli import entry

sys.argv = ["rnncore", *sys.argv[2:]]
try:
    code = entry()
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    with open(os.environ["HWM_FILE"], "w") as out:
        out.write(peak.split()[1])
sys.exit(code)
"""


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str
    cpu_s: float
    peak_mb: float

    def assert_refused(self, *words: str, code: int = 2) -> None:
        """Refused with exit `code`, one line naming `words`, no traceback, within budget."""
        assert self.code == code, (self.code, self.err)
        assert "Traceback" not in self.err, self.err
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rnncore: error: "), self.err
        assert len(lines[0]) < 1000, f"the message grows with its input: {len(lines[0])} characters"
        for word in words:
            assert word in self.err, (word, self.err)
        self.assert_within_budget()

    def assert_within_budget(self) -> None:
        assert self.cpu_s < CPU_BUDGET_S, f"{self.cpu_s:.1f} CPU seconds"
        assert self.peak_mb < MEMORY_BUDGET_MB, f"{self.peak_mb:.0f} MB at peak"


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Outcome:
    """`python -m rnncore ARGS` in a child; its exit code, output, CPU seconds and peak RSS."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as tmp,
    ):
        hwm = Path(tmp) / "hwm"
        process = subprocess.Popen(
            [sys.executable, "-c", _MEASURED, "--", *args],
            stdout=out,
            stderr=err,
            env={**os.environ, **(env or {}), "HWM_FILE": str(hwm)},
            cwd=cwd,
        )
        timer = threading.Timer(WALL_TIMEOUT_S, process.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return Outcome(
            process.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            usage.ru_utime + usage.ru_stime,
            int(hwm.read_text()) / 1024 if hwm.is_file() else float("inf"),  # kB
        )
