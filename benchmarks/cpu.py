"""The machine: CPU contention from /proc, peak memory, thread settings, versions, commit, GEMM peak.

Contention. With 2 threads on 2 cores one other busy process can slow torch thirtyfold (its
OpenMP threads wait on a core that is not theirs), so every repetition records how much CPU
*other* processes used while it ran: the busy jiffies of the whole machine (`/proc/stat`, first
line) minus this process's own (`/proc/self/stat`, utime + stime), divided by the wall time.
The result is in CPUs: 0.0 is a quiet machine, 1.0 means another process kept one core busy
on average. Jiffies tick at `CLK_TCK` (100 Hz), so a repetition should last 0.1 s or more for
the figure to mean anything; the timing loop makes repetitions that long.

Peak memory. Linux lets a process reset its resident-set high-water mark (write "5" to
`/proc/self/clear_refs`), so the peak of one repetition is VmHWM after it minus VmRSS before
it: the extra resident memory that repetition needed (activations, workspaces, compiled code).
Memory an allocator kept from an earlier call is already resident and does not count again.
Where the reset is refused, the figure is the growth of `ru_maxrss`, which only ever rises.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/stat cpu columns: user nice system idle iowait irq softirq steal guest guest_nice.
# Busy: all but idle and iowait; guest time is already inside user/nice, so it is not added twice.
# steal (another virtual machine on the same host) counts: those cycles were not ours either.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


@dataclass(frozen=True)
class CpuSample:
    """One reading: wall clock (s), machine busy jiffies, this process's busy jiffies."""

    wall: float
    machine_busy: int
    own_busy: int


def machine_busy_jiffies(proc_stat: str) -> int:
    """Busy jiffies of all CPUs together, from the text of /proc/stat."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            return sum(values[i] for i in _BUSY_COLUMNS if i < len(values))
    raise ValueError("no aggregate 'cpu ' line in /proc/stat text")


def own_busy_jiffies(self_stat: str) -> int:
    """utime + stime of a process, from the text of /proc/<pid>/stat (all its threads together).

    The command name (field 2) may hold spaces and parentheses, so fields are counted from the
    last ')'. Children's times (cutime, cstime) are left out: they arrive in a lump when a child
    is reaped, not while it runs, and no child runs during a timed repetition.
    """
    rest = self_stat[self_stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15
    return int(rest[11]) + int(rest[12])


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def proc_available() -> bool:
    return Path("/proc/stat").is_file() and Path("/proc/self/stat").is_file()


def sample() -> CpuSample:
    """The wall clock and both jiffy counters now (zeros where /proc is missing)."""
    if not proc_available():
        return CpuSample(time.perf_counter(), 0, 0)
    machine = machine_busy_jiffies(_read("/proc/stat"))
    own = own_busy_jiffies(_read("/proc/self/stat"))
    return CpuSample(time.perf_counter(), machine, own)


def other_cpus(before: CpuSample, after: CpuSample, clk_tck: int = CLK_TCK) -> float:
    """CPUs kept busy by other processes between two samples, on average (>= 0).

    Example: 3 s of wall time in which the machine was busy 600 jiffies and this process 330
    (CLK_TCK 100) gives (600 - 330) / 100 / 3 = 0.9 CPUs used by others.
    """
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    other = (after.machine_busy - before.machine_busy) - (after.own_busy - before.own_busy)
    return max(0.0, other / clk_tck / wall)


def is_contended(other: float, threshold: float) -> bool:
    """A repetition is contended when others used more than `threshold` CPUs during it."""
    return other > threshold


def quiet_check(seconds: float = 1.0) -> float:
    """Other processes' CPU use over `seconds` of this process sleeping (in CPUs)."""
    before = sample()
    time.sleep(seconds)
    return other_cpus(before, sample())


# ---- memory -----------------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        for line in _read("/proc/self/status").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: `.delta_mb`, the extra resident memory at the peak of the block."""

    method = "VmHWM after minus VmRSS before (peak reset through /proc/self/clear_refs)"

    def __init__(self) -> None:
        self.delta_mb: float | None = None
        self._base_kb = 0
        self._reset = False

    def __enter__(self) -> PeakMemory:
        self._reset = _reset_peak()
        base = _status_kb("VmRSS") if self._reset else None
        if base is None:
            self._reset = False
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        self._base_kb = base
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _status_kb("VmHWM") if self._reset else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.delta_mb = max(0, peak - self._base_kb) / 1024.0


def memory_maps_used() -> float | None:
    """This process's memory maps as a fraction of the kernel's limit per process (None where
    /proc does not say). XLA keeps each compiled program's code mapped for the life of the
    process, dropped models or not: a sitting of Keras points grew by ~650 maps a point on 2
    cores, and at the limit (`vm.max_map_count`, 65,530 by default) LLVM aborts the process
    ("Unable to allocate section memory") after ~100 points."""
    try:
        limit = int(_read("/proc/sys/vm/max_map_count"))
        with open("/proc/self/maps", "rb") as maps:
            used = sum(1 for _ in maps)
    except (OSError, ValueError):
        return None
    return used / limit if limit > 0 else None


def memory_method() -> str:
    if _reset_peak() and _status_kb("VmHWM") is not None:
        return PeakMemory.method
    return "growth of ru_maxrss (monotonic: only a new process-wide peak shows)"


# ---- machine ----------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in _read("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "clk_tck": CLK_TCK,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions(modules: list[str]) -> dict[str, str]:
    """Versions of `modules`: an imported one's own `__version__`, any other's installed
    distribution's, read from its metadata without importing it (importing TensorFlow to name
    its version loaded its whole runtime, oneDNN and all, into torch-only runs)."""
    found: dict[str, str] = {}
    for name in modules:
        version = getattr(sys.modules.get(name), "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                version = "not installed"
        found[name] = str(version)
    return found


def allocator_settings() -> dict[str, str]:
    """The environment's settings of the C allocator (glibc's `MALLOC_*_` variables and
    tunables, a preloaded allocator): on 2 cores they cut torch training steps by up to 42%
    (README, "CPU memory"), so a run names them; none: the allocator as every program gets it."""
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith("MALLOC_") or name in ("GLIBC_TUNABLES", "LD_PRELOAD")
    }


def git_commit() -> str | None:
    """The checkout's commit ("+dirty" when tracked files have changes), None outside git:
    a figure in the ledger must say which code it measured."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=10)  # fmt: skip
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                 capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if changes.stdout.strip() else "")
