"""The ledger: every grid ratio ever measured, kept in the repository (`benchmarks/ledger.csv`).

No single run times the whole grid on 2 cores (README, "The full grid"), so it is timed in
sittings (`--points`), and a sitting's JSON file lives in an ignored folder that does not
outlive its machine. The ledger keeps one row per run, point, mode and framework: enough to
say which points were ever timed and where each one stands against the target.

    python -m benchmarks.ledger add results/full.json [...]   # add a run's figures
    python -m benchmarks.ledger report                        # coverage and the figures under target

Adding a run twice adds nothing (a row is known by its run's start time, point, mode and
framework). A point's figure combines all its runs (`combined`), so rerunning the points
under target checks them without letting a lucky rerun erase the first run; only a change to
the code a figure measures (`CODE_CHANGES`) sets its earlier runs aside.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import grid
from .report import TARGET_RATIO

LEDGER = Path(__file__).with_name("ledger.csv")
FIELDS = (
    "started", "commit", "point", "mode", "framework", "ratio", "noise", "rnncore_s", "baseline",
    "baseline_s", "contended", "cpu", "gemm_gflops",
)  # fmt: skip
# The machine columns (`cpu`: /proc/cpuinfo's model name, `gemm_gflops`: the run's float32 GEMM
# peak) came in on 2026-11-30; the runs before hold them empty (the README of that time gives
# its machines' peak as about 120 GFLOP/s on 2 cores; the first recorded run's measured 204).
FRAMEWORKS = ("torch", "tensorflow")
MIN_NOISE = 0.01  # the smallest standard error a run's ratio is trusted with
NO_NOISE = 0.10  # the standard error of a run's ratio that has none (fewer than 2 repetitions)


@dataclass(frozen=True)
class CodeChange:
    """A change to the code some figures measure: their runs started before it measured other code."""

    landed: str  # the commit's time, ISO 8601 with its offset
    commit: str
    points: str  # comma-separated globs of point keys (`fnmatch`), as `--points` takes them
    modes: tuple[str, ...]
    framework: str
    what: str

    def supersedes(self, row: dict[str, str]) -> bool:
        return (
            row["mode"] in self.modes
            and row["framework"] == self.framework
            and any(fnmatch.fnmatchcase(row["point"], glob) for glob in self.points.split(","))
            and _instant(row["started"]) < _instant(self.landed)
        )


def _instant(iso: str) -> datetime:
    """An ISO 8601 time; one without an offset is taken as UTC (as the harness writes them)."""
    moment = datetime.fromisoformat(iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# Every change to a path of rnncore's models since the ledger began, with the figures it
# affects: a figure combines only the runs since its latest change (none: untimed until rerun).
# Changes to the harness alone are not listed (each row names its commit).
CODE_CHANGES = (
    CodeChange(
        "2026-11-29T09:22:15+00:00", "b341784", "*", ("forward", "train"), "tensorflow",
        "the Keras races (forward and training step) keep the path with the lowest lower quartile",
    ),
    CodeChange(
        "2026-11-29T10:08:08+00:00", "70828d4", "*-2L-*-masked", ("forward", "train"), "tensorflow",
        "Keras zeroes padded steps after the last recurrent layer only",
    ),
    CodeChange(
        "2026-11-29T12:44:53+00:00", "0675c44", "rnn-*-T128-B64-*-masked", ("train",), "torch",
        "plain RNNs train padded batches packed below 256 steps (was 64)",
    ),
    # Points where some path's calls can take under XLA_LEAD_S (0.05 s): forward everywhere but
    # T512 B64 H512 (0.071 s and up), training where the ledger's fastest step was under 0.07 s.
    CodeChange(
        "2026-11-29T17:24:44+00:00", "e7e8ba8", "*-T32-*,*-T128-*,*-B1-*,*-T512-B64-H128-*", ("forward",),
        "tensorflow", "the Keras race times short calls after an untimed lead call, 16 trials each",
    ),
    CodeChange(
        "2026-11-29T17:24:44+00:00", "e7e8ba8",
        "*-T32-*,*-T128-B1-*,*-T128-B64-H128-*,*-T512-B1-H128-*,rnn-1L-*-T512-B64-H128-*", ("train",),
        "tensorflow", "the Keras race times short calls after an untimed lead call, 16 trials each",
    ),
    # Points where the ledger's Keras training steps took 0.04-0.25 s in some run (90 points;
    # below 0.05 s steps had leads already, and the new threshold is 0.2 s).
    CodeChange(
        "2026-11-29T21:05:42+00:00", "8b11bd8",
        "*-*-T128-B64-H256-*,*-1L-*-T512-B64-H128-*-fixed,*-1L-bi-T128-B1-H512-*,"
        "*-1L-bi-T32-B64-H512-*,*-1L-uni-T512-B64-H128-*,*-2L-bi-T128-B64-H128-*,"
        "*-2L-bi-T32-B1-H512-*,*-2L-bi-T512-B1-H128-*,*-2L-uni-T128-B1-H512-*,"
        "*-2L-uni-T32-B64-H512-*,gru-*-T128-B64-H128-*-masked,gru-*-bi-T128-B64-H128-*,"
        "gru-*-bi-T512-B1-H128-*,gru-*-uni-T512-B64-H128-*-fixed,gru-1L-*-T128-B1-H512-*,"
        "gru-1L-*-T32-B64-H512-*,gru-1L-uni-T128-B64-H512-*,gru-1L-uni-T512-B1-H512-*,"
        "gru-2L-*-T128-B64-H128-*,gru-2L-*-T32-B1-H512-*,gru-2L-*-T512-B1-H128-*,"
        "gru-2L-bi-T128-B1-H128-*,gru-2L-bi-T32-B64-H128-*,lstm-*-T512-B1-H128-*,"
        "lstm-*-bi-T128-B64-H128-*,lstm-*-bi-T32-B1-H512-*,lstm-1L-*-T128-B1-H512-*,"
        "lstm-1L-*-T32-B64-H512-*,lstm-2L-*-T128-B64-H128-*,lstm-2L-*-T32-B1-H512-*,"
        "lstm-2L-bi-T128-B1-H128-*,lstm-2L-bi-T32-B64-H128-*,rnn-*-T512-B64-H128-*-fixed,"
        "rnn-*-bi-T128-B1-H512-*,rnn-*-bi-T32-B64-H512-*,rnn-*-uni-T128-B64-H512-*,"
        "rnn-*-uni-T512-B1-H512-*,rnn-*-uni-T512-B64-H128-*,rnn-1L-*-T128-B64-H512-*,"
        "rnn-1L-*-T512-B1-H512-*,rnn-1L-*-T512-B64-H128-*",
        ("train",), "tensorflow", "the Keras training race leads each turn of steps under 0.2 s",
    ),
    # The masked points whose torch training runs padded (`PADDED_RUN_MIN_STEPS`, 56% valid
    # steps >= `PADDED_RUN_MIN_FILL`): every LSTM, GRUs from 64 steps, RNNs from 256.
    CodeChange(
        "2026-11-30T01:43:23+00:00", "6afb4d3", "lstm-*-masked,gru-*-T128-*-masked,gru-*-T512-*-masked,"
        "rnn-*-T512-*-masked", ("train",), "torch",
        "torch's padded training run is cut in time where rows end",
    ),
)  # fmt: skip


def current(
    rows: list[dict[str, str]], changes: tuple[CodeChange, ...] = CODE_CHANGES
) -> list[dict[str, str]]:
    """The rows that measured the code as it is now: those no later change of path supersedes."""
    return [row for row in rows if not any(change.supersedes(row) for change in changes)]


def rows_of(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per grid entry and framework that has a ratio in a results JSON."""
    rows = []
    peak = results.get("gemm", {}).get("peak_gflops")
    for e in results.get("grid", []):
        for framework, r in e.get("ratios", {}).items():
            ours, best = e["impls"][r["rnncore"]], e["impls"][r["best_baseline"]]
            rows.append({
                "started": results["started"],
                "commit": results.get("commit") or "",
                "point": e["point"]["key"],
                "mode": e["mode"],
                "framework": framework,
                "ratio": f"{r['ratio']:.4f}",
                "noise": "" if r.get("noise") is None else f"{r['noise']:.4f}",
                "rnncore_s": f"{ours['median_s']:.6g}",
                "baseline": r["best_baseline"],
                "baseline_s": f"{best['median_s']:.6g}",
                "contended": "1" if r.get("contended") else "0",
                "cpu": results.get("machine", {}).get("cpu", ""),
                "gemm_gflops": f"{peak:.0f}" if peak else "",
            })  # fmt: skip
    return rows


def read(path: Path = LEDGER) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise ValueError(f"{path} has columns {reader.fieldnames}, expected {list(FIELDS)}")
        return list(reader)


def add(result_files: list[Path], path: Path = LEDGER) -> int:
    """Add the rows not in the ledger yet; returns how many were added.

    A row is known by its run's start time, point, mode and framework, so a run's partial JSON
    (written after every point) and its final one can both be added. The file is rewritten
    whole through a temporary file: an error half-way leaves the ledger as it was.
    """
    rows = read(path)
    known = {_identity(row) for row in rows}
    new: list[dict[str, str]] = []
    for file in result_files:
        results = json.loads(file.read_text(encoding="utf-8"))
        if "started" not in results or "grid" not in results:
            raise ValueError(f"{file} is not a benchmark results file (no 'started' or 'grid')")
        if results.get("allocator"):  # the ledger's figures all come from one kind of process
            raise ValueError(
                f"{file} was measured with allocator settings ({results['allocator']}); the ledger "
                "holds runs with the allocator as every program gets it (rerun without them)"
            )
        for row in rows_of(results):
            if _identity(row) not in known:
                new.append(row)
                known.add(_identity(row))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows + new)
    tmp.replace(path)
    return len(new)


def _identity(row: dict[str, str]) -> tuple[str, str, str, str]:
    return row["started"], row["point"], row["mode"], row["framework"]


@dataclass(frozen=True)
class Figure:
    """A point's ratio over all its runs: the mean of their ratios weighted by 1/s.e.^2."""

    point: str
    mode: str
    framework: str
    ratio: float
    noise: float
    runs: int
    contended: bool
    # the best baseline's mean call time over the runs / rnncore's: a check on the weighted ratio
    # where runs scatter (a few tight runs can carry that one; every run counts alike here)
    mean_times_ratio: float

    @property
    def within_noise(self) -> bool:
        return self.ratio + 2 * self.noise >= TARGET_RATIO


def combined(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], Figure]:
    """Each (point, mode, framework)'s figure over every run of it.

    Not the latest run's: rerunning only the figures under target and keeping the last would
    let a point slower than the target pass by chance, while a weighted mean keeps the first
    run in. The weights trust a run with tighter repetitions more, but no run's standard error
    counts as under `MIN_NOISE` (3-8 repetitions understate it on a shared machine), and a run
    without one counts as `NO_NOISE`. Runs of one point scatter more than their repetitions
    say (in sittings 8-12 one figure read 0.55, 0.41 and 1.0), so where they disagree beyond
    their errors the combined error is scaled up by the scatter (the Birge ratio,
    sqrt(chi^2 / (runs - 1)), never below 1).
    """
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["point"], row["mode"], row["framework"]), []).append(row)
    found = {}
    for key, runs in groups.items():
        noises = [max(float(r["noise"]), MIN_NOISE) if r["noise"] else NO_NOISE for r in runs]
        weights = [1.0 / (n * n) for n in noises]
        ratios = [float(r["ratio"]) for r in runs]
        ratio = sum(w * x for w, x in zip(weights, ratios, strict=True)) / sum(weights)
        noise = 1.0 / math.sqrt(sum(weights))
        if len(runs) > 1:  # runs that disagree beyond their errors widen the error (Birge ratio)
            chi2 = sum(w * (x - ratio) ** 2 for w, x in zip(weights, ratios, strict=True))
            noise *= max(1.0, math.sqrt(chi2 / (len(runs) - 1)))
        contended = any(r["contended"] == "1" for r in runs)
        times = statistics.fmean(float(r["baseline_s"]) for r in runs) / statistics.fmean(
            float(r["rnncore_s"]) for r in runs
        )
        found[key] = Figure(*key, ratio, noise, len(runs), contended, times)
    return found


def report(rows: list[dict[str, str]], changes: tuple[CodeChange, ...] = CODE_CHANGES) -> str:
    """Coverage of the full grid, medians of the points' combined figures, and every figure under
    the target (with whether it lies within two standard errors of it), from the rows that
    measured the code as it is (`current`)."""
    kept = current(rows, changes)
    figures = combined(kept)
    points = [p.key for p in grid.full_points()]
    lines = [f"{len(rows)} rows from {len({r['started'] for r in rows})} run(s); target {TARGET_RATIO}"]
    if len(kept) < len(rows):
        lines.append(
            f"{len(rows) - len(kept)} row(s) set aside: runs from before a change of the code they measured"
        )
    lines.append("machines: " + machines(rows))
    under: list[Figure] = []
    for framework in FRAMEWORKS:
        for mode in grid.MODES:
            have = [figures[k] for k in ((p, mode, framework) for p in points) if k in figures]
            met = sum(f.ratio >= TARGET_RATIO for f in have)
            near = sum(f.ratio < TARGET_RATIO and f.within_noise for f in have)
            median = f"median {statistics.median(f.ratio for f in have):.3f}, " if have else ""
            lines.append(
                f"{framework:10} {mode:7} {len(have):3} of {len(points)} points timed; "
                f"{median}{met} at or above target, {near} under it within 2 s.e., "
                f"{len(have) - met - near} beyond"
            )
            under += [f for f in have if f.ratio < TARGET_RATIO]
    if under:
        lines.append("figures under target (ratio ± standard error over all runs):")
        for f in sorted(under, key=lambda f: f.ratio):
            verdict = "within 2 s.e." if f.within_noise else "beyond 2 s.e."
            flag = ", contended" if f.contended else ""
            times = f"; the runs' mean call times: {f.mean_times_ratio:.3f}" if f.runs > 1 else ""
            lines.append(
                f"  {f.framework:10} {f.mode:7} {f.point}  {f.ratio:.2f} ± {f.noise:.2f} "
                f"({verdict}; {f.runs} run{'s' if f.runs > 1 else ''}{flag}){times}"
            )
    return "\n".join(lines)


def machines(rows: list[dict[str, str]]) -> str:
    """How many runs each CPU model made, with their GEMM peaks: `AMD EPYC (GEMM 165-204 GFLOP/s): 2 runs`.

    By model name, not peak: one machine's measured peak moves between runs (165-204 on one).
    """
    runs: dict[str, set[str]] = {}
    peaks: dict[str, list[float]] = {}
    for row in rows:
        name = row["cpu"] or "not recorded"
        runs.setdefault(name, set()).add(row["started"])
        if row["gemm_gflops"]:
            peaks.setdefault(name, []).append(float(row["gemm_gflops"]))
    parts = []
    for name, started in runs.items():
        gemm = ""
        if name in peaks:
            low, high = min(peaks[name]), max(peaks[name])
            gemm = f" (GEMM {low:.0f}{f'-{high:.0f}' if high > low else ''} GFLOP/s)"
        parts.append(f"{name}{gemm}: {len(started)} run{'s' * (len(started) > 1)}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", type=Path, default=LEDGER, help="the CSV file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    adding = sub.add_parser("add", help="append the figures of benchmark results JSON files")
    adding.add_argument("results", type=Path, nargs="+")
    sub.add_parser("report", help="coverage of the grid and the figures under target")
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            missing = [str(f) for f in args.results if not f.is_file()]
            if missing:
                raise ValueError(f"no such results file: {', '.join(missing)}")
            print(f"added {add(args.results, args.ledger)} row(s) to {args.ledger}")
        else:
            print(report(read(args.ledger)), flush=True)
    except BrokenPipeError:
        # the reader stopped early (`report | head`): as the Python docs advise, point stdout at
        # devnull so that the interpreter's own flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
