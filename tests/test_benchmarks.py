"""The benchmark harness (`python -m benchmarks`): its machinery, never its timings.

The smoke run exercises the whole pipeline (interleaved timing, contention accounting, ratios,
JSON, plots) on one tiny torch point in a subprocess; nothing here asserts a speed. Also: the
contention arithmetic on synthetic /proc text, the ratio rules on synthetic results, and the
tokenizer's Python fast path (which the benchmark measures) against the Rust tokenizer.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.metadata
import json
import pickle
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder run from the repository root, not installed

from benchmarks import cli, cpu, report, timing  # noqa: E402
from benchmarks import ledger as benchmarks_ledger  # noqa: E402
from benchmarks.grid import (  # noqa: E402
    REFERENCE,
    Point,
    batch_arrays,
    estimated_seconds,
    full_points,
    quick_points,
    smoke_points,
)

# ---- contention accounting on synthetic /proc numbers -----------------------------------------
PROC_STAT = """cpu  {user} 0 {system} {idle} 7 0 {softirq} {steal} 0 0
cpu0 1 0 1 1 0 0 0 0 0 0
intr 12345
"""
# comm with a space and a parenthesis, as a process may name itself
SELF_STAT = "4242 (python (x) y) R 1 4242 4242 0 -1 4194304 100 0 0 0 {utime} {stime} 9 9 20 0 3 0 100 1 1"


def test_machine_busy_counts_user_system_irq_and_steal_not_idle_or_iowait():
    text = PROC_STAT.format(user=100, system=50, idle=999, softirq=5, steal=3)
    assert cpu.machine_busy_jiffies(text) == 100 + 50 + 5 + 3


def test_own_busy_is_utime_plus_stime_even_with_odd_command_names():
    assert cpu.own_busy_jiffies(SELF_STAT.format(utime=70, stime=11)) == 81


def test_other_cpus_is_machine_minus_own_per_second():
    before = cpu.CpuSample(wall=10.0, machine_busy=1000, own_busy=400)
    after = cpu.CpuSample(wall=13.0, machine_busy=1600, own_busy=730)
    # (600 - 330) jiffies / 100 Hz / 3 s = 0.9 CPUs used by others
    assert cpu.other_cpus(before, after, clk_tck=100) == pytest.approx(0.9)
    assert cpu.is_contended(0.9, threshold=0.25)
    quiet_after = cpu.CpuSample(wall=13.0, machine_busy=1335, own_busy=730)
    assert cpu.other_cpus(before, quiet_after, clk_tck=100) == pytest.approx(0.016666, rel=1e-3)
    assert not cpu.is_contended(0.0166, threshold=0.25)


def test_other_cpus_never_negative_and_zero_for_no_time():
    before = cpu.CpuSample(1.0, 100, 100)
    assert cpu.other_cpus(before, cpu.CpuSample(2.0, 150, 160), clk_tck=100) == 0.0
    assert cpu.other_cpus(before, cpu.CpuSample(1.0, 900, 100), clk_tck=100) == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc accounting is Linux only")
def test_real_proc_files_parse():
    assert cpu.proc_available()  # on Linux the harness's contention accounting must work
    a = cpu.sample()
    sum(i * i for i in range(20000))
    b = cpu.sample()
    assert b.machine_busy >= a.machine_busy and b.own_busy >= a.own_busy


def test_contended_repetitions_are_left_out_when_quiet_ones_exist():
    series = timing.Series("x")
    series.reps = [
        timing.Rep([1.0, 1.0], 2.0, 1.5, True, None),  # slow and contended
        timing.Rep([0.1, 0.1], 0.2, 0.0, False, 3.0),
        timing.Rep([0.2, 0.2], 0.4, 0.1, False, 5.0),
    ]
    s = series.summary(min_quiet=3)
    assert s["median_s"] == pytest.approx(0.15) and s["quiet_reps"] == 2 and s["reps"] == 3
    assert s["contended"] is False and s["few_quiet_reps"] is True and s["peak_mb"] == 4.0  # median
    series.reps = series.reps[:1]
    s = series.summary(min_quiet=1)
    assert s["contended"] is True and s["median_s"] == pytest.approx(1.0)


def test_interleaving_changes_who_runs_before_whom_each_round():
    calls: list[str] = []
    runners = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    settings = timing.Settings(
        warmup_calls=2, min_rep_s=0.0, max_calls_per_rep=1, min_quiet=1, min_rounds=6, max_rounds=6,
        budget_s=60.0, threshold=1e9,
    )  # fmt: skip
    series = timing.run_interleaved(runners, settings)
    assert calls[:6] == list("aabbcc") and calls[6:9] == list("abc")  # warm-ups, then a warm round
    rounds = ["".join(calls[9 + 3 * r : 12 + 3 * r]) for r in range(6)]
    assert all(sorted(r) == list("abc") for r in rounds)
    pairs = collections.Counter(r[i : i + 2] for r in rounds for i in range(2))
    assert pairs == {pair: 2 for pair in ("ab", "ba", "ac", "ca", "bc", "cb")}  # each follows each
    assert all(len(s.reps) == 6 for s in series.values())


@pytest.mark.parametrize(("runners", "whole_cycles", "rounds"), [(4, False, 3), (4, True, 4), (3, True, 6)])
def test_rounds_end_with_a_whole_cycle_of_orders_when_asked(runners, whole_cycles, rounds):
    """Quiet repetitions suffice after 3 rounds; with `whole_cycles` the rounds go on to the end
    of the cycle of orders (4 runners: 4 orders, 3 runners: 6), so that each runner has
    followed each other one equally often."""
    names = "abcd"[:runners]
    settings = timing.Settings(
        warmup_calls=2, min_rep_s=0.0, max_calls_per_rep=1, min_quiet=1, min_rounds=3, max_rounds=12,
        budget_s=60.0, threshold=1e9, whole_cycles=whole_cycles,
    )  # fmt: skip
    series = timing.run_interleaved({name: (lambda: None) for name in names}, settings)
    assert [len(series[name].reps) for name in names] == [rounds] * runners


@pytest.mark.parametrize(("calls", "made"), [(1, 1), (3, 4)])
def test_a_repetition_of_several_calls_starts_with_an_untimed_one(calls, made):
    """The first call after another implementation's repetition runs slow; with several calls
    a repetition skips it, with one (a long call) it does not pay for a second."""
    durations = iter([0.05, 0.01, 0.01, 0.01])  # the first call made is the slow one
    made_calls: list[float] = []

    def fn() -> None:
        made_calls.append(next(durations))
        time.sleep(made_calls[-1])

    rep = timing.repetition(fn, calls, threshold=1e9)
    assert len(made_calls) == made and len(rep.times) == calls
    if calls > 1:
        assert max(rep.times) < 0.04  # the slow call was the untimed one


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_round_orders_let_every_runner_follow_every_other_equally_often(n):
    rows = timing.round_orders(n)
    assert all(sorted(row) == list(range(n)) for row in rows)
    pairs = collections.Counter((row[i], row[i + 1]) for row in rows for i in range(n - 1))
    assert len(pairs) == n * (n - 1) and len(set(pairs.values())) <= 1


def test_a_runner_that_adapts_is_settled_first_and_says_whether_it_was():
    settings = timing.Settings(
        warmup_calls=2, min_rep_s=0.0, max_calls_per_rep=1, min_quiet=1, min_rounds=1, max_rounds=1,
        budget_s=60.0, threshold=1e9,
    )  # fmt: skip

    class Adapting:
        def __init__(self, settles: bool):
            self.calls, self.settles = 0, settles

        def __call__(self) -> None:
            self.calls += 1

        def settle(self) -> bool:  # as rnncore's Keras runner: calls until its path is final
            self.calls += 5
            return self.settles

        def race(self) -> dict:  # and what it chose
            return {"path": "xla" if self.settles else None}

    for settles in (True, False):
        runner = Adapting(settles)
        series = timing.warm_up("a", runner, settings)
        assert runner.calls == 2 + 5  # warm-up, then settling
        timing.warm_round({"a": runner}, {"a": series}, settings)
        assert runner.calls == 2 + 5 + 1  # one call in the steady state, after every warm-up
        summary = series.summary(min_quiet=1)
        assert summary["settled"] is settles and summary["settle_s"] >= 0
        assert summary["race"] == {"path": "xla" if settles else None}
    plain = timing.warm_up("b", lambda: None, settings).summary(min_quiet=1)
    assert plain["settled"] is None and plain["race"] is None


@pytest.mark.parametrize(("second", "last"), [(0.02, 0.2), (0.2, 0.02)])
def test_repetitions_are_sized_by_the_faster_of_the_second_and_the_last_warm_up_call(second, last):
    """A slow last warm-up call (right after the other runners' warm-ups) must not shrink the
    repetitions to one call each, nor a slow second call: the faster of the two sizes them."""
    settings = timing.Settings(warmup_calls=2, min_rep_s=0.1, max_calls_per_rep=50)
    durations = iter([0.0, second, last])  # first (the compile), second, the warm round's

    def runner() -> None:
        time.sleep(next(durations))

    series = timing.warm_up("a", runner, settings)
    timing.warm_round({"a": runner}, {"a": series}, settings)
    assert series.second_call_s is not None and series.second_call_s >= second
    assert series.calls_per_rep >= 2  # 0.1 s / 0.02 s = 5 (fewer only if sleep overran), not 1


# ---- ratios -----------------------------------------------------------------------------------
def _impl(
    framework: str, rnncore: bool, rate: float, same_process: bool = True, fastest: float = 0.0
) -> dict:
    # 100 tokens a call: the median call takes 100 / rate seconds
    return {"framework": framework, "is_rnncore": rnncore, "same_process": same_process,
            "tokens_per_s_padded": rate, "median_s": 100 / rate, "min_s": fastest or 100 / rate,
            "contended": False}  # fmt: skip


def test_ratio_is_against_the_best_same_framework_baseline_of_the_same_process():
    impls = {
        "rnncore_torch": _impl("torch", True, 90.0, fastest=0.5),
        "torch_eager": _impl("torch", False, 100.0, fastest=0.6),
        "torch_compile": _impl("torch", False, 80.0, fastest=0.4),
        "rnncore_keras": _impl("tensorflow", True, 50.0),
        "keras_tf": _impl("tensorflow", False, 40.0),
        "keras_tf_xla": _impl("tensorflow", False, 45.0),
        "keras_torch": _impl("keras-torch", False, 1000.0, same_process=False),
    }
    found = report.ratios(impls)
    assert found["torch"]["best_baseline"] == "torch_eager"
    assert found["torch"]["ratio"] == pytest.approx(0.9) and not found["torch"]["meets_target"]
    # fastest calls: the fastest baseline call over rnncore's fastest call
    assert found["torch"]["ratio_fastest_calls"] == pytest.approx(0.4 / 0.5)
    assert found["tensorflow"]["best_baseline"] == "keras_tf_xla"
    assert found["tensorflow"]["ratio"] == pytest.approx(50 / 45) and found["tensorflow"]["meets_target"]


# ---- grid -------------------------------------------------------------------------------------
def test_quick_grid_holds_the_reference_configuration():
    assert REFERENCE in quick_points()
    assert (REFERENCE.vocab, REFERENCE.embedding, REFERENCE.hidden, REFERENCE.seq_len, REFERENCE.batch) == (
        20_000, 128, 256, 128, 64
    )  # fmt: skip
    assert (REFERENCE.cell, REFERENCE.layers, REFERENCE.bidirectional) == ("lstm", 1, False)


def test_full_grid_covers_every_axis_value():
    points = full_points()
    axes = {"cell": {"lstm", "gru", "rnn"}, "layers": {1, 2}, "bidirectional": {False, True},
            "seq_len": {32, 128, 512}, "batch": {1, 64}, "hidden": {128, 512}}  # fmt: skip
    for axis, values in axes.items():
        assert {getattr(p, axis) for p in points} >= values
    assert len({p.key for p in points}) == len(points)
    # the first architectures already cover every cell, layer count, direction and hidden size
    first = {p.arch for p in points[2:]}
    assert len(first) == 24


def test_points_globs_pick_a_subset_and_name_the_rest():
    chosen, rest = cli.select_points("full", "gru-2L-bi-T512-*, rnn-1L-uni-T32-B1-H128-*")
    keys = sorted(p.key for p in chosen)
    assert keys == sorted(
        [f"gru-2L-bi-T512-B64-H{h}-E128-V20000-{m}" for h in (128, 512) for m in ("fixed", "masked")]
        + [f"gru-2L-bi-T512-B1-H{h}-E128-V20000-fixed" for h in (128, 512)]
        + ["rnn-1L-uni-T32-B1-H128-E128-V20000-fixed"]
    )
    assert len(chosen) + len(rest) == len(full_points())
    assert not {p.key for p in chosen} & {p.key for p in rest}
    assert cli.select_points("quick", None) == (quick_points(), [])


def test_points_that_match_nothing_are_refused_before_any_work(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "--smoke", "--points", "lstm-9L-*", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "'lstm-9L-*' matches none" in done.stderr and "lstm-1L-uni-T8-B4-H16" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_modes_pick_forward_or_training_alone_and_refuse_others(tmp_path):
    pytest.importorskip("torch")
    base = [sys.executable, "-m", "benchmarks", "--smoke", "--frameworks", "torch", "--no-keras-torch",
            "--no-plots"]  # fmt: skip
    bad = subprocess.run([*base, "--modes", "forward,sideways", "--out", str(tmp_path / "bad")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2
    assert "--modes 'forward,sideways'" in bad.stderr and "forward, train" in bad.stderr
    assert not (tmp_path / "bad").exists()
    done = subprocess.run([*base, "--modes", "forward", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    assert [e["mode"] for e in results["grid"]] == ["forward"]


def test_memory_maps_used_reads_this_process_against_the_kernel_limit():
    used = cpu.memory_maps_used()
    if not Path("/proc/sys/vm/max_map_count").exists():
        assert used is None
    else:
        assert used is not None and 0 < used < 1


def test_points_stop_starting_before_xla_code_fills_the_memory_maps(monkeypatch):
    # LLVM aborts the process at the limit; the grid stops starting points before it, names why,
    # and the run's JSON stays whole
    monkeypatch.setattr(cpu, "memory_maps_used", lambda: cli.MAX_MAPS_USED + 0.01)
    args = cli.parse(["--smoke"])
    points = smoke_points()
    entries, skipped, ran = cli.run_grid(args, cli.SETTINGS["smoke"], ["torch"], None, float("inf"),
                                         ["forward"], (points, []))  # fmt: skip
    assert entries == [] and ran == []
    assert [s["point"] for s in skipped] == [p.key for p in points]
    reason = skipped[0]["reason"]
    assert "memory-map limit (vm.max_map_count)" in reason and "--points" in reason
    results = {"contention": {"contended_repetitions": 0, "repetitions": 0, "threshold_cpus": 0.25,
                              "contended_fraction": 0.0}, "quiet_check": {"quiet": True}, "threads": {},
               "skipped": skipped}  # fmt: skip
    assert f"{len(points)} point(s) not started: the process holds 81%" in cli.legend(results)


def test_step_estimate_counts_batch_one_as_matrix_vector_work():
    # A 2-layer BiGRU of hidden 512 over 512 steps at batch 1 took minutes a point (5 s a Keras
    # step); by FLOPs at batch 64's rate it looked like 0.3 s. Batch 64 keeps the plain estimate.
    heavy_b1 = Point("gru", 2, True, 512, 1, 512)
    b64 = Point("gru", 2, True, 32, 64, 512)
    assert estimated_seconds(heavy_b1, "train", 100.0) > 4.0 > estimated_seconds(b64, "train", 100.0)
    assert estimated_seconds(b64, "train", 100.0) == pytest.approx(b64.flops("train", 64 * 32) / 100e9)
    one_row = heavy_b1.flops("train", 512) / 100e9
    assert estimated_seconds(heavy_b1, "train", 100.0) == pytest.approx(64 * one_row)


def test_masked_batches_are_padded_with_zero_after_each_length():
    arrays = batch_arrays(Point("gru", 1, False, 16, 8, 4, masked=True, vocab=50))
    ids, lengths = arrays["ids"], arrays["lengths"]
    assert lengths.max() == 16 and lengths.min() >= 2
    steps = np.arange(16)[None, :]
    assert (ids[steps >= lengths[:, None]] == 0).all() and (ids[steps < lengths[:, None]] >= 2).all()


# ---- the ledger -------------------------------------------------------------------------------
def _run_results(started: str, figures: dict[tuple[str, str], float], cv: float = 0.02) -> dict:
    """A results file as the harness writes it: per (point, mode), rnncore's torch model at
    `ratio` times hand-written torch's throughput, each side's repetitions spread by `cv`."""
    entries = []
    for (key, mode), ratio in figures.items():
        impls = {
            "rnncore_torch": _impl("torch", True, 100.0 * ratio),
            "torch_eager": _impl("torch", False, 100.0),
        }
        for r in impls.values():
            r.update(rep_cv=cv, quiet_reps=4)
        entries.append({"point": {"key": key}, "mode": mode, "impls": impls, "ratios": report.ratios(impls)})
    machine = {"machine": {"cpu": "Test CPU"}, "gemm": {"peak_gflops": 150.4}} if started > "2026-02" else {}
    return {"started": started, "commit": "abc123", "grid": entries, **machine}


def _write(path: Path, results: dict) -> Path:
    path.write_text(json.dumps(results))
    return path


def test_ledger_keeps_each_figure_once_and_reports_where_each_point_stands(tmp_path):
    keys = [p.key for p in full_points()]
    ledger = tmp_path / "ledger.csv"
    partial = _write(tmp_path / "a1.json", _run_results("2026-01-01T00:00:00", {(keys[0], "train"): 0.90}))
    whole = _write(tmp_path / "a2.json", _run_results("2026-01-01T00:00:00", {
        (keys[0], "train"): 0.90, (keys[1], "train"): 0.96, (keys[1], "forward"): 1.02}))  # fmt: skip
    assert benchmarks_ledger.add([partial], ledger) == 1
    assert benchmarks_ledger.add([whole, partial], ledger) == 2  # the same run's figure is not added twice
    rows = benchmarks_ledger.read(ledger)
    assert [(r["point"], r["mode"], float(r["ratio"])) for r in rows] == [
        (keys[0], "train", 0.90), (keys[1], "train", 0.96), (keys[1], "forward", 1.02)]  # fmt: skip
    assert rows[1]["baseline"] == "torch_eager" and rows[1]["commit"] == "abc123"
    assert rows[1]["cpu"] == "" and rows[1]["gemm_gflops"] == ""  # the run recorded no machine

    text = benchmarks_ledger.report(rows, changes=())  # dated 2026-01-01: before every real change
    n = len(keys)
    assert (
        f"torch      train     2 of {n} points timed; median 0.930, 0 at or above target, 1 under it " in text
    )
    assert f"torch      forward   1 of {n} points timed; median 1.020, 1 at or above target" in text
    assert f"tensorflow train     0 of {n}" in text
    # 0.96 with standard error 0.96 * sqrt(2 * 0.02^2 / 4) = 0.0136 is within two of 0.97; 0.90 is not
    assert f"{keys[0]}  0.90 ± 0.01 (beyond 2 s.e.; 1 run)" in text
    assert f"{keys[1]}  0.96 ± 0.01 (within 2 s.e.; 1 run)" in text


def test_a_rerun_is_averaged_with_the_first_run_not_put_in_its_place():
    """Rerunning only the misses and keeping the last figure would let a slow point pass by luck."""
    key = full_points()[0].key
    first = benchmarks_ledger.rows_of(_run_results("2026-01-01T00:00:00", {(key, "train"): 0.90}, cv=0.02))
    rerun = benchmarks_ledger.rows_of(_run_results("2026-02-01T00:00:00", {(key, "train"): 1.00}, cv=0.04))
    figure = benchmarks_ledger.combined(first + rerun)[(key, "train", "torch")]
    # each run's standard error: ratio * cv * sqrt(2 / 4 repetitions); weights 1 / s.e.^2
    s1, s2 = 0.90 * 0.02 * np.sqrt(0.5), 1.00 * 0.04 * np.sqrt(0.5)
    w1, w2 = 1 / s1**2, 1 / s2**2
    assert figure.ratio == pytest.approx((0.90 * w1 + 1.00 * w2) / (w1 + w2), abs=5e-4)  # 0.92, under 0.97
    # the two runs disagree by 5 of their errors: the combined error grows by the scatter
    mean = (0.90 * w1 + 1.00 * w2) / (w1 + w2)
    birge = np.sqrt(w1 * (0.90 - mean) ** 2 + w2 * (1.00 - mean) ** 2)  # chi^2 over 1 degree of freedom
    assert birge > 1 and figure.noise == pytest.approx(birge * (w1 + w2) ** -0.5, rel=0.02)
    assert figure.runs == 2
    # beside it, every run alike: the baseline's mean call time over rnncore's (100 tokens a call)
    assert figure.mean_times_ratio == pytest.approx((1.0 + 1.0) / (1 / 0.90 + 1 / 1.00), rel=1e-4)
    text = benchmarks_ledger.report(first + rerun)
    assert "machines: not recorded: 1 run; Test CPU (GEMM 150 GFLOP/s): 1 run" in text
    assert f"{key}  0.92 ± 0.04 (within 2 s.e.; 2 runs); the runs' mean call times: 0.947" in text
    agreeing = benchmarks_ledger.rows_of(
        _run_results("2026-02-01T00:00:00", {(key, "train"): 0.905}, cv=0.02)
    )
    assert benchmarks_ledger.combined(first + agreeing)[(key, "train", "torch")].noise == pytest.approx(
        (2 * w1) ** -0.5, rel=0.02
    )  # runs that agree within their errors: no scaling
    # a run whose repetitions happened to agree exactly does not outweigh the rest without limit
    exact = benchmarks_ledger.rows_of(_run_results("2026-03-01T00:00:00", {(key, "train"): 1.00}, cv=0.0))
    assert exact[0]["noise"] == "0.0000"
    w_floor = 1 / benchmarks_ledger.MIN_NOISE**2
    assert benchmarks_ledger.combined(first + exact)[(key, "train", "torch")].ratio == pytest.approx(
        (0.90 * w1 + 1.00 * w_floor) / (w1 + w_floor),
        abs=5e-4,  # the ledger keeps 4 decimals
    )


def test_runs_from_before_a_change_of_the_code_they_measured_are_set_aside():
    keys = [p.key for p in full_points()]
    before = benchmarks_ledger.rows_of(_run_results("2026-01-01T00:00:00+00:00", {
        (keys[0], "train"): 0.70, (keys[1], "train"): 0.80, (keys[0], "forward"): 0.90}))  # fmt: skip
    after = benchmarks_ledger.rows_of(_run_results("2026-01-02T00:00:00", {(keys[0], "train"): 1.00}))
    assert keys[0].endswith("-fixed") and keys[1].endswith("-masked")
    change = benchmarks_ledger.CodeChange(
        "2026-01-01T12:00:00+00:00", "abc123", "*-fixed", ("train",), "torch", "a faster path"
    )
    assert change.supersedes(before[0]) and not change.supersedes(after[0])
    kept = benchmarks_ledger.current(before + after, (change,))
    # keys[0] train: only the run since the change; its forward and keys[1] keep their runs
    assert [(r["point"], r["mode"], r["ratio"]) for r in kept] == [
        (keys[1], "train", "0.8000"),
        (keys[0], "forward", "0.9000"),
        (keys[0], "train", "1.0000"),
    ]
    text = benchmarks_ledger.report(before + after, (change,))
    assert "1 row(s) set aside: runs from before a change of the code they measured" in text
    assert f"{keys[0]}  0.70" not in text and f"{keys[1]}  0.80" in text
    # a figure whose every run came before the change is untimed until it is rerun
    assert "torch      train     2 of" in benchmarks_ledger.report(before + after, ())
    assert "torch      train     1 of" in benchmarks_ledger.report(before, (change,))
    # a change names its points as --points does: comma-separated globs
    both = dataclasses.replace(change, points=f"{keys[0]},*-masked")
    assert [both.supersedes(row) for row in before] == [True, True, False]


def test_ledger_refuses_bad_files_and_leaves_the_ledger_as_it_was(tmp_path, capsys):
    ledger = tmp_path / "ledger.csv"
    key = full_points()[0].key
    good = _write(tmp_path / "good.json", _run_results("2026-01-01T00:00:00", {(key, "forward"): 1.0}))
    assert benchmarks_ledger.main(["--ledger", str(ledger), "add", str(good)]) == 0
    before = ledger.read_bytes()
    not_results = _write(tmp_path / "other.json", {"hello": 1})
    assert benchmarks_ledger.main(["--ledger", str(ledger), "add", str(not_results)]) == 2
    assert "other.json is not a benchmark results file" in capsys.readouterr().err
    assert benchmarks_ledger.main(["--ledger", str(ledger), "add", str(tmp_path / "missing.json")]) == 2
    assert "no such results file" in capsys.readouterr().err
    assert ledger.read_bytes() == before
    tuned = _run_results("2026-01-02T00:00:00", {(key, "forward"): 1.0})
    tuned["allocator"] = {"MALLOC_MMAP_THRESHOLD_": "268435456"}
    tuned_file = _write(tmp_path / "tuned.json", tuned)
    assert benchmarks_ledger.main(["--ledger", str(ledger), "add", str(tuned_file)]) == 2
    assert "measured with allocator settings" in capsys.readouterr().err
    assert ledger.read_bytes() == before
    (tmp_path / "odd.csv").write_text("point,ratio\nx,1\n")
    assert benchmarks_ledger.main(["--ledger", str(tmp_path / "odd.csv"), "report"]) == 2
    assert "expected ['started'" in capsys.readouterr().err


def test_the_committed_ledger_reads_and_reports():
    rows = benchmarks_ledger.read()
    assert rows, "benchmarks/ledger.csv holds the sittings' figures"
    keys = {p.key for p in full_points()}
    assert {r["point"] for r in rows} <= keys | {p.key for p in quick_points()}
    assert "points timed" in benchmarks_ledger.report(rows)


def test_the_report_stops_quietly_when_its_reader_does():
    """`python -m benchmarks.ledger report | head`: exit 1, no BrokenPipeError traceback."""
    cmd = [sys.executable, "-m", "benchmarks.ledger", "report"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has started: the report's write finds no reader
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


# ---- length bucketing (a shared part: never in the smoke run) ----------------------------------
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_bucketing_times_bucketed_batches_against_the_naive_padded_loop_and_the_unbucketed_one(backend):
    pytest.importorskip(backend)
    from benchmarks import shared

    found = shared.bucketing(cli.SETTINGS["smoke"], 160, (backend,))
    assert found["rows"] == 160 and found["valid_tokens"] < found["rows"] * found["max_length"]
    assert found["padding_fraction_bucketed"] < found["padding_fraction_naive"]
    for mode in ("forward", "train"):
        figures = found[f"{backend}/{mode}"]
        if backend == "tensorflow":  # Keras plans settle first (here for 0 s) and say how far they got
            race = figures["bucketed"]["race"]
            assert race["batches"] == 3 and 0 <= race["final"] <= race["past_compiles"] <= 3, race
            assert isinstance(figures["bucketed"]["settled"], bool)
        rates = {plan: figures[plan]["valid_tokens_per_s"] for plan in ("bucketed", "padded", "unbucketed")}
        assert all(rate > 0 for rate in rates.values()), rates
        # the target's figure is against the padded loop; the other one is reported beside it
        assert figures["speedup"] == pytest.approx(rates["bucketed"] / rates["padded"])
        assert figures["speedup_vs_unbucketed"] == pytest.approx(rates["bucketed"] / rates["unbucketed"])
    line = cli.legend({"contention": {"contended_repetitions": 0, "repetitions": 1, "threshold_cpus": 0.5,
                                      "contended_fraction": 0.0}, "quiet_check": {"quiet": True},
                       "threads": {}, "shared": {"bucketing": found}}).splitlines()[-1]  # fmt: skip
    assert line.startswith(f"bucketing {backend}/train: ") and "vs a naive padded loop" in line


# ---- the whole harness, smoke mode ------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "benchmarks", "--smoke", "--frameworks", "torch", "--no-keras-torch",
           "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "smoke.json").read_text())
    results["_stdout"] = done.stdout
    results["_out"] = str(out)
    return results


def test_keras_smoke_times_rnncore_against_both_hand_written_keras_steps_and_names_its_path(tmp_path):
    # The Keras side of the harness end to end: rnncore's model settled on the path its race
    # kept (recorded with each path's trials), against keras_tf and keras_tf_xla
    pytest.importorskip("tensorflow")
    cmd = [sys.executable, "-m", "benchmarks", "--smoke", "--frameworks", "tensorflow", "--no-keras-torch",
           "--no-plots", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    grid = json.loads((tmp_path / "smoke.json").read_text())["grid"]
    assert [e["mode"] for e in grid] == ["forward", "train"]
    for e in grid:
        ours = e["impls"]["rnncore_keras"]
        assert ours["settled"] is True and ours["median_s"] > 0
        trials = ours["race"]["trials_q25_ms"]  # the kept path had the fastest lower quartile
        assert len(trials) >= 2 and trials[ours["race"]["path"]] == min(trials.values()), ours["race"]
        assert {"keras_tf", "keras_tf_xla"} <= set(e["impls"])
        assert e["ratios"]["tensorflow"]["best_baseline"] in ("keras_tf", "keras_tf_xla")


def test_smoke_json_names_machine_threads_and_versions(smoke):
    assert smoke["schema"] == "rnncore.benchmarks/1" and smoke["mode"] == "smoke"
    assert smoke["machine"]["logical_cpus"] >= 1
    assert smoke["threads"]["torch_intra_op"] == smoke["threads"]["requested_intra_op"]
    assert smoke["versions"]["torch"] != "not installed" and "numpy" in smoke["versions"]
    assert smoke["gemm"]["peak_gflops"] > 0
    assert {"repetitions", "contended_repetitions", "threshold_cpus"} <= set(smoke["contention"])
    assert smoke["complete"] is True  # rewritten at the end over the file written after each point


def test_versions_are_read_without_importing_the_frameworks():
    """A torch-only run must not carry TensorFlow's runtime just to name its version."""
    code = (
        "import json, sys; from benchmarks import cpu; "
        "v = cpu.versions(['tensorflow', 'keras', 'numpy', 'no_such_module_here']); "
        "print(json.dumps([v, 'tensorflow' in sys.modules, 'keras' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    found, tensorflow_imported, keras_imported = json.loads(out.stdout)
    assert not tensorflow_imported and not keras_imported
    assert found["tensorflow"] == importlib.metadata.version("tensorflow")
    assert found["numpy"] == np.__version__ and found["no_such_module_here"] == "not installed"


def test_smoke_json_names_the_commit_it_measured(smoke):
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    if head.returncode != 0:
        assert smoke["commit"] is None  # not a git checkout (an sdist)
    else:
        assert smoke["commit"] in (head.stdout.strip(), head.stdout.strip() + "+dirty")


def test_smoke_records_the_device_of_each_side(smoke):
    assert smoke["device"] == {"torch": "cpu", "tensorflow": "cpu"}


def test_a_device_torch_cannot_see_is_refused_before_any_work(tmp_path):
    pytest.importorskip("torch")
    cmd = [sys.executable, "-m", "benchmarks", "--smoke", "--frameworks", "torch", "--no-keras-torch",
           "--device", "cuda:99", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "device cuda:99" in done.stderr and "--device cpu" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_smoke_grid_entries_hold_every_figure(smoke):
    assert [e["mode"] for e in smoke["grid"]] == ["forward", "train"]
    for e in smoke["grid"]:
        api = {"rnncore_torch_api"} if e["mode"] == "forward" else set()
        assert set(e["impls"]) == {"rnncore_torch", "torch_eager", *api}
        for r in e["impls"].values():
            assert r["error"] is None
            assert r["reps"] == 2 and len(r["rep_other_cpus"]) == 2
            for key in ("median_s", "p50_s", "p99_s", "first_call_s", "tokens_per_s_padded",
                        "tokens_per_s_valid", "gflops", "fraction_of_peak", "calls_per_rep"):  # fmt: skip
                assert r[key] is not None and r[key] > 0, key


def test_smoke_ratios_come_from_the_figures_of_the_same_run(smoke):
    for e in smoke["grid"]:
        impls = e["impls"]
        ratio = e["ratios"]["torch"]
        assert ratio["best_baseline"] == "torch_eager"
        expected = impls["rnncore_torch"]["tokens_per_s_padded"] / impls["torch_eager"]["tokens_per_s_padded"]
        assert ratio["ratio"] == pytest.approx(expected)
        # and the throughput is the batch's tokens over the median time of that same run
        assert impls["torch_eager"]["tokens_per_s_padded"] == pytest.approx(
            e["tokens_padded"] / impls["torch_eager"]["median_s"]
        )
        assert ratio["contended"] == bool(
            impls["rnncore_torch"]["contended"] or impls["torch_eager"]["contended"]
        )


def test_smoke_prints_a_table_and_writes_plots(smoke):
    assert "torch ratio" in smoke["_stdout"] and "contention:" in smoke["_stdout"]
    folder = Path(smoke["_out"]) / "smoke"
    for name in ("throughput.png", "scaling.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the tokenizer fast path the benchmark measures ------------------------------------------
@pytest.mark.parametrize("kind", ["word", "wordpiece"])
@pytest.mark.parametrize("lowercase", [True, False])
def test_tokenizer_fast_path_gives_the_rust_tokenizers_ids(kind, lowercase):
    pytest.importorskip("transformers")
    from rnncore.tokenize import _FAST_CANDIDATES, Tokenizer, _FastWords

    texts = (ROOT / "tests" / "data" / "tokenize_sample.txt").read_text(encoding="utf-8").splitlines()
    tok = Tokenizer.train(texts, kind=kind, vocab_size=300, lowercase=lowercase)
    fast = _FastWords.for_tokenizer(tok._rust)
    assert fast is not None
    rng = random.Random(0)
    # table characters, plus ones the table leaves to Rust (controls, combining marks, CJK, ...)
    alphabet = _FAST_CANDIDATES + "\x00\x0b\x7f\x85\u00ad\u0301\u4e00\u0130\u03a3\ufffd\u3000 aeiouAEIOU"
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    fast_count = 0
    for text in texts + [t.upper() for t in texts] + fuzz + ["Crème brûlée — “quoted”…", "\t\n", ""]:
        got = fast.encode(text)
        if got is not None:
            fast_count += 1
            assert got == tok._rust.encode(text, add_special_tokens=False).ids, repr(text)
    assert fast_count > len(texts) * 2  # most texts take the fast path
    ids, lengths = tok.encode_batch(texts + fuzz[:50], on_empty="unk")
    rust_rows = [e.ids for e in tok._rust.encode_batch(texts + fuzz[:50], add_special_tokens=False)]
    for row, length, want in zip(ids, lengths, rust_rows, strict=True):
        assert row[:length].tolist() == (want or [tok.unk_id])
    again = pickle.loads(pickle.dumps(tok))  # the fast path's state travels with the tokenizer
    np.testing.assert_array_equal(again.encode_batch(texts)[0], tok.encode_batch(texts)[0])


def test_tokenizer_fast_path_is_off_for_byte_level_bpe_and_non_special_added_tokens():
    pytest.importorskip("transformers")
    from rnncore.tokenize import Tokenizer, _FastWords

    texts = (ROOT / "tests" / "data" / "tokenize_sample.txt").read_text(encoding="utf-8").splitlines()
    assert _FastWords.for_tokenizer(Tokenizer.train(texts, kind="bpe", vocab_size=400)._rust) is None
    word = Tokenizer.train(texts, kind="word", vocab_size=300)
    word.hf.add_tokens(["film noir"])  # a non-special added token is matched before normalization
    rewrapped = Tokenizer(word.hf, kind="word")
    assert _FastWords.for_tokenizer(rewrapped._rust) is None
    ids, lengths = rewrapped.encode_batch(["a film noir classic"])
    assert (
        ids[0, : lengths[0]].tolist()
        == rewrapped._rust.encode("a film noir classic", add_special_tokens=False).ids
    )
