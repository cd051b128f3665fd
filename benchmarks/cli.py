"""`python -m benchmarks`: run the grid and the shared parts, print the table, write JSON and plots."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import fnmatch
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import cpu, grid, report
from .timing import Settings

SCHEMA = "rnncore.benchmarks/1"
QUIET_WARNING = (
    "WARNING: the machine is not quiet (other processes used {other:.2f} CPUs of {cpus}); "
    "timings will be slower and noisier than on an idle machine, and contended repetitions are "
    "dropped or flagged"
)
SETTINGS = {
    "smoke": Settings(warmup_calls=2, min_rep_s=0.05, max_calls_per_rep=1000, min_quiet=1, min_rounds=2,
                      max_rounds=2, budget_s=5.0),
    "quick": Settings(warmup_calls=2, min_rep_s=0.1, max_calls_per_rep=1000, min_quiet=3, min_rounds=3,
                      max_rounds=8, budget_s=6.0),
    "full": Settings(warmup_calls=3, min_rep_s=0.15, max_calls_per_rep=1000, min_quiet=3, min_rounds=3,
                     max_rounds=8, budget_s=6.0, whole_cycles=True),
}  # fmt: skip
# Time budget of the whole run (seconds) and what to keep back for the parts after the grid
# (in full mode ~5 min: the Keras length-bucketing plans settle for ~3 before they are timed).
BUDGET = {"smoke": 600.0, "quick": 900.0, "full": 1740.0}
RESERVE = {"smoke": 0.0, "quick": 0.0, "full": 360.0}
# Points stop starting once the process holds this share of its memory-map limit: XLA's
# compiled code is never unmapped, and a point adds ~650 maps (`cpu.memory_maps_used`), so the
# rest leaves room for the point under way and its neighbours.
MAX_MAPS_USED = 0.8
MAPS_FULL = (
    "the process holds {used:.0%} of its memory-map limit (vm.max_map_count), which XLA's compiled "
    "code fills until the process ends: time the rest in another sitting with --points"
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick", help="(default) ~3 min")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="the grid, < 30 min")
    size.add_argument(
        "--smoke", dest="mode", action="store_const", const="smoke", help="1 tiny point (tests)"
    )
    p.set_defaults(mode="quick")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for JSON and PNGs")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads, both stacks")
    p.add_argument("--inter-op-threads", type=int, default=None, help="inter-op threads (default --threads)")
    p.add_argument("--frameworks", default="torch,tensorflow", help="comma list: torch, tensorflow")
    p.add_argument("--modes", default=",".join(grid.MODES), help="comma list: forward, train")
    p.add_argument("--no-keras-torch", action="store_true", help="skip the Keras-on-torch subprocess")
    p.add_argument("--no-xla", action="store_true", help="skip the XLA Keras baseline")
    p.add_argument("--device", default="cpu",
                   help="torch side: cpu (default), auto, cuda or cuda:N (Keras stays on CPU); "
                   "benchmarks/gpu_check.sh times the GPU reference configuration")  # fmt: skip
    p.add_argument(
        "--torch-compile", action="store_true", help="add a torch.compile baseline (slow to build)"
    )
    p.add_argument("--no-shared", action="store_true", help="skip tokenizer/metrics/porting/bucketing")
    p.add_argument("--no-imports", action="store_true", help="skip the import-time subprocess")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--budget-s", type=float, default=None, help="time budget of the whole run")
    p.add_argument("--contention-threshold", type=float, default=0.25,
                   help="CPUs used by other processes above which a repetition is contended")  # fmt: skip
    p.add_argument("--max-step-s", type=float, default=4.0,
                   help="full grid: skip points whose estimated training step takes longer")  # fmt: skip
    p.add_argument("--points", default=None, metavar="GLOBS",
                   help="only the mode's points whose key matches one of these comma-separated "
                        "globs, e.g. 'gru-2L-*-T512-*' (keys look like lstm-1L-uni-T32-B1-H128-"
                        "E128-V20000-fixed)")  # fmt: skip
    return p.parse_args(argv)


def setup_threads(threads: int, inter_op: int, frameworks: list[str]) -> dict[str, Any]:
    """The same intra/inter-op thread counts on both stacks, and the same float mode (see
    `flush_denormals`); torch is imported first."""
    found: dict[str, Any] = {"requested_intra_op": threads, "requested_inter_op": inter_op}
    if "torch" in frameworks or "tensorflow" in frameworks:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(inter_op)
        found["torch_intra_op"] = torch.get_num_threads()
        found["torch_inter_op"] = torch.get_num_interop_threads()
        found["torch_flush_denormal"] = flush_denormals()
    if "tensorflow" in frameworks:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        found["tf_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        found["tf_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    return found


def flush_denormals() -> bool:
    """Flush denormal floats to zero on torch's CPU threads, as TensorFlow does on its own.

    A training loop over one repeated batch (every grid point's) drives RNN gradients into the
    denormal range after some dozens of steps, where x86 arithmetic is many times slower: an
    RNN 2L training step went from 61 to 113 ms over 48 steps while the hand-written one,
    from another start, stayed at 67-93 ms; flushed, both stayed at 62-78 ms. Which model gets
    there first depends on its initial weights, so unflushed it is noise, not speed; and
    TensorFlow flushes by default, so this is also the same float mode on both stacks.
    Returns whether the CPU supports it.
    """
    import torch

    return bool(torch.set_flush_denormal(True))


def gemm(frameworks: list[str], seconds: float, device: str = "cpu") -> dict[str, Any]:
    """This machine's float32 GEMM peak: the best of torch.mm and numpy matmul on 1024x1024
    (on a GPU, torch.mm on it at 4096x4096)."""
    import numpy as np

    size = 1024
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    a @ a
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    found: dict[str, Any] = {"size": size, "numpy_gflops": 2.0 * size**3 / best / 1e9}
    if device != "cpu":
        from .impl_torch import gemm_gflops

        # the GPU's peak, for the torch side's fraction of it (numpy's is the host's)
        gpu = gemm_gflops(4096, seconds, device)
        return {"size": 4096, "device": device, "torch_gflops": gpu, "peak_gflops": gpu}
    if "torch" in frameworks or "tensorflow" in frameworks:
        from .impl_torch import gemm_gflops

        found["torch_gflops"] = gemm_gflops(size, seconds)
    found["peak_gflops"] = max(v for k, v in found.items() if k.endswith("_gflops"))
    return found


def _torch_device(requested: str) -> str:
    """`--device` resolved on torch (`rnncore.device`): cpu or cuda:N; DeviceError if not there."""
    from rnncore_torch import gpu_count

    from rnncore.device import resolve_device

    return str(resolve_device(requested, gpu_count(), "torch"))


def select_points(mode: str, globs: str | None = None) -> tuple[list[grid.Point], list[grid.Point]]:
    """The mode's points, split into those matching `--points` (all when None) and the rest."""
    points = {"smoke": grid.smoke_points, "quick": grid.quick_points, "full": grid.full_points}[mode]()
    if globs is None:
        return points, []
    patterns = [g.strip() for g in globs.split(",") if g.strip()]
    chosen = [p for p in points if any(fnmatch.fnmatchcase(p.key, g) for g in patterns)]
    return chosen, [p for p in points if p not in chosen]


def keras_torch_points(mode: str, ran: list[grid.Point]) -> list[grid.Point]:
    """Where the (slow) Keras-on-torch anchor runs: the reference; in full mode also its masked
    twin and a few cheap unidirectional 1-layer points of length 128."""
    if mode == "smoke":
        return ran[:1]
    if mode == "quick":
        return [p for p in ran if p == grid.REFERENCE]
    chosen = [p for p in ran if p.tag == "reference"]
    chosen += [
        p for p in ran if p.layers == 1 and not p.bidirectional and p.seq_len == 128 and p.hidden == 128
    ]
    return list({p.key: p for p in chosen}.values())[:8]


def run_grid(
    args: argparse.Namespace,
    settings: Settings,
    frameworks: list[str],
    peak: float | None,
    deadline: float,
    modes: list[str],
    selected: tuple[list[grid.Point], list[grid.Point]],
    after_point: Callable[[list[dict[str, Any]], list[dict[str, Any]]], None] = lambda entries, skipped: None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[grid.Point]]:
    """Time the `selected` points (chosen, left out by `--points`) until `deadline`; `after_point`
    gets the entries and skips so far after every point timed."""
    from .timing import Impl, run_interleaved

    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    ran: list[grid.Point] = []
    current: tuple[Any, ...] | None = None
    impls: list[Impl] = []
    # a deliberately optimistic rate for the step-time estimate: half the GEMM peak (at batch 64)
    rate = (peak or 50.0) * 0.5
    chosen, left_out = selected
    skipped += [{"point": p.key, "reason": "not matched by --points"} for p in left_out]
    for point in chosen:
        estimate = grid.estimated_seconds(point, "train", rate)
        if args.mode == "full" and estimate > args.max_step_s:
            skipped.append(
                {"point": point.key, "reason": f"estimated training step {estimate:.1f} s > --max-step-s"}
            )
            continue
        if time.perf_counter() > deadline:
            skipped.append({"point": point.key, "reason": "time budget spent"})
            continue
        maps = cpu.memory_maps_used()
        if maps is not None and maps > MAX_MAPS_USED:
            skipped.append({"point": point.key, "reason": MAPS_FULL.format(used=maps)})
            continue
        if point.arch != current:
            impls = []
            release_keras_state()
            if "torch" in frameworks:
                from . import impl_torch

                impls += impl_torch.impls(point, compiled=args.torch_compile, device=args.device)
            if "tensorflow" in frameworks:
                from . import impl_tf

                impls += impl_tf.impls(point, xla=not args.no_xla)
            current = point.arch
        arrays = grid.batch_arrays(point)
        for mode in modes:
            found = {impl.name: impl.runner(mode, arrays, point) for impl in impls}
            runners = {name: fn for name, fn in found.items() if fn is not None}
            series = run_interleaved(runners, settings)
            timed = [impl for impl in impls if impl.name in runners]
            e = report.entry(point, mode, arrays, timed, series, settings.min_quiet, peak)
            entries.append(e)
            _progress(e)
        ran.append(point)
        after_point(entries, skipped)
    return entries, skipped, ran


def release_keras_state() -> None:
    """Drop the models of the architecture before: Keras on TensorFlow keeps graphs and names
    across builds (62 points of 19 architectures, run with `--points`, grew to 7.6 GB without
    this; a whole-grid run would keep growing)."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=True)
    gc.collect()


def _progress(e: dict[str, Any]) -> None:
    parts = []
    for name, r in e["impls"].items():
        flag = "*" if r.get("contended") else ""
        parts.append(
            f"{name} {report._k(r.get('tokens_per_s_padded'))}{flag}"
            if not r.get("error")
            else f"{name} error"
        )
    print(f"  {report.short_key(e['point'])} {e['mode']}: " + ", ".join(parts), flush=True)


def run_keras_torch(
    points: list[grid.Point],
    settings: Settings,
    threads: int,
    inter_op: int,
    peak: float | None,
    modes: list[str],
) -> dict[str, Any]:
    job = {
        "points": [p.as_dict() for p in points],
        "modes": modes,
        "threads": threads,
        "inter_op_threads": inter_op,
        "settings": dataclasses.asdict(settings),
    }
    with tempfile.TemporaryDirectory() as tmp:
        job_path, out_path = Path(tmp, "job.json"), Path(tmp, "out.json")
        job_path.write_text(json.dumps(job), encoding="utf-8")
        env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.keras_torch", str(job_path), str(out_path)],
            capture_output=True, text=True, env=env, cwd=repo, timeout=900,
        )  # fmt: skip
        if done.returncode != 0 or not out_path.is_file():
            return {"error": (done.stderr or done.stdout)[-2000:], "returncode": done.returncode}
        found: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    found["wall_s"] = time.perf_counter() - start
    found["peak_gflops"] = peak
    return found


def contention_summary(results: dict[str, Any], threshold: float) -> dict[str, Any]:
    reps = contended = 0

    def walk(value: Any) -> None:
        nonlocal reps, contended
        if isinstance(value, dict):
            if "rep_other_cpus" in value:
                reps += len(value["rep_other_cpus"])
                contended += sum(1 for o in value["rep_other_cpus"] if o > threshold)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(results)
    return {
        "repetitions": reps,
        "contended_repetitions": contended,
        "contended_fraction": contended / reps if reps else 0.0,
        "threshold_cpus": threshold,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    budget = args.budget_s if args.budget_s is not None else BUDGET[args.mode]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(grid.MODES):
        print(f"error: --modes {args.modes!r}: use a comma list of {', '.join(grid.MODES)}", file=sys.stderr)
        return 2
    inter_op = args.inter_op_threads or args.threads
    settings = dataclasses.replace(SETTINGS[args.mode], threshold=args.contention_threshold)
    selected = select_points(args.mode, args.points)
    if not selected[0]:
        example = select_points(args.mode)[0][0].key
        print(
            f"error: --points {args.points!r} matches none of the {args.mode} mode's points; keys look "
            f"like {example} (use --full for the whole grid's keys)",
            file=sys.stderr,
        )
        return 2
    from rnncore.device import DeviceError

    try:
        args.device = _torch_device(args.device)
    except DeviceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"rnncore benchmarks, {args.mode} mode, {args.threads} intra-op / {inter_op} inter-op threads",
        flush=True,
    )

    quiet = cpu.quiet_check(0.5 if args.mode == "smoke" else 1.0)
    cpus = os.cpu_count() or 1
    if quiet > args.contention_threshold:
        print(QUIET_WARNING.format(other=quiet, cpus=cpus), flush=True)
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "mode": args.mode,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": cpu.git_commit(),
        "complete": False,  # true once the run ended; the file is rewritten after every point before that
        "machine": cpu.machine_info(),
        "quiet_check": {"other_cpus": quiet, "quiet": quiet <= args.contention_threshold},
        "settings": dataclasses.asdict(settings),
        "memory_method": cpu.memory_method(),
        "contention_method": (
            "per repetition: (machine busy jiffies from /proc/stat - this process's utime+stime from "
            "/proc/self/stat) / CLK_TCK / wall seconds = CPUs used by other processes; a repetition above "
            "threshold_cpus is contended and left out of the statistics when quiet ones exist"
        ),
        "flops_method": "2*G*H*(I+H) per layer, direction and valid token (G gates); training = 3x forward",
        "phases_s": {},
    }
    lap = [time.perf_counter()]

    def phase_done(name: str) -> None:
        now = time.perf_counter()
        results["phases_s"][name] = now - lap[0]
        lap[0] = now

    if not args.no_imports and args.mode != "smoke":
        from . import shared

        print("import times ...", flush=True)
        results["imports"] = shared.import_times(frameworks)
        phase_done("imports")
    results["threads"] = setup_threads(args.threads, inter_op, frameworks)
    results["device"] = {"torch": args.device, "tensorflow": "cpu"}
    results["gemm"] = gemm(frameworks, {"smoke": 0.3, "quick": 0.5}.get(args.mode, 1.0), args.device)
    peak = results["gemm"]["peak_gflops"]
    print(f"float32 GEMM peak {peak:.1f} GFLOP/s", flush=True)
    results["versions"] = cpu.versions(["numpy", "torch", "tensorflow", "keras", "rnncore", "tokenizers"])
    results["allocator"] = cpu.allocator_settings()
    phase_done("setup_and_gemm")

    print("grid ...", flush=True)
    deadline = started + budget - RESERVE[args.mode]
    json_path = args.out / f"{args.mode}.json"

    def save_so_far(entries: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> None:
        # a long sitting killed for memory or time keeps the points it finished
        report.write_json(json_path, {**results, "grid": entries, "skipped": skipped})

    entries, skipped, ran = run_grid(args, settings, frameworks, peak, deadline, modes, selected, save_so_far)
    results["grid"], results["skipped"] = entries, skipped
    phase_done("grid")

    points = [] if args.no_keras_torch else keras_torch_points(args.mode, ran)
    if points:  # none where --points left out the anchor's points
        print(f"keras on torch (subprocess) on {len(points)} point(s) ...", flush=True)
        # Keras on torch runs eagerly (nothing to trace or compile after the first call), and a
        # training step at the reference point takes ~2 s: the first call is the only warm-up, and
        # two quiet repetitions do for an anchor 5-10x slower than everything else at training
        kt_settings = dataclasses.replace(settings, warmup_calls=1, min_rounds=2, max_rounds=4, min_quiet=2)
        worker = run_keras_torch(points, kt_settings, args.threads, inter_op, peak, modes)
        results["keras_torch"] = {k: v for k, v in worker.items() if k != "results"}
        report.merge_keras_torch(entries, worker)
        phase_done("keras_torch")

    if not args.no_shared and args.mode != "smoke":
        results["shared"] = run_shared(args, settings, frameworks, results["phases_s"])
        lap[0] = time.perf_counter()

    results["contention"] = contention_summary(results, args.contention_threshold)
    results["elapsed_s"] = time.perf_counter() - started
    print()
    print(report.table(entries))
    print(legend(results))
    results["complete"] = True
    report.write_json(json_path, results)
    written = [str(json_path)]
    if not args.no_plots:
        written += report.plots(entries, args.out / args.mode)
    print("wrote " + ", ".join(written))
    return 0


def run_shared(
    args: argparse.Namespace, settings: Settings, frameworks: list[str], phases: dict[str, float]
) -> dict[str, Any]:
    from . import shared

    # medians of >= 3 quiet repetitions: with 2, one slow spell (the tokenizer once measured
    # 1.59 s then 0.22 s after the full grid) decided the figure
    light = dataclasses.replace(settings, warmup_calls=2, min_rounds=3, max_rounds=6, min_quiet=3)
    found: dict[str, Any] = {}
    backends = tuple(f for f in ("torch", "tensorflow") if f in frameworks)
    quick = args.mode == "quick"
    steps: list[tuple[str, str, Any]] = [
        ("tokenizer", "tokenizer", lambda: shared.tokenizer(light, before_after=not quick)),
        ("metrics", "metrics", lambda: shared.metrics(light)),
        ("porting", "porting a 100M-parameter spec", lambda: shared.porting(1 if quick else 2, backends)),
        # one warm-up pass per variant: a pass is many calls already
        ("bucketing", "length bucketing", lambda: shared.bucketing(
            dataclasses.replace(light, warmup_calls=1, min_rounds=2, min_quiet=2), 384 if quick else 2048,
            backends, settle_s=0.0 if quick else 180.0)),
    ]  # fmt: skip
    for key, label, run in steps:
        print(f"{label} ...", flush=True)
        start = time.perf_counter()
        found[key] = run()
        phases[key] = time.perf_counter() - start
        gc.collect()
    return found


def legend(results: dict[str, Any]) -> str:
    c = results["contention"]
    lines = [
        "tokens/s over padded tokens (k = thousands); ratio = rnncore / best same-framework baseline "
        f"of this run (median calls; target >= {report.TARGET_RATIO}), ± one standard error from the "
        "spread between repetitions; * all repetitions contended, ~ fewer quiet repetitions than "
        "asked, ! under target; latency: rt rnncore_torch, te torch_eager, rk rnncore_keras, kt keras_tf",
        f"threads: {results['threads']}",
        f"contention: {c['contended_repetitions']} of {c['repetitions']} repetitions had other processes "
        f"above {c['threshold_cpus']} CPUs",
    ]
    if c["contended_fraction"] > 0.1 or not results["quiet_check"]["quiet"]:
        lines.append(
            "WARNING: the machine was not quiet during this run; figures marked * or ~ are unreliable "
            "(rerun on an idle machine)"
        )
    full = [s for s in results.get("skipped", []) if "vm.max_map_count" in s["reason"]]
    if full:
        lines.append(f"WARNING: {len(full)} point(s) not started: {full[0]['reason']}")
    shared = results.get("shared", {})
    if "tokenizer" in shared:
        t = shared["tokenizer"]["results"]
        line = f"tokenizer: encode_batch {report._k(t['encode_batch'].get('tokens_per_s'))} tok/s"
        if "rust_batch_encoder" in t:
            line += f" (Rust batch encoder {report._k(t['rust_batch_encoder'].get('tokens_per_s'))} tok/s)"
        lines.append(line)
    if "metrics" in shared:
        m = shared["metrics"]["results"]
        lines.append(
            "metrics on 1M: "
            + ", ".join(f"{k} {v['median_s'] * 1e3:.0f} ms" for k, v in m.items() if v.get("median_s"))
        )
    if "porting" in shared:
        p = shared["porting"]
        for backend in ("torch", "tensorflow"):
            if backend in p:
                b = p[backend]
                lines.append(
                    f"porting {p['parameters'] / 1e6:.0f}M params, {backend}: "
                    f"build+set {b['build_and_set_s']:.2f} s, set_weights {b['set_weights_s']:.2f} s, "
                    f"get_weights {b['get_weights_s']:.2f} s"
                )
    if "bucketing" in shared:
        b = shared["bucketing"]
        for key, value in b.items():
            if isinstance(value, dict) and value.get("speedup"):
                line = f"bucketing {key}: {value['speedup']:.2f}x valid tokens/s vs a naive padded loop"
                if value.get("speedup_vs_unbucketed"):
                    line += f" ({value['speedup_vs_unbucketed']:.2f}x vs random batches with their lengths)"
                lines.append(line)
    return "\n".join(lines)
