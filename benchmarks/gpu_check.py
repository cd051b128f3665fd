"""The GPU check: rnncore's torch backend on a CUDA GPU, against the numpy oracle, the CPU and
hand-written cuDNN code. Run by `benchmarks/gpu_check.sh`; needs only torch, numpy and this
repository (`PYTHONPATH=.:backends`), no TensorFlow.

Sections, each recorded in one JSON file (`--out`, schema rnncore.gpu_check/1):

- parity: models of several cells, directions, poolings and inputs, float32 and float64, on a
  padded batch (packed through cuDNN) and a full-length one; outputs vs the oracle and the CPU
  model, gradients vs the CPU model, TF32 off (as `rnncore parity` runs) and on. The max
  differences are what `rnncore.tolerances.GPU_TOLERANCES` should be set from.
- training: the same Adam steps on the GPU and the CPU from the same weights; weights compared.
- checkpoint: weights and optimizer slots read from a GPU model resume on the CPU (and back)
  and take the same next step; with safetensors installed, a `rnncore train --device cuda` run
  that resumes, and evaluates on the CPU and the GPU alike.
- benchmark: rnncore's module and trainer vs hand-written `nn.Embedding -> nn.LSTM -> nn.Linear`
  (cuDNN, `pack_padded_sequence` for padded batches), training steps and inference, at the
  reference configuration (vocab 20k, embedding 128, LSTM 256, length 128, batch 64), on
  full-length and padded batches; plus the hand-written LSTM run over the padded tensor unpacked,
  to tell whether packing is the faster cuDNN path.

`--smoke` runs every section at toy sizes (on the CPU too, `--device cpu`) to test the script.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

import rnncore
from rnncore.device import DeviceError, resolve_device
from rnncore.parity import random_batch
from rnncore.reference import reference_forward
from rnncore.tolerances import compare
from rnncore.train.config import TrainConfig

from .grid import Point, batch_arrays
from .impl_torch import Baseline

SCHEMA = "rnncore.gpu_check/1"
TORCH = rnncore.get_backend("torch")
REFERENCE = Point("lstm", 1, False, 128, 64, 256, vocab=20_000, embedding=128, tag="reference")
SMOKE_REFERENCE = Point("lstm", 1, False, 12, 4, 8, vocab=50, embedding=8, tag="smoke")


# ---- parity --------------------------------------------------------------------------------------
def parity_specs(smoke: bool) -> dict[str, dict[str, Any]]:
    """Specs covering cells, directions, depths, residuals, poolings, heads and inputs."""
    hidden, width, vocab = (6, 5, 40) if smoke else (128, 64, 1000)
    tokens = {"kind": "tokens", "vocab_size": vocab, "embedding_dim": width, "padding_idx": 0}
    features = {"kind": "features", "feature_dim": width}
    specs = {
        "lstm-2L-bi-last-tokens": {"input": tokens, "encoder": {"cell": "lstm", "hidden_size": hidden,
                                   "num_layers": 2, "bidirectional": True}, "pooling": "last",
                                   "head": {"hidden": [32], "num_outputs": 3}},
        "gru-1L-uni-mean-features": {"input": features, "encoder": {"cell": "gru", "hidden_size": hidden},
                                     "pooling": "mean", "head": {"num_outputs": 2}},
        "rnn-tanh-2L-bi-residual-max-features": {"input": features, "encoder": {"cell": "rnn",
                                   "hidden_size": hidden, "num_layers": 2, "bidirectional": True,
                                   "residual": True}, "pooling": "max", "head": {"num_outputs": 2}},
        "lstm-1L-bi-attention-tokens": {"input": tokens, "encoder": {"cell": "lstm", "hidden_size": hidden,
                                        "bidirectional": True}, "pooling": "attention",
                                        "head": {"hidden": [16], "activation": "gelu", "num_outputs": 4}},
        "gru-2L-bi-tagging-tokens": {"input": tokens, "encoder": {"cell": "gru", "hidden_size": hidden,
                                     "num_layers": 2, "bidirectional": True}, "pooling": "none",
                                     "head": {"num_outputs": 5, "task": "tagging"}},
    }  # fmt: skip
    reference = SMOKE_REFERENCE if smoke else REFERENCE
    specs[f"reference-{reference.key}"] = reference.spec_dict()
    return specs


def full_batch(spec: rnncore.ModelSpec, batch: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch with every row at full length (no padding: cuDNN's unpacked path)."""
    rng = np.random.default_rng(seed)
    lengths = np.full(batch, steps, dtype=np.int64)
    if spec.input.kind == "tokens":
        assert spec.input.vocab_size is not None
        return rng.integers(1, spec.input.vocab_size, size=(batch, steps)).astype(np.int64), lengths
    assert spec.input.feature_dim is not None
    return rng.standard_normal((batch, steps, spec.input.feature_dim)).astype(spec.dtype), lengths


def _diff(actual: np.ndarray, expected: np.ndarray, kind: str, dtype: str) -> dict[str, Any]:
    gpu, cpu = compare(actual, expected, kind, dtype, gpu=True), compare(actual, expected, kind, dtype)
    scale = float(np.abs(np.asarray(expected, np.float64)).max(initial=0.0))
    return {"max_abs": gpu.max_abs, "max_rel": gpu.max_rel, "scale": scale, "ok_gpu_tolerance": gpu.ok,
            "ok_cpu_tolerance": cpu.ok}  # fmt: skip


def _grad_diff(gpu: tuple, cpu: tuple, dtype: str) -> dict[str, Any]:
    """The worst gradient (any weight, or the inputs) of the GPU model against the CPU model's."""
    pairs = [(gpu[1][k], cpu[1][k]) for k in cpu[1]]
    if gpu[2] is not None and cpu[2] is not None:
        pairs.append((gpu[2], cpu[2]))
    diffs = [_diff(a, b, "gradients", dtype) for a, b in pairs]
    worst = max(diffs, key=lambda d: d["max_abs"])
    return {**worst, "ok_gpu_tolerance": all(d["ok_gpu_tolerance"] for d in diffs),
            "ok_cpu_tolerance": all(d["ok_cpu_tolerance"] for d in diffs)}  # fmt: skip


def parity_case(spec: rnncore.ModelSpec, device: str, tf32: bool, batch: int, steps: int) -> dict[str, Any]:
    weights = rnncore.init_weights(spec, seed=0)
    cpu_model = rnncore.build(spec, backend="torch", weights=weights, device="cpu")
    gpu_model = rnncore.build(spec, backend="torch", weights=weights, device=device)
    found: dict[str, Any] = {}
    batches = {"padded": random_batch(spec, batch, steps, seed=1), "full": full_batch(spec, batch, steps, 2)}
    for name, (inputs, lengths) in batches.items():
        oracle = reference_forward(spec, weights, inputs, lengths)
        cotangent = np.random.default_rng(3).standard_normal(oracle.shape).astype(spec.dtype)
        with TORCH.tf32(False):
            on_cpu = rnncore.value_and_grad(cpu_model, inputs, cotangent, lengths)
        with TORCH.tf32(tf32):
            on_gpu = rnncore.value_and_grad(gpu_model, inputs, cotangent, lengths)
        found[name] = {
            "outputs_vs_oracle": _diff(on_gpu[0], oracle, "outputs", spec.dtype),
            "outputs_vs_cpu": _diff(on_gpu[0], on_cpu[0], "outputs", spec.dtype),
            "gradients_vs_cpu": _grad_diff(on_gpu, on_cpu, spec.dtype),
            "cpu_outputs_vs_oracle": _diff(on_cpu[0], oracle, "outputs", spec.dtype),
        }
    return found


def parity_section(device: str, smoke: bool, deadline: float) -> dict[str, Any]:
    batch, steps = (4, 6) if smoke else (32, 64)
    results: dict[str, Any] = {"batch": batch, "max_len": steps, "cases": []}
    for name, spec_dict in parity_specs(smoke).items():
        for dtype in ("float32", "float64"):
            spec = rnncore.ModelSpec.from_dict({**spec_dict, "dtype": dtype})
            length = (
                (SMOKE_REFERENCE if smoke else REFERENCE).seq_len if name.startswith("reference") else steps
            )
            for tf32 in (False, True) if dtype == "float32" else (False,):
                if time.monotonic() > deadline:
                    results["cases"].append({"spec": name, "dtype": dtype, "tf32": tf32, "skipped": "budget"})
                    continue
                case = parity_case(spec, device, tf32, batch, length)
                results["cases"].append(
                    {"spec": name, "dtype": dtype, "tf32": tf32, "max_len": length, **case}
                )
    results["summary"] = parity_summary(results["cases"])
    return results


def parity_summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Worst differences per (dtype, TF32) over every spec and batch: what the tolerances face."""
    summary: dict[str, Any] = {}
    for case in cases:
        if "skipped" in case:
            continue
        key = f"{case['dtype']}-tf32-{'on' if case['tf32'] else 'off'}"
        into = summary.setdefault(key, {})
        for batch in ("padded", "full"):
            for what, diff in case[batch].items():
                worst = into.setdefault(what, {"max_abs": 0.0, "max_rel": 0.0, "all_ok_gpu_tolerance": True})
                worst["max_abs"] = max(worst["max_abs"], diff["max_abs"])
                worst["max_rel"] = max(worst["max_rel"], diff["max_rel"])
                worst["all_ok_gpu_tolerance"] &= diff["ok_gpu_tolerance"]
    return summary


# ---- training and checkpoints --------------------------------------------------------------------
def _training_spec(smoke: bool) -> rnncore.ModelSpec:
    return rnncore.ModelSpec.from_dict(parity_specs(smoke)["lstm-2L-bi-last-tokens"])


def _batches(spec: rnncore.ModelSpec, count: int, smoke: bool) -> list[tuple[np.ndarray, ...]]:
    batch, steps = (4, 6) if smoke else (32, 48)
    found = []
    for seed in range(count):
        ids, lengths = random_batch(spec, batch, steps, seed=10 + seed)
        assert spec.head is not None
        labels = np.random.default_rng(seed).integers(0, spec.head.num_outputs, size=batch)
        found.append((ids, lengths, labels.astype(np.int64)))
    return found


def _trainer(model: Any) -> Any:
    return TORCH.make_trainer(model, TrainConfig(optimizer="adam", lr=1e-3, clip_norm=1.0))


def _weights_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], dtype: str) -> dict[str, Any]:
    diffs = [compare(a[k], b[k], "training", dtype, gpu=True) for k in b]
    return {"max_abs": max(d.max_abs for d in diffs), "ok_gpu_tolerance": all(d.ok for d in diffs),
            "ok_cpu_tolerance": all(compare(a[k], b[k], "training", dtype).ok for k in b)}  # fmt: skip


def training_section(device: str, smoke: bool) -> dict[str, Any]:
    """The same Adam steps from the same weights on the GPU and on the CPU (TF32 off)."""
    spec = _training_spec(smoke)
    weights = rnncore.init_weights(spec, seed=4)
    places = {"cpu": "cpu", "device": device}  # two models even in a smoke run on the CPU
    models = {
        key: rnncore.build(spec, backend="torch", weights=weights, device=d) for key, d in places.items()
    }
    trainers = {key: _trainer(model) for key, model in models.items()}
    losses: dict[str, list[float]] = {key: [] for key in models}
    batches = _batches(spec, 4 if smoke else 30, smoke)
    with TORCH.tf32(False):
        for ids, lengths, labels in batches:
            for key, trainer in trainers.items():
                losses[key].append(trainer.step(ids, lengths, labels, 1e-3))
    gap = max(abs(a - b) for a, b in zip(losses["cpu"], losses["device"], strict=True))
    weights_gap = _weights_diff(
        rnncore.get_weights(models["device"]), rnncore.get_weights(models["cpu"]), spec.dtype
    )
    return {"steps": len(batches), "max_loss_gap": gap, "weights": weights_gap}


def checkpoint_section(device: str, smoke: bool, deadline: float) -> dict[str, Any]:
    """State read from a model on one device resumes on the other and takes the same next step."""
    spec = _training_spec(smoke)
    batches = _batches(spec, 4, smoke)
    found: dict[str, Any] = {}
    with TORCH.tf32(False):
        for source, target in ((device, "cpu"), ("cpu", device)):
            model = rnncore.build(spec, backend="torch", seed=5, device=source)
            trainer = _trainer(model)
            for batch in batches[:3]:
                trainer.step(*batch, 1e-3)
            weights, slots = rnncore.get_weights(model), trainer.optimizer_state()
            assert all(isinstance(v, np.ndarray) for v in [*weights.values(), *slots.values()])
            resumed = rnncore.build(spec, backend="torch", weights=weights, device=target)
            again = _trainer(resumed)
            again.load_optimizer_state(slots)
            slot_devices = {
                str(v.device) for s in again.optimizer.state.values() for k, v in s.items() if k != "step"
            }
            trainer.step(*batches[3], 1e-3)
            again.step(*batches[3], 1e-3)
            found[f"{source}->{target}"] = {
                "slot_devices": sorted(slot_devices),
                "next_step": _weights_diff(
                    rnncore.get_weights(resumed), rnncore.get_weights(model), spec.dtype
                ),
            }
    found["cli"] = cli_run(device, smoke, deadline)
    return found


def cli_run(device: str, smoke: bool, deadline: float) -> dict[str, Any]:
    """`rnncore train --device DEVICE`, resumed for a second epoch, evaluated on CPU and GPU."""
    if importlib.util.find_spec("safetensors") is None:
        return {"skipped": "safetensors is not installed (run folders are safetensors files)"}
    if time.monotonic() > deadline:
        return {"skipped": "budget"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([".", "backends", os.environ.get("PYTHONPATH", "")])}

    def rnncore_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rnncore", *args], capture_output=True, text=True,
                              env=env, timeout=max(30.0, deadline - time.monotonic()))  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        run = str(Path(tmp) / "run")
        common = ["--task", "sequence-classification", "--quiet", "--out", run, "--device", device]
        if smoke:  # the first rows of the bundled digits (all 1797 by default)
            from rnncore.data import load_bundled

            digits = load_bundled("digits").subset(np.arange(120))
            np.savez(Path(tmp) / "digits.npz", x=digits.x, y=digits.y)
            common += ["--data", str(Path(tmp) / "digits.npz")]
        first = rnncore_cli("train", *common, "--epochs", "1")
        second = rnncore_cli("train", *common, "--epochs", "2", "--resume")
        found: dict[str, Any] = {"train_rc": first.returncode, "resume_rc": second.returncode,
                                 "stdout": first.stdout[-400:],
                                 "stderr": (first.stderr + second.stderr)[-800:]}  # fmt: skip
        if first.returncode == 0 and second.returncode == 0:
            found["run_json_device"] = json.loads((Path(run) / "run.json").read_text())["device"]
            for where in ("cpu", device):
                done = rnncore_cli("evaluate", run, "--json", "--device", where)
                found[f"evaluate_{where}"] = (
                    json.loads(done.stdout) if done.returncode == 0 else done.stderr[-400:]
                )
    return found


# ---- benchmark -----------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(calls: dict[str, Callable[[], Any]], device: str, smoke: bool) -> dict[str, float]:
    """Median ms per call of each, in interleaved repetitions (so drift hits all alike)."""
    warmup, reps, min_rep_s = (2, 2, 0.0) if smoke else (20, 7, 0.25)
    per_rep: dict[str, int] = {}
    for name, call in calls.items():
        for _ in range(warmup):
            call()
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        per_rep[name] = max(1, int(min_rep_s / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(per_rep[name]):
                call()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3 / per_rep[name])
    return {name: statistics.median(found) for name, found in times.items()}


class _Dense(torch.nn.Module):
    """The hand-written model run over the whole padded tensor (no packing): timing only."""

    def __init__(self, baseline: Baseline):
        super().__init__()
        self.baseline = baseline

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.baseline(ids, None)


def benchmark_case(point: Point, device: str, smoke: bool) -> dict[str, Any]:
    arrays = batch_arrays(point, seed=0)
    ids, lengths, labels = arrays["ids"], arrays["lengths"], arrays["labels"]
    spec = rnncore.ModelSpec.from_dict(point.spec_dict())
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=0), device=device)
    trainer = TORCH.make_trainer(model, TrainConfig(optimizer="adam", lr=1e-3))
    torch.manual_seed(0)
    baseline = Baseline(point).to(device)
    dense = _Dense(baseline)
    optimizer = torch.optim.Adam(baseline.parameters(), lr=1e-3)
    x = torch.from_numpy(ids).to(device)
    lens = torch.from_numpy(lengths) if point.masked else None  # packing wants them on the CPU

    def inference(module: torch.nn.Module) -> Callable[[], Any]:
        def call() -> Any:
            module.eval()
            with torch.inference_mode():
                return module(x, lens)

        return call

    def numpy_inference(module: torch.nn.Module) -> Callable[[], Any]:
        def call() -> Any:
            module.eval()
            with torch.inference_mode():
                return module(torch.from_numpy(ids).to(device), lens).cpu().numpy()

        return call

    def baseline_step(module: torch.nn.Module) -> Callable[[], float]:
        def call() -> float:  # what `benchmarks.impl_torch.baseline` times: numpy in, Adam, the loss out
            module.train()
            inputs, targets = torch.from_numpy(ids).to(device), torch.from_numpy(labels).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(module(inputs, lens), targets)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        return call

    forward = _timed({"rnncore": inference(model), "handwritten": inference(baseline),
                      "handwritten_unpacked": inference(dense)}, device, smoke)  # fmt: skip
    api = _timed({"rnncore_predict": lambda: rnncore.predict(model, ids, lengths),
                  "handwritten": numpy_inference(baseline)}, device, smoke)  # fmt: skip
    train = _timed({"rnncore": lambda: trainer.step(ids, lengths, labels, 1e-3),
                    "handwritten": baseline_step(baseline), "handwritten_unpacked": baseline_step(dense)},
                   device, smoke)  # fmt: skip
    return {
        "point": point.as_dict(),
        "inference_ms": forward,
        "inference_numpy_io_ms": api,
        "train_step_ms": train,
        # > 1: rnncore slower than hand-written cuDNN code
        "ratio_inference": forward["rnncore"] / forward["handwritten"],
        "ratio_inference_numpy_io": api["rnncore_predict"] / api["handwritten"],
        "ratio_train": train["rnncore"] / train["handwritten"],
    }


def benchmark_section(device: str, smoke: bool, deadline: float) -> dict[str, Any]:
    reference = SMOKE_REFERENCE if smoke else REFERENCE
    found: dict[str, Any] = {"tf32": _tf32_flags(), "cases": []}
    for masked in (False, True):
        point = replace(reference, masked=masked)
        if time.monotonic() > deadline:
            found["cases"].append({"point": point.as_dict(), "skipped": "budget"})
            continue
        found["cases"].append(benchmark_case(point, device, smoke))
    return found


# ---- the run -------------------------------------------------------------------------------------
def _tf32_flags() -> dict[str, Any]:
    flags: dict[str, Any] = {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                             "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}  # fmt: skip
    with contextlib.suppress(AttributeError):  # torch >= 2.9 also names the precision per backend
        flags["cudnn_rnn_fp32_precision"] = torch.backends.cudnn.rnn.fp32_precision
    return flags


def environment(device: str) -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                             "numpy": np.__version__, "device": device, "cuda": torch.version.cuda,
                             "tf32_defaults": _tf32_flags()}  # fmt: skip
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        found["gpu"] = torch.cuda.get_device_name(index)
        found["capability"] = list(torch.cuda.get_device_capability(index))
        found["cudnn"] = torch.backends.cudnn.version()
    return found


@contextlib.contextmanager
def section(results: dict[str, Any], name: str) -> Iterator[None]:
    """Run one section; a failure is recorded with its traceback and the next section still runs."""
    start = time.monotonic()
    print(f"== {name}", flush=True)
    try:
        yield
    except Exception:  # a report for a session with little GPU time: keep going, say what broke
        results[name] = {"error": traceback.format_exc()[-3000:]}
    results.setdefault("seconds", {})[name] = round(time.monotonic() - start, 1)


def report(results: dict[str, Any]) -> str:
    lines = []
    for key, worst in results.get("parity", {}).get("summary", {}).items():
        for what, diff in worst.items():
            verdict = "ok" if diff["all_ok_gpu_tolerance"] else "OUTSIDE gpu tolerance"
            lines.append(f"parity {key:<18} {what:<22} max abs {diff['max_abs']:.2e}  {verdict}")
    training = results.get("training", {})
    if "weights" in training:
        weights, gap = training["weights"]["max_abs"], training["max_loss_gap"]
        lines.append(
            f"training {training['steps']} steps, gpu vs cpu: weights {weights:.2e}, loss gap {gap:.2e}"
        )
    for moved, found in results.get("checkpoint", {}).items():
        if "next_step" in found:
            lines.append(
                f"checkpoint {moved}: next step's weights max abs {found['next_step']['max_abs']:.2e}"
            )
        elif moved == "cli":
            scores = {
                k: v.get("accuracy") if isinstance(v, dict) else v
                for k, v in found.items()
                if "evaluate" in k
            }
            lines.append(f"cli run: device {found.get('run_json_device')}, {scores or found}")
    for case in results.get("benchmark", {}).get("cases", []):
        if "ratio_train" in case:
            lines.append(f"benchmark {case['point']['key']}: rnncore / hand-written cuDNN: train "
                         f"{case['ratio_train']:.2f}x, inference {case['ratio_inference']:.2f}x "
                         f"(numpy in/out {case['ratio_inference_numpy_io']:.2f}x)")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --smoke")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    parser.add_argument("--smoke", action="store_true", help="toy sizes: test the script itself")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting sections after this")
    args = parser.parse_args(argv)
    try:
        device = str(resolve_device(args.device, TORCH.gpu_count(), "torch"))
    except DeviceError as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2
    if device == "cpu" and not args.smoke:
        print("gpu_check: error: the CPU is checked by the test suite; use --smoke to test this script there",
              file=sys.stderr)  # fmt: skip
        return 2
    deadline = time.monotonic() + args.budget_s
    results: dict[str, Any] = {"format": SCHEMA, "smoke": args.smoke, "environment": environment(device)}
    with section(results, "parity"):
        results["parity"] = parity_section(device, args.smoke, deadline - 0.45 * args.budget_s)
    with section(results, "training"):
        results["training"] = training_section(device, args.smoke)
    with section(results, "checkpoint"):
        results["checkpoint"] = checkpoint_section(device, args.smoke, deadline - 0.2 * args.budget_s)
    with section(results, "benchmark"):
        results["benchmark"] = benchmark_section(device, args.smoke, deadline)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(report(results))
    print(f"wrote {args.out}")
    failed = [name for name in ("parity", "training", "checkpoint", "benchmark") if "error" in results[name]]
    for name in failed:
        print(f"section {name} failed:\n{results[name]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
