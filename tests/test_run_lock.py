"""Classes 2 and 4 of issue 33: a run is a locked, self-contained folder, and nothing a run
started outlives it.

- one writer at a time (a lock file beside the run, with stale-lock detection);
- every file written into a run is created new and renamed in place: a symbolic link planted
  in the run is replaced, and the file it pointed at is untouched;
- `--overwrite` replaces only a run (or an empty folder), and only once the new run has a
  checkpoint; `export --overwrite` keeps the old file when the new one fails its check;
- `evaluate` on a run still training says so;
- the processes the `--nproc` launcher starts die with it, even on `kill -9`.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnncore import bundle, cli, staging
from rnncore.data import load_bundled
from rnncore.train import lock as run_lock_module
from rnncore.train.lock import RunLockedError, lock_path, run_lock
from rnncore.train.run import RunError, check_run_folder

SPEC = {
    "input": {"kind": "features", "feature_dim": 8},
    "encoder": {"cell": "gru", "hidden_size": 8},
    "pooling": "last",
    "head": {"num_outputs": 10},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lock")
    digits = load_bundled("digits").subset(np.arange(60))
    np.savez(root / "digits.npz", x=digits.x, y=digits.y)
    (root / "spec.json").write_text(json.dumps(SPEC))
    return {"data": root / "digits.npz", "spec": root / "spec.json"}


def _train(files: dict[str, Path], out: Path, *extra: str) -> int:
    args = ["train", "--task", "sequence-classification", "--data", str(files["data"]), "--spec",
            str(files["spec"]), "--out", str(out), "--quiet", "--batch-size", "16", *extra]  # fmt: skip
    return cli.main(args)


@pytest.fixture(scope="module")
def trained(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    assert _train(files, out, "--epochs", "1") == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    return copy


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _hold(run: Path, pid: int, host: str | None = None) -> Path:
    path = lock_path(run)
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": time.time()}))
    return path


# ---- staged writes -------------------------------------------------------------------------
def test_a_staged_write_replaces_a_link_and_leaves_its_target_alone(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "history.json").symlink_to(outside)
    staging.write_text(folder / "history.json", "new")
    assert outside.read_text() == "keep me"
    assert not (folder / "history.json").is_symlink() and (folder / "history.json").read_text() == "new"


def test_a_failed_staged_write_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), staging.staged(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed half-way")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# ---- the lock ------------------------------------------------------------------------------
def test_one_holder_at_a_time_and_the_lock_goes_when_done(tmp_path):
    run = tmp_path / "run"
    with run_lock(run) as me:
        assert run_lock_module.holder(run) == me
        with (
            pytest.raises(RunLockedError, match=rf"process {os.getpid()} on .* is writing it"),
            run_lock(run),
        ):
            pass
    assert not lock_path(run).exists()
    with run_lock(run):  # free again
        pass


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _hold(run, gone.pid)
    assert run_lock_module.holder(run) is None
    with run_lock(run) as me:
        assert me.pid == os.getpid()


def test_a_lock_from_another_host_is_refused_naming_the_file_to_remove(tmp_path):
    run = tmp_path / "run"
    path = _hold(run, 12345, host="another-machine")
    with (
        pytest.raises(RunLockedError, match=rf"process 12345 on another-machine.*remove {path}"),
        run_lock(run),
    ):
        pass


def test_a_lock_being_written_right_now_is_not_taken_over(tmp_path):
    run = tmp_path / "run"
    lock_path(run).write_text("")  # created, its holder not yet written
    with pytest.raises(RunLockedError, match="another process is taking its lock"), run_lock(run):
        pass


def test_train_and_resume_refuse_a_run_another_process_writes(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    sleeper = _sleeper()
    try:
        _hold(run, sleeper.pid)
        for extra in (["--resume"], ["--overwrite"], []):
            assert cli.main(["train", "--out", str(run), *extra]) == 2
            err = capsys.readouterr().err
            assert f"process {sleeper.pid}" in err and "is writing it" in err and "Traceback" not in err, err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(run.iterdir()) == []


def test_evaluate_on_a_run_still_training_says_so(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    (run / bundle.CONFIG).unlink()  # as during a first training: no final model yet
    sleeper = _sleeper()
    try:
        _hold(run, sleeper.pid)
        assert cli.main(["evaluate", str(run)]) == 2
        err = capsys.readouterr().err
        assert "is still training" in err and f"process {sleeper.pid}" in err and "checkpoints" in err, err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cli.main(["evaluate", str(run)]) == 2  # no holder: the plain reason again
    assert "has no config.json" in capsys.readouterr().err


# ---- --overwrite ---------------------------------------------------------------------------
def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    assert cli.main(["train", "--out", str(folder), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not one" in err and "Traceback" not in err, err
    assert (folder / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="not one"):
        check_run_folder(tmp_path / "file", overwrite=True, resume=False)
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty", overwrite=True, resume=False)  # an empty folder may go


def test_overwrite_keeps_the_old_run_when_the_new_one_fails_before_its_first_checkpoint(
    files, trained, tmp_path, capsys
):
    run = _copy(trained, tmp_path)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    config = tmp_path / "train.json"  # mse is measured for regression only: fails after epoch 1
    config.write_text(json.dumps({"early_stopping_patience": 2, "early_stopping_metric": "mse"}))
    assert _train(files, run, "--overwrite", "--config", str(config)) == 2
    assert "early_stopping_metric 'mse' is not measured" in capsys.readouterr().err
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "train.json"]  # no leftovers


def test_overwrite_replaces_a_run_once_the_new_one_has_a_checkpoint(files, trained, tmp_path):
    run = _copy(trained, tmp_path)
    old_weights = bundle.load_weights_and_spec(run)[1]
    assert _train(files, run, "--overwrite", "--epochs", "2", "--seed", "3") == 0
    info = json.loads((run / "run.json").read_text())
    assert info["train"]["epochs"] == 2 and info["train"]["seed"] == 3
    new_weights = bundle.load_weights_and_spec(run)[1]
    assert any(not np.array_equal(old_weights[k], new_weights[k]) for k in old_weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert not lock_path(run).exists()


# ---- links planted in a run ----------------------------------------------------------------
def test_resume_never_writes_through_a_link_planted_in_the_run(files, trained, tmp_path):
    run = _copy(trained, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for name in ("run.json", "history.json", "history.png"):
        (outside / name).write_text(f"not yours: {name}")
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(outside / name)
    assert _train(files, run, "--resume", "--epochs", "2") == 0
    for name in ("run.json", "history.json", "history.png"):
        assert (outside / name).read_text() == f"not yours: {name}"
        assert not (run / name).is_symlink(), name
    assert len(json.loads((run / "history.json").read_text())["epochs"]) == 2


# ---- export --overwrite --------------------------------------------------------------------
def test_a_failed_export_overwrite_keeps_the_previous_file(trained, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    export_module = importlib.import_module("rnncore.export")  # the package exports a function of that name
    from rnncore.tolerances import Diff

    target = tmp_path / "model.ts"
    target.write_bytes(b"the previous, checked export")
    model = bundle.load(trained, backend="torch")

    def failing(actual, expected, *args, **kwargs):
        return Diff(max_abs=1.0, max_rel=1.0, ok=False)

    monkeypatch.setattr(export_module, "compare", failing)
    with pytest.raises(
        export_module.ExportError, match=r"the new export was discarded and .*model\.ts is unchanged"
    ):
        export_module.export(model, target, "torchscript", overwrite=True)
    assert target.read_bytes() == b"the previous, checked export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ts"]
    monkeypatch.undo()
    result = export_module.export(model, target, "torchscript", overwrite=True)
    assert result.diff.ok and target.read_bytes() != b"the previous, checked export"


def test_export_overwrite_refuses_to_replace_a_folder_with_a_file(trained, tmp_path):
    export_module = importlib.import_module("rnncore.export")  # the package exports a function of that name

    folder = tmp_path / "model.onnx"
    folder.mkdir()
    (folder / "keep").write_text("x")
    with pytest.raises(export_module.ExportError, match="not a file; refusing"):
        export_module.export(bundle.load(trained, backend="torch"), folder, "onnx", overwrite=True)
    assert (folder / "keep").read_text() == "x"


# ---- process groups ------------------------------------------------------------------------
LAUNCHER = """
import os, sys
from rnncore.train.distributed import run_processes
note = "import os, time; open(os.environ['PIDFILE'], 'w').write(str(os.getpid())); time.sleep(120)"
child = [sys.executable, "-c", note]
sys.exit(run_processes([(child, dict(os.environ))]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_process_the_launcher_started_dies_with_it_on_kill_9(tmp_path):
    pidfile = tmp_path / "child.pid"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], env={**os.environ, "PIDFILE": str(pidfile)})
    deadline = time.monotonic() + 60
    while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pidfile.read_text())
    launcher.send_signal(signal.SIGKILL)  # no chance to clean up: only the kernel's signal helps
    launcher.wait()
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child), "the launched process outlived its launcher"


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return status != "Z"  # a zombie has exited; only its parent (init here) has to reap it


# ---- damaged checkpoints -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda c: (c / "state.json").write_text("[]"), ["state.json", "integer epoch"]),
        (lambda c: (c / "state.json").write_text('{"epoch": 1, "history": {"epochs": 3}}'), ["state.json"]),
        (lambda c: (c / "state.json").write_text('{"epoch": "1", "history": {}}'), ["state.json"]),
        (lambda c: (c / "state.json").write_text("{" * 5000), ["state.json", "not valid JSON"]),
        (lambda c: (c / "optimizer.safetensors").write_bytes(b"\x00" * 3), ["optimizer.safetensors"]),
    ],
    ids=["a list", "history not a list", "epoch a string", "not JSON", "optimizer truncated"],
)
def test_resume_refuses_a_damaged_checkpoint_naming_the_file(files, trained, tmp_path, capsys, damage, words):
    run = _copy(trained, tmp_path)
    damage(run / "checkpoints" / "epoch-0001")
    assert _train(files, run, "--resume", "--epochs", "2") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)


def test_a_bundle_overwrite_replaces_only_a_bundle_or_an_empty_folder(tmp_path):
    def fill(folder: Path) -> None:
        (folder / bundle.CONFIG).write_text("{}")

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model bundle"):
        bundle.write_atomically(notes, fill, overwrite=True)
    assert (notes / "todo.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    bundle.write_atomically(tmp_path / "empty", fill, overwrite=True)
    bundle.write_atomically(tmp_path / "empty", fill, overwrite=True)  # now a bundle: replaced again
    assert (tmp_path / "empty" / bundle.CONFIG).is_file()
