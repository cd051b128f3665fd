"""Interleaved timing: A B C A B C ..., each repetition with its own contention reading.

For one grid point and mode, every implementation is first warmed up (the first call, which
traces or compiles, and the second are timed on their own), then the loop runs rounds: in each
round every implementation runs one repetition, starting from a different implementation each
round. A repetition is `calls` back-to-back calls, each timed, sized so that it lasts at least
`min_rep_s` (jiffy accounting needs ~0.1 s to resolve a busy core). After `min_rounds` rounds,
rounds go on until every implementation has `min_quiet` quiet repetitions, or `max_rounds`
rounds, or `budget_s` seconds.
Statistics use the quiet repetitions only (`few_quiet_reps` when there are fewer than
`min_quiet`); an implementation with no quiet repetition at all keeps all of them and is flagged
`contended`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import cpu
from .grid import Point

Runner = Callable[[], Any]


@dataclass
class Impl:
    """One implementation of one architecture; `runner(mode, arrays, point)` gives a no-argument call."""

    name: str
    framework: str  # "torch", "tensorflow" or "keras-torch"
    is_rnncore: bool
    runner: Callable[[str, dict[str, np.ndarray], Point], Runner | None]  # None: not timed in that mode
    note: str = ""


@dataclass(frozen=True)
class Settings:
    warmup_calls: int = 3  # calls before timing, the first (and second) included
    min_rep_s: float = 0.15
    max_calls_per_rep: int = 200
    min_quiet: int = 3
    min_rounds: int = 3
    max_rounds: int = 12
    budget_s: float = 20.0  # per point and mode, after warm-up
    threshold: float = 0.25  # CPUs used by other processes above which a repetition is contended


@dataclass
class Rep:
    times: list[float]
    wall_s: float
    other_cpus: float
    contended: bool
    peak_mb: float | None


@dataclass
class Series:
    """One implementation's calls at one point and mode."""

    name: str
    first_call_s: float | None = None
    second_call_s: float | None = None
    first_call_peak_mb: float | None = None
    settle_s: float | None = None  # after warm-up, until the runner's own adaptation is done
    settled: bool | None = None  # whether that adaptation was done within its limit (None: none)
    calls_per_rep: int = 1
    reps: list[Rep] = field(default_factory=list)
    error: str | None = None

    def quiet(self) -> list[Rep]:
        return [r for r in self.reps if not r.contended]

    def used(self) -> tuple[list[Rep], bool]:
        """The repetitions statistics come from (the quiet ones, else all), and whether all were contended."""
        quiet = self.quiet()
        return (quiet, False) if quiet else (self.reps, bool(self.reps))

    def summary(self, min_quiet: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "first_call_s": self.first_call_s,
            "second_call_s": self.second_call_s,
            "first_call_peak_mb": self.first_call_peak_mb,
            "settle_s": self.settle_s,
            "settled": self.settled,
            "calls_per_rep": self.calls_per_rep,
            "reps": len(self.reps),
            "quiet_reps": len(self.quiet()),
            "rep_other_cpus": [round(r.other_cpus, 3) for r in self.reps],
            "rep_wall_s": [round(r.wall_s, 4) for r in self.reps],
            "error": self.error,
        }
        used, contended = self.used()
        out["few_quiet_reps"] = len(self.quiet()) < min_quiet
        if not used:
            return {**out, "contended": False, "median_s": None}
        times = np.array([t for r in used for t in r.times])
        peaks = [r.peak_mb for r in used if r.peak_mb is not None]
        rep_means = np.array([np.mean(r.times) for r in used])
        # spread between repetitions (slow drifts included), for the noise of a ratio
        rep_cv = float(rep_means.std(ddof=1) / rep_means.mean()) if len(rep_means) > 1 else None
        return {
            **out,
            "contended": contended,
            "calls": int(times.size),
            "median_s": float(np.median(times)),
            "min_s": float(times.min()),
            "p50_s": float(np.percentile(times, 50)),
            "p99_s": float(np.percentile(times, 99)),
            "rep_cv": rep_cv,
            # the median repetition: the first repetition of a run also grows the allocators
            "peak_mb": float(np.median(peaks)) if peaks else None,
            "other_cpus_median": float(np.median([r.other_cpus for r in used])),
        }


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm_up(name: str, fn: Callable[[], Any], settings: Settings) -> Series:
    series = Series(name)
    try:
        with cpu.PeakMemory() as mem:
            series.first_call_s = _timed(fn)
        series.first_call_peak_mb = mem.delta_mb
        estimate = series.first_call_s
        if settings.warmup_calls >= 2:
            estimate = series.second_call_s = _timed(fn)
        for _ in range(max(0, settings.warmup_calls - 2)):
            estimate = min(estimate, _timed(fn))
        settle = getattr(fn, "settle", None)
        if settle is not None:
            # a runner that changes path after some calls (rnncore's Keras forward compiles a
            # recurring shape) is brought to its steady state; the time it took is reported
            start = time.perf_counter()
            series.settled = bool(settle())
            series.settle_s = time.perf_counter() - start
            estimate = _timed(fn)
    except Exception as err:  # an implementation that fails is reported, not fatal
        series.error = f"{type(err).__name__}: {err}"[:500]
        return series
    series.calls_per_rep = max(1, min(settings.max_calls_per_rep, math.ceil(settings.min_rep_s / estimate)))
    return series


def repetition(fn: Callable[[], Any], calls: int, threshold: float) -> Rep:
    times = []
    with cpu.PeakMemory() as mem:
        before = cpu.sample()
        for _ in range(calls):
            times.append(_timed(fn))
        after = cpu.sample()
    other = cpu.other_cpus(before, after)
    return Rep(times, after.wall - before.wall, other, cpu.is_contended(other, threshold), mem.delta_mb)


def run_interleaved(runners: dict[str, Callable[[], Any]], settings: Settings) -> dict[str, Series]:
    """Warm up each runner, then time them in rotating rounds (see the module docstring)."""
    series = {name: warm_up(name, fn, settings) for name, fn in runners.items()}
    live = [name for name in runners if series[name].error is None]
    start = time.perf_counter()
    for round_ in range(settings.max_rounds):
        shift = round_ % len(live) if live else 0
        for name in live[shift:] + live[:shift]:
            s = series[name]
            try:
                s.reps.append(repetition(runners[name], s.calls_per_rep, settings.threshold))
            except Exception as err:
                s.error = f"{type(err).__name__}: {err}"[:500]
        live = [name for name in live if series[name].error is None]
        if round_ + 1 < settings.min_rounds:
            continue  # the minimum is kept even past the budget
        done = all(len(series[n].quiet()) >= settings.min_quiet for n in live)
        if done or not live or time.perf_counter() - start > settings.budget_s:
            break
    return series
