"""Interleaved timing: A B C, B C A, C A B, C B A, ... (balanced orders), each repetition with
its own contention reading.

For one grid point and mode, every implementation is first warmed up (the first call, which
traces or compiles, and the second are timed on their own; the last warm-up call of each comes
after all the warm-ups, `warm_round`), then the loop runs rounds: in each round every
implementation runs one repetition, each round in another order (`round_orders`: every
implementation follows each other one equally often, since who runs just before a call changes
its time). A repetition is `calls` back-to-back calls, each timed, sized so that it lasts at least
`min_rep_s` (jiffy accounting needs ~0.1 s to resolve a busy core), after an untimed call when
there are several (`repetition`). After `min_rounds` rounds, rounds go on until every
implementation has `min_quiet` quiet repetitions (with `whole_cycles`, at the end of a cycle of
orders), or `max_rounds` rounds, or `budget_s` seconds.
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
    # Stop (once quiet repetitions suffice) only after a whole cycle of `round_orders`, so that
    # every runner has followed every other one equally often; `max_rounds` and `budget_s` still
    # stop it sooner. Without it, 4 runners stopped after 3 of their 4 orders: at the Keras
    # forward points of hidden 512, rnncore's model never ran right after the Keras+XLA
    # baseline, and the hand-written graph ran right after it in 2 of its 3 repetitions.
    whole_cycles: bool = False


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
    race: dict[str, Any] | None = None  # what that adaptation chose, and why (the runner's `race()`)
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
            "race": self.race,
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


def _failure(err: Exception) -> str:
    """How a failed implementation is reported (it is recorded, not fatal)."""
    return f"{type(err).__name__}: {err}"[:500]


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
        if settings.warmup_calls >= 2:
            series.second_call_s = _timed(fn)
        for _ in range(max(0, settings.warmup_calls - 3)):  # the last warm-up call is `warm_round`'s
            _timed(fn)
        settle = getattr(fn, "settle", None)
        if settle is not None:
            # a runner that changes path after some calls (rnncore's Keras forward compiles a
            # recurring shape) is brought to its steady state; the time it took is reported
            start = time.perf_counter()
            series.settled = bool(settle())
            series.settle_s = time.perf_counter() - start
            race = getattr(fn, "race", None)
            series.race = race() if race is not None else None
    except Exception as err:  # an implementation that fails is reported, not fatal
        series.error = _failure(err)
    return series


def warm_round(runners: dict[str, Callable[[], Any]], series: dict[str, Series], settings: Settings) -> None:
    """One untimed call of every warmed-up runner, in turn, sizing its repetitions.

    The first call after the other runners' warm-ups (compiles, settling) runs slow: in a
    sitting of 24 forward points (hidden 512, batch 64) the torch model, timed first after the
    Keras warm-ups, took a median 1.31x (1.03-1.74x) the time of the same model through
    `rnncore.predict` right after it. So each runner's last warm-up call is made here, after
    all of them, and the timed rounds start nearer the steady state (over 4 points afterwards:
    1.12x in the first round, 0.99x in the next two).

    A repetition is sized by the faster of that call and the second warm-up call: a slow call
    here gave repetitions of one call, each of which then ran slow too. rnncore's torch training
    step (LSTM 2L bi, batch 64, length 32, masked) took 39 ms at its second call and over
    0.15 s here, and its three one-call repetitions 116, 85 and 91 ms (median ratio 0.73), where
    it runs 48 ms interleaved call by call against hand-written torch's 66."""
    for name, fn in runners.items():
        s = series[name]
        if s.error is not None or s.first_call_s is None:
            continue
        try:
            # (with a single warm-up call asked for, as for whole epochs, that call sizes them)
            estimate = _timed(fn) if settings.warmup_calls >= 2 else s.first_call_s
        except Exception as err:
            s.error = _failure(err)
            continue
        if s.second_call_s is not None:
            estimate = min(estimate, s.second_call_s)
        s.calls_per_rep = max(1, min(settings.max_calls_per_rep, math.ceil(settings.min_rep_s / estimate)))


def repetition(fn: Callable[[], Any], calls: int, threshold: float) -> Rep:
    """`calls` timed calls of `fn`, after one untimed call where there are several.

    The first call after another implementation's repetition runs slow (its caches, the other
    framework's threads winding down), and that costs a repetition of few short calls more than
    one of many: in a sitting, rnncore's torch model at 4 calls a repetition (LSTM, batch 64,
    length 512, hidden 128, forward) had a median 34.8 ms against hand-written torch's 31.0 at
    6 calls, with fastest calls of 30.8 and 30.4 ms; rerun alone, 31.8 against 31.9. So
    repetitions of short calls start with an untimed one. A repetition of one call (0.15 s or
    more) is left as it is: it would double the time of the slowest points.
    """
    if calls > 1:
        fn()
    times = []
    with cpu.PeakMemory() as mem:
        before = cpu.sample()
        for _ in range(calls):
            times.append(_timed(fn))
        after = cpu.sample()
    other = cpu.other_cpus(before, after)
    return Rep(times, after.wall - before.wall, other, cpu.is_contended(other, threshold), mem.delta_mb)


def round_orders(n: int) -> list[list[int]]:
    """Orders of `n` runners for successive rounds in which each runner directly follows every
    other one equally often (a Williams design: n rounds for even n, 2n for odd n).

    Rotating one order (A B C, B C A, C A B) changes who goes first, never who follows whom: a
    runner always ran right after the same one. rnncore's torch model always followed the
    Keras+XLA baseline, and in a sitting of 24 forward points (hidden 512, batch 64, 0.03-0.8 s
    a call) took a median 7% longer than the same model through `rnncore.predict` right after
    it (rounds 2 and 3; for the first round see `warm_round`)."""
    if n == 0:
        return [[]]
    first = [0]
    for k in range(1, n):  # 0, 1, n-1, 2, n-2, ...
        first.append((k + 1) // 2 if k % 2 else n - k // 2)
    rows = [[(i + shift) % n for i in first] for shift in range(n)]
    return rows if n % 2 == 0 else rows + [row[::-1] for row in rows]


def run_interleaved(runners: dict[str, Callable[[], Any]], settings: Settings) -> dict[str, Series]:
    """Warm up each runner, then time them in rounds of changing order (see `round_orders`)."""
    series = {name: warm_up(name, fn, settings) for name, fn in runners.items()}
    warm_round(runners, series, settings)
    live = [name for name in runners if series[name].error is None]
    start = time.perf_counter()
    for round_ in range(settings.max_rounds):
        orders = round_orders(len(live))
        for name in [live[i] for i in orders[round_ % len(orders)]]:
            s = series[name]
            try:
                s.reps.append(repetition(runners[name], s.calls_per_rep, settings.threshold))
            except Exception as err:
                s.error = _failure(err)
        live = [name for name in live if series[name].error is None]
        if round_ + 1 < settings.min_rounds:
            continue  # the minimum is kept even past the budget
        done = all(len(series[n].quiet()) >= settings.min_quiet for n in live)
        if settings.whole_cycles and (round_ + 1) % len(orders):
            done = False  # mid-cycle: some runner has not yet followed every other one
        if done or not live or time.perf_counter() - start > settings.budget_s:
            break
    return series
