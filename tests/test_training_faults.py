"""Faults during training: a kill at any instant, a full disk, a loss that becomes NaN in a
later epoch. Each leaves the last complete checkpoint loadable, and `--resume` then ends with
the same weights, bit for bit (torch, CPU), as a run that was never interrupted.

How the kills are made:
- every file operation of a checkpoint write (and of the final bundle) is enumerated in
  process: just before each one, and half-way through each file written or folder removed,
  the run folder is copied as a SIGKILL at that instant would leave it (a kill loses no data
  already written, and a rename is atomic); every copy is then checked and resumed;
- real SIGKILLs of `python -m rnncore train` at seeded random moments, and at two chosen
  writes of a checkpoint (a small wrapper script kills its own process there; the library has
  no test hooks).
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from support import script_validation

import rnncore
from rnncore import bundle, cli
from rnncore.data import load_bundled
from rnncore.train import run as run_module
from rnncore.train.config import TrainConfig

EPOCHS = 4
SPEC = {
    "input": {"kind": "features", "feature_dim": 8},
    "encoder": {"cell": "gru", "hidden_size": 8},
    "pooling": "last",
    "head": {"num_outputs": 10},
}
# Early stopping on (its patience never runs out), so checkpoints keep the best epoch as well.
# The in-process crash test scripts validation accuracy (SCRIPTED_ACCURACY) so that while epoch 4
# is written the best epoch is 1, older than the two newest checkpoints, on any CPU's rounding.
TRAIN = {
    "format": "rnncore.train/1",
    "epochs": EPOCHS,
    "batch_size": 16,
    "lr": 1.0,
    "early_stopping_patience": 10,
    "early_stopping_metric": "accuracy",
}
SCRIPTED_ACCURACY = (0.5, 0.5, 0.0, 0.4)  # a tie keeps epoch 1
SUBPROCESS_TIMEOUT = 240  # seconds; a whole run takes a few


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faults")
    digits = load_bundled("digits").subset(np.arange(120))
    np.savez(root / "digits.npz", x=digits.x, y=digits.y)
    (root / "spec.json").write_text(json.dumps(SPEC))
    (root / "train.json").write_text(json.dumps(TRAIN))
    return {"data": root / "digits.npz", "spec": root / "spec.json", "config": root / "train.json"}


def _args(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--task",
        "sequence-classification",
        "--data",
        str(files["data"]),
        "--spec",
        str(files["spec"]),
        "--config",
        str(files["config"]),
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Final weights of the uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert cli.main(_args(files, out)) == 0
    return _final_weights(out)


def _final_weights(run: Path) -> dict[str, np.ndarray]:
    return bundle.load_weights_and_spec(run)[1]


def _assert_same(weights: dict[str, np.ndarray], reference: dict[str, np.ndarray], where: str) -> None:
    assert weights.keys() == reference.keys(), where
    for name in reference:
        np.testing.assert_array_equal(weights[name], reference[name], err_msg=f"{where}: {name}")


def _assert_loadable(run: Path) -> str | None:
    """The checkpoint LATEST names, fully readable (or None when there is none yet)."""
    folder = run_module.latest_checkpoint(run)
    if folder is None:
        return None
    spec, weights = bundle.load_weights_and_spec(folder)
    assert all(np.isfinite(w).all() for w in weights.values())
    assert bundle.read_weights(folder / "optimizer.safetensors")
    state = json.loads((folder / "state.json").read_text())
    assert state["epoch"] == len(state["history"]["epochs"]) == int(folder.name.split("-")[1])
    rnncore.build(spec, "torch", weights)
    return folder.name


def _resume_and_compare(run: Path, files: dict[str, Path], reference, where: str, capsys) -> None:
    """Resume `run`; with no checkpoint yet, the refusal must say to start again."""
    latest = _assert_loadable(run)
    code = cli.main(_args(files, run, "--resume"))
    err = capsys.readouterr().err
    if latest is None:
        assert code == 2 and "no complete checkpoint" in err and "--overwrite" in err, f"{where}: {err}"
        return
    assert code == 0, f"{where}: {err}"
    _assert_same(_final_weights(run), reference, where)
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers and not (run / "final.tmp").exists(), f"{where}: {leftovers}"


# ---- every crash point of a checkpoint write, in process --------------------------------------
class CrashStates:
    """Copies of the run folder as a kill at each file operation would leave it."""

    def __init__(self, run: Path, root: Path):
        self.run, self.root = run.resolve(), root
        self.phase: str | None = None  # e.g. "checkpoint 3" while one is being written
        self.states: list[tuple[str, Path]] = []  # (phase, what was happening), the copy

    def take(self, what: str, damage: Callable[[Path], None] | None = None) -> None:
        copy = self.root / f"{len(self.states):03d}" / "run"
        shutil.copytree(self.run, copy, symlinks=True)
        if damage is not None:
            damage(copy)
        self.states.append((f"{self.phase}, {what}", copy))

    def relative(self, path: str | os.PathLike) -> Path | None:
        try:
            return Path(path).resolve().relative_to(self.run)
        except ValueError:
            return None


def _truncate(relative: Path) -> Callable[[Path], None]:
    def damage(copy: Path) -> None:
        target = copy / relative
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])

    return damage


def _remove_first_file(relative: Path) -> Callable[[Path], None]:
    def damage(copy: Path) -> None:
        files = sorted(p for p in (copy / relative).rglob("*") if p.is_file())
        if files:
            files[0].unlink()

    return damage


def _record(monkeypatch: pytest.MonkeyPatch, states: CrashStates, phases: set[str]) -> None:
    """Patch the file operations checkpoints and the final bundle use to record crash states."""

    def phase_of(name: str, function: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            label = name if name == "final bundle" else f"{name} {args[4] + 1}"  # epoch is arg 4
            states.phase = label if label in phases else None
            try:
                return function(*args, **kwargs)
            finally:
                if states.phase:
                    states.take("done")
                states.phase = None

        return wrapped

    def write(function: Callable) -> Callable:
        def wrapped(path, *args, **kwargs):
            relative = states.relative(path) if states.phase else None
            if relative is None:
                return function(path, *args, **kwargs)
            states.take(f"before writing {relative}")
            result = function(path, *args, **kwargs)
            states.take(f"half-way through writing {relative}", _truncate(relative))
            return result

        return wrapped

    def replace(src, dst):
        relative = states.relative(dst) if states.phase else None
        if relative is not None:
            states.take(f"before renaming to {relative}")
        return real_replace(src, dst)

    def rmtree(path, *args, **kwargs):
        relative = states.relative(path) if states.phase else None
        if relative is not None and Path(path).exists():
            states.take(f"before removing {relative}")
            states.take(f"half-way through removing {relative}", _remove_first_file(relative))
        return real_rmtree(path, *args, **kwargs)

    real_replace, real_rmtree = os.replace, shutil.rmtree
    monkeypatch.setattr(run_module, "save_checkpoint", phase_of("checkpoint", run_module.save_checkpoint))
    monkeypatch.setattr(
        run_module, "_write_final_bundle", phase_of("final bundle", run_module._write_final_bundle)
    )
    monkeypatch.setattr(pathlib.Path, "write_text", write(pathlib.Path.write_text))
    monkeypatch.setattr(bundle, "write_weights", write(bundle.write_weights))
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)


def test_a_kill_at_any_file_operation_leaves_a_run_that_resumes_to_the_same_weights(
    files, tmp_path, monkeypatch, capsys
):
    """Checkpoint 1 (nothing to fall back on yet), checkpoint 4 (a previous one to fall back
    on, whose best epoch is older still; two to prune) and the final bundle: every state a kill
    can leave is checked and resumed."""
    script_validation(monkeypatch, "accuracy", SCRIPTED_ACCURACY)
    assert cli.main(_args(files, tmp_path / "reference")) == 0
    reference = _final_weights(tmp_path / "reference")
    run = tmp_path / "run"
    states = CrashStates(run, tmp_path / "states")
    with monkeypatch.context() as patches:
        _record(patches, states, {"checkpoint 1", "checkpoint 4", "final bundle"})
        assert cli.main(_args(files, run)) == 0
    _assert_same(_final_weights(run), reference, "the recording run")
    phases = {where.split(", ")[0] for where, _ in states.states}
    assert phases == {"checkpoint 1", "checkpoint 4", "final bundle"}, phases
    assert len(states.states) >= 45, [where for where, _ in states.states]
    during_4 = next(state for where, state in states.states if where.startswith("checkpoint 4"))
    resumed_from = json.loads((during_4 / "checkpoints" / "epoch-0003" / "state.json").read_text())
    assert resumed_from["history"]["best_epoch"] == 0  # the case described in TRAIN
    capsys.readouterr()
    for where, state in states.states:
        _resume_and_compare(state, files, reference, where, capsys)


# ---- real kills ------------------------------------------------------------------------------
# Runs `rnncore train ARGS` and SIGKILLs its own process just before the first write whose path
# matches $KILL_BEFORE: a kill at a chosen instant of a checkpoint write, in a real process.
KILLER = """
import os, pathlib, re, signal, sys
from rnncore import bundle, cli

pattern = re.compile(os.environ["KILL_BEFORE"])

def before(write):
    def wrapped(path, *args, **kwargs):
        if pattern.search(str(path)):
            os.kill(os.getpid(), signal.SIGKILL)
        return write(path, *args, **kwargs)
    return wrapped

bundle.write_weights = before(bundle.write_weights)
pathlib.Path.write_text = before(pathlib.Path.write_text)
sys.exit(cli.main(sys.argv[1:]))
"""


def _start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *argv],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    """Wait (bounded) for `process`; kill it if it overruns."""
    try:
        _, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"training did not finish in {SUBPROCESS_TIMEOUT} s: {err[-2000:]}")
    return process.returncode, err


@pytest.mark.parametrize(
    "kill_before",
    [
        r"\.epoch-0002\.tmp-[^/]+/model\.safetensors$",  # inside the bundle, still a temp folder
        r"/epoch-0002/optimizer\.safetensors$",  # the bundle renamed in place, no state.json yet
    ],
)
def test_a_real_kill_while_a_checkpoint_is_written(kill_before, files, reference, tmp_path, capsys):
    run = tmp_path / "run"
    code, err = _finish(_start(["-c", KILLER, *_args(files, run)], {"KILL_BEFORE": kill_before}))
    assert code == -signal.SIGKILL, err
    assert _assert_loadable(run) == "epoch-0001"
    assert (
        list((run / "checkpoints").glob(".epoch-0002.tmp-*")) or (run / "checkpoints" / "epoch-0002").is_dir()
    )
    _resume_and_compare(run, files, reference, kill_before, capsys)


def _wait_for_progress(process: subprocess.Popen, pointer: Path, before: str | None) -> None:
    """Until LATEST names a newer checkpoint than `before`, or the process ends."""
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        if pointer.is_file() and pointer.read_text().strip() not in ("", before):
            return
        time.sleep(0.01)


def test_real_kills_at_random_moments_then_resume(files, reference, tmp_path, capsys):
    """Three SIGKILLs at seeded random delays after a run (or resumed run) has made progress."""
    rng = np.random.default_rng(20240501)
    run, pointer = tmp_path / "run", tmp_path / "run" / "checkpoints" / "LATEST"
    outcomes = []
    for attempt in range(3):
        before = pointer.read_text().strip() if pointer.is_file() else None
        process = _start(["-m", "rnncore", *_args(files, run, *(["--resume"] if attempt else []))])
        try:
            _wait_for_progress(process, pointer, before)
            time.sleep(float(rng.uniform(0.0, 0.2)))  # the rest of the run takes longer
            process.send_signal(signal.SIGKILL)
        finally:
            code, err = _finish(process)
        outcomes.append(code)
        assert code in (0, -signal.SIGKILL), err
        assert _assert_loadable(run) is not None
        if code == 0:
            break
    assert -signal.SIGKILL in outcomes, outcomes  # at least one kill landed mid-run
    if outcomes[-1] != 0:
        _resume_and_compare(run, files, reference, f"after kills {outcomes}", capsys)
    else:
        _assert_same(_final_weights(run), reference, f"after kills {outcomes}")


# ---- a full disk -----------------------------------------------------------------------------
def _no_space(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("where", ["model.safetensors", "optimizer.safetensors", "state.json", "LATEST"])
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(
    where, files, reference, tmp_path, monkeypatch, capsys
):
    """The disk fills up while checkpoint 2 is written: a clear error, exit 2, checkpoint 1
    intact and loadable, no temporary files left, and --resume (space freed) ends the same."""
    run = tmp_path / "run"

    def fails(target: str, function: Callable) -> Callable:
        def wrapped(path, *args, **kwargs):
            # the file itself, or the new file staged beside it (`rnncore.staging`: .NAME.*.tmp)
            if re.search(rf"epoch-0002[^/]*/\.?{re.escape(target)}(\.[^/]*\.tmp)?$", str(path)):
                raise _no_space(path)
            return function(path, *args, **kwargs)

        return wrapped

    def mkstemp(*args, prefix: str = "", dir: object = None, **kwargs):
        if prefix.startswith(".LATEST") and (run / "checkpoints" / "epoch-0002" / "state.json").exists():
            raise _no_space(dir)
        return real_mkstemp(*args, prefix=prefix, dir=dir, **kwargs)

    real_mkstemp = tempfile.mkstemp
    with monkeypatch.context() as patches:
        if where == "LATEST":
            patches.setattr(tempfile, "mkstemp", mkstemp)
        elif where == "state.json":
            patches.setattr(pathlib.Path, "write_text", fails(where, pathlib.Path.write_text))
        else:
            patches.setattr(bundle, "write_weights", fails(where, bundle.write_weights))
        assert cli.main(_args(files, run)) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "epoch-0001, is intact" in err and "--resume" in err, err
    assert "Traceback" not in err
    assert _assert_loadable(run) == "epoch-0001"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    _resume_and_compare(run, files, reference, f"disk full at {where}", capsys)


def test_a_real_write_error_is_reported_not_a_traceback(files, reference, tmp_path, capsys):
    """A real failed write in a real process: the file size limit (RLIMIT_FSIZE, what a full disk
    looks like to a writer) drops to 1 KB once checkpoint 1 is on disk."""
    limiter = """
import resource, signal, sys
from rnncore import cli
from rnncore.train import run

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead
save = run.save_checkpoint

def save_checkpoint(*args, **kwargs):
    if args[4] == 1:  # the second epoch: checkpoint 1 is complete
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return save(*args, **kwargs)

run.save_checkpoint = save_checkpoint
sys.exit(cli.main(sys.argv[1:]))
"""
    run = tmp_path / "run"
    code, err = _finish(_start(["-c", limiter, *_args(files, run)]))
    assert code == 2 and "File too large" in err and "epoch-0001, is intact" in err, err
    assert "Traceback" not in err
    assert _assert_loadable(run) == "epoch-0001"
    _resume_and_compare(run, files, reference, "file size limit", capsys)


# ---- a loss that becomes NaN in a later epoch ------------------------------------------------
@pytest.fixture
def poisoned_second_epoch(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """From the first step of epoch 2 the learning rate is NaN: that step's update poisons the
    weights, so the loss of the next step is NaN. Deterministic, whatever the data."""
    seen: dict[str, int] = {}
    real = TrainConfig.learning_rate

    def learning_rate(self: TrainConfig, step: int, total_steps: int) -> float:
        seen["steps_per_epoch"] = total_steps // self.epochs
        return float("nan") if step >= seen["steps_per_epoch"] else real(self, step, total_steps)

    monkeypatch.setattr(TrainConfig, "learning_rate", learning_rate)
    yield seen


def test_a_loss_that_becomes_nan_in_epoch_2_keeps_epoch_1_and_resumes(
    files, reference, tmp_path, monkeypatch, capsys, poisoned_second_epoch
):
    run = tmp_path / "run"
    assert cli.main(_args(files, run)) == 1
    err = capsys.readouterr().err
    first_bad_step = poisoned_second_epoch["steps_per_epoch"] + 1
    assert f"loss became nan at epoch 2, step {first_bad_step}" in err and "Traceback" not in err, err
    assert _assert_loadable(run) == "epoch-0001"  # finite weights: the poisoned ones were never saved
    assert not (run / "config.json").exists()  # no final model pretends the run finished
    monkeypatch.undo()  # the cause is fixed (a lower learning rate, say)
    _resume_and_compare(run, files, reference, "after NaN", capsys)
