"""Training on several processes: torch DistributedDataParallel and TF MultiWorkerMirroredStrategy.

Two processes with global batch B must end where one process with batch B ends: the same
weights within 1e-5 relative (float32) after 20 steps, on both engines, and the engines must
agree with each other as closely. Everything runs on 127.0.0.1; every launched process runs
in its own session with a time limit and is killed (SIGTERM, then SIGKILL) when its test ends,
also when it fails; the workers also die with their launcher and give up on a collective after
`distributed_worker.TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import distributed_worker
import numpy as np
import pytest

import rnncore
from rnncore import cli
from rnncore.parity import random_batch
from rnncore.tolerances import assert_close
from rnncore.train import distributed
from rnncore.train.distributed import Shard
from rnncore.train.loop import Encoded, fit
from rnncore.train.losses import reference_loss

WORKER = str(Path(__file__).with_name("distributed_worker.py"))
LAUNCH_TIMEOUT_S = 300  # a whole launch, start-up included, on two busy cores
RTOL = 1e-5


# ---- the split, without processes -------------------------------------------------------------
def _tagging_data(rows: int, seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, size=rows)
    targets = np.where(rng.random((rows, 6)) < 0.3, -100, rng.integers(0, 3, size=(rows, 6)))
    return Encoded(np.ones((rows, 6), np.int64), lengths, targets, per_step=True)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("per_step", [False, True])
def test_shards_cover_each_batch_once_and_their_weighted_mean_is_the_batch_loss(world, per_step):
    """For every batch size, also smaller than the world: no row twice, none dropped, and
    mean over ranks of weight_r * (mean loss of rank r) == the batch's mean loss (the loss
    definition of `reference_loss`, masked tokens and all)."""
    spec = _spec("tagging" if per_step else "classification")
    rng = np.random.default_rng(1)
    for size in range(1, 10):
        data = _tagging_data(size, seed=size) if per_step else _class_data(size)
        index = rng.permutation(size)
        splits = [Shard(rank, world).split(data, index) for rank in range(world)]
        for rank, (rows, weight) in enumerate(splits):
            if rank < size:
                np.testing.assert_array_equal(rows, index[rank::world])  # round robin
            else:  # no row left for this rank: a stand-in row that counts for nothing
                assert weight == 0.0 and len(rows) == 1
        dealt = np.concatenate([rows for rows, _ in splits[:size]])
        assert sorted(dealt) == list(range(size))  # every row once
        logits = rng.normal(size=(size, 6, 3) if per_step else (size, 3))
        whole = reference_loss(spec, logits[index], *_targets_lengths(data, index))
        parts = [weight * reference_loss(spec, logits[rows], *_targets_lengths(data, rows))
                 for rows, weight in splits]  # fmt: skip
        mean = sum(parts) / world
        assert mean == pytest.approx(whole, rel=1e-12, abs=1e-12)


def _spec(task: str, dtype: str = "float32") -> rnncore.ModelSpec:
    return rnncore.ModelSpec.from_dict(
        {"input": {"kind": "tokens", "vocab_size": 12, "embedding_dim": 3, "padding_idx": 0},
         "encoder": {"cell": "lstm", "hidden_size": 3}, "pooling": "none" if task == "tagging" else "last",
         "head": {"num_outputs": 2 if task in ("multilabel", "regression") else 3, "task": task},
         "dtype": dtype}
    )  # fmt: skip


def _class_data(rows: int) -> Encoded:
    return Encoded(np.zeros((rows, 2, 2)), np.full(rows, 2), np.arange(rows) % 3)


def _targets_lengths(data: Encoded, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return data.targets[rows], data.lengths[rows]


@pytest.mark.parametrize("task", ["classification", "multilabel", "regression", "tagging"])
def test_weighted_rank_gradients_average_to_the_one_process_gradient(task):
    """What DDP and the strategy do with the weights: average weight_r * grad_r over ranks.

    On real torch losses (mean over rows, rows x outputs, or valid tokens), with a batch of 5
    on 2 ranks (3 + 2 rows): the average is the gradient of the whole batch.
    """
    import torch
    from rnncore_torch.train import compute_loss

    spec = _spec(task, "float64")
    x, lengths = random_batch(spec, batch=5, max_len=6, seed=3)
    targets = {
        "classification": x[:, 0] % 3,
        "multilabel": np.stack([x[:, 0] % 2, x[:, 0] // 7], axis=1).astype(np.float64),
        "regression": x[:, :2].astype(np.float64),
        "tagging": np.where(x % 5 == 0, -100, x % 3),
    }[task]
    data = Encoded(x, lengths, targets, per_step=task == "tagging")
    model = rnncore.build(spec, backend="torch", seed=0)

    def grads(rows: np.ndarray, weight: float) -> list[np.ndarray]:
        model.zero_grad()
        xs, ls, ys = data.batch(rows)
        lens = torch.from_numpy(ls)
        loss = compute_loss(model, model(torch.from_numpy(xs), lens), torch.from_numpy(ys), lens)
        (loss * weight).backward()
        return [p.grad.numpy().copy() for p in model.parameters() if p.grad is not None]

    index = np.arange(5)
    whole = grads(index, 1.0)
    per_rank = [grads(*Shard(rank, 2).split(data, index)) for rank in range(2)]
    for full, *parts in zip(whole, *per_rank, strict=True):
        np.testing.assert_allclose(np.mean(parts, axis=0), full, rtol=1e-12, atol=1e-14)


class _ClosingWorker:
    def __init__(self) -> None:
        self.closed: list[bool] = []

    def close(self, finished: bool = False) -> None:
        self.closed.append(finished)


def test_joined_waits_for_the_other_ranks_only_after_a_body_that_finished():
    """`close(finished=True)` makes a torch rank wait at a barrier: after an error it must not
    (the other ranks may never come), and the error must still reach the caller."""
    worker = _ClosingWorker()
    with distributed.joined(worker):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="broken batch"), distributed.joined(worker):  # type: ignore[arg-type]
        raise ValueError("broken batch")
    assert worker.closed == [True, False]
    with distributed.joined(None) as nobody:  # one process: nothing to leave
        assert nobody is None


def test_a_closed_torch_worker_leaves_no_data_parallel_wrapper_alive(monkeypatch):
    """After `close` no DistributedDataParallel (which holds the gloo group) may outlive the
    run: one left to the end of the process aborted it now and then (gloo's threads still ran
    while C++ tore down). A one-process group here; the collector is off so that only what
    `close` frees counts (the trainer sits in reference cycles)."""
    port = distributed.free_ports(1)[0]
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    spec, config, data, weights = distributed_worker.case()
    gc.disable()
    try:
        worker = distributed.start_worker("torch", 60.0)
        with distributed.joined(worker):
            model = rnncore.build(spec, backend="torch", weights=weights)
            trainer = worker.make_trainer(model, config)
            fit(model, data, config, trainer=trainer, progress=False, shard=worker.shard)
            wrapper = weakref.ref(trainer.forward)
            assert type(wrapper()).__name__ == "DistributedDataParallel"
            del model, trainer
        assert wrapper() is None
    finally:
        gc.enable()


# ---- launching -----------------------------------------------------------------------------------
@dataclass
class Launched:
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[list[str], dict[str, str], str], Launched]]:
    """Start a process in a session of its own, output to a log; at teardown end each session."""
    started: list[Launched] = []

    def start(command: list[str], env: dict[str, str], name: str) -> Launched:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        started.append(Launched(process, log))
        return started[-1]

    yield start
    for launched in started:
        _end_session(launched.process)


def _end_session(process: subprocess.Popen) -> None:
    """SIGTERM to the whole session (a launcher stops its workers), then SIGKILL what is left.

    torchrun's workers sit in sessions of their own; they die with torchrun (`start_worker`
    asks Linux for that), so ending torchrun's session ends them too.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # a session leader's pid is its process group's id
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)


def _finish(launched: list[Launched], deadline: float) -> None:
    for item in launched:
        try:
            code = item.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"a launch ran past {LAUNCH_TIMEOUT_S} s:\n{item.output()[-4000:]}")
        assert code == 0, f"exit code {code}:\n{item.output()[-4000:]}"


def _assert_same_weights(actual: dict, expected: dict, rtol: float = RTOL) -> float:
    """Every tensor within `rtol` relative to its largest entry; returns the largest such ratio."""
    worst = 0.0
    for name, want in expected.items():
        scale = float(np.abs(want).max())
        diff = float(np.abs(actual[name] - want).max())
        assert diff <= rtol * scale, f"{name}: max diff {diff:.2e}, largest entry {scale:.2e}"
        worst = max(worst, diff / scale)
    return worst


def test_two_processes_end_where_one_process_ends_on_both_engines(spawn, tmp_path):
    """20 steps of the shared case: DDP x2 == torch x1, MultiWorkerMirrored x2 == Keras x1,
    DDP x2 == MultiWorkerMirrored x2, weights and per-step losses, within 1e-5 relative."""
    out = {backend: tmp_path / f"{backend}.npz" for backend in ("torch", "tensorflow")}
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    torchrun = distributed.torchrun_command(
        [WORKER, "torch", str(out["torch"])], nproc=2, master_port=distributed.free_ports(1)[0]
    )
    launched = [spawn(torchrun, distributed.torch_env(os.environ, 2, local=True), "torchrun")]
    jobs = distributed.local_tf_jobs([WORKER, "tensorflow", str(out["tensorflow"])], 2)
    for i, (command, env) in enumerate(jobs):
        assert json.loads(env["TF_CONFIG"])["cluster"]["worker"][i].startswith("127.0.0.1:")
        launched.append(spawn(command, env, f"tf-worker-{i}"))
    # the one-process references, here, while the launches run
    single = {backend: distributed_worker.train(backend) for backend in ("torch", "tensorflow")}
    _finish(launched, deadline)

    start = distributed_worker.case()[3]
    two = {}
    for backend, (weights, losses) in single.items():
        saved = np.load(out[backend])
        assert int(saved["world_size"]) == 2
        assert len(losses) == len(saved["losses"]) == 20
        np.testing.assert_allclose(saved["losses"], losses, rtol=RTOL)  # the global batch's loss
        two[backend] = {name: saved[name] for name in weights}
        assert max(float(np.abs(weights[k] - start[k]).max()) for k in start) > 1e-2, "weights must move"
        _assert_same_weights(two[backend], weights)
    _assert_same_weights(two["tensorflow"], two["torch"])


def test_launch_stops_every_process_when_one_fails():
    """Without this, the survivors of a failed rank wait at the next all-reduce until timeout."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    failing = [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"]
    began = time.monotonic()
    jobs = [(sleeper, dict(os.environ)), (failing, dict(os.environ))]
    assert distributed.run_processes(jobs, grace_s=5) == 3
    assert time.monotonic() - began < 30


# ---- the command line ------------------------------------------------------------------------------
@pytest.fixture
def digits(digits_npz: Callable[[int], Path]) -> Path:
    return digits_npz(200)


def _args(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    # 160 training rows in global batches of 15: ten of 15 (8 + 7 on two ranks) and one of 10
    return ["train", "--task", "sequence-classification", "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), "--batch-size", "15", "--quiet", "--dist-timeout", "120",
            *extra]  # fmt: skip


def _launch_cli(spawn, args: list[str], name: str) -> str:
    launched = spawn([sys.executable, "-m", "rnncore", *args], dict(os.environ), name)
    _finish([launched], time.monotonic() + LAUNCH_TIMEOUT_S)
    return launched.output()


def _weights(run: Path) -> dict[str, np.ndarray]:
    return rnncore.get_weights(rnncore.load(run))


def test_cli_torch_checkpoints_resume_from_two_processes_on_one_and_back(spawn, digits, tmp_path):
    straight = tmp_path / "straight"
    assert cli.main(_args(digits, straight, 2)) == 0
    # two processes for epoch 1, one process resumes for epoch 2
    two_then_one = tmp_path / "two-then-one"
    log = _launch_cli(spawn, _args(digits, two_then_one, 1, "--nproc", "2"), "two")
    assert log.count("internal test split (10% of --data)") == 1, log  # rank 0 alone reports
    assert json.loads((two_then_one / "run.json").read_text())["processes"] == 2
    assert (two_then_one / "checkpoints" / "LATEST").read_text().strip() == "epoch-0001"
    assert len(json.loads((two_then_one / "history.json").read_text())["epochs"]) == 1
    assert cli.main(_args(digits, two_then_one, 2, "--resume")) == 0
    # one process for epoch 1, two resume for epoch 2
    one_then_two = tmp_path / "one-then-two"
    assert cli.main(_args(digits, one_then_two, 1)) == 0
    _launch_cli(spawn, _args(digits, one_then_two, 2, "--nproc", "2", "--resume"), "resume-on-two")
    history = json.loads((one_then_two / "history.json").read_text())["epochs"]
    assert [r["epoch"] for r in history] == [1.0, 2.0]
    expected = _weights(straight)
    _assert_same_weights(_weights(two_then_one), expected)
    _assert_same_weights(_weights(one_then_two), expected)


def test_cli_tensorflow_workers_checkpoint_resumes_on_one_torch_process(spawn, digits, tmp_path):
    """Two TF workers train epoch 1; one torch process resumes their checkpoint for epoch 2
    and ends where an uninterrupted one-process torch run ends (the backends' training
    tolerance: this also crosses frameworks)."""
    straight = tmp_path / "straight"
    assert cli.main(_args(digits, straight, 2)) == 0
    run = tmp_path / "tf-workers"
    log = _launch_cli(spawn, _args(digits, run, 1, "--backend", "tensorflow", "--workers", "2"), "tf")
    assert log.count("internal test split (10% of --data)") == 1, log
    info = json.loads((run / "run.json").read_text())
    assert (info["backend"], info["processes"]) == ("tensorflow", 2)
    assert cli.main(_args(digits, run, 2, "--resume", "--backend", "torch")) == 0
    expected = _weights(straight)
    for name, value in _weights(run).items():
        assert_close(value, expected[name], "training", "float32")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--workers starts TensorFlow workers"),
        (["--backend", "tensorflow", "--nproc", "2"], "on TensorFlow use --workers"),
        (["--nnodes", "2"], "--master-addr"),
        (["--nnodes", "2", "--node-rank", "2", "--master-addr", "h"], "outside --nnodes 2"),
    ],
)
def test_cli_refuses_flags_that_do_not_fit_the_engine(digits, tmp_path, capsys, extra, message):
    assert cli.main(_args(digits, tmp_path / "run", 1, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_tf_config_of_another_size_is_refused(digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", distributed.tf_config([1111, 2222, 3333], 0))
    assert cli.main(_args(digits, tmp_path / "run", 1, "--backend", "tensorflow", "--workers", "2")) == 2
    assert "describes 3 workers" in capsys.readouterr().err


def test_cli_passes_machines_to_torchrun_and_keeps_one_machine_on_loopback(digits, tmp_path, monkeypatch):
    launched: list = []
    monkeypatch.setattr(distributed, "run_processes", lambda jobs: launched.append(jobs) or 0)
    several = ["--nproc", "4", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.1.2.3",
               "--master-port", "29400"]  # fmt: skip
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    assert cli.main(_args(digits, tmp_path / "a", 1, *several)) == 0
    assert cli.main(_args(digits, tmp_path / "b", 1, "--nproc", "2")) == 0
    assert cli.main(_args(digits, tmp_path / "c", 1, "--backend", "tf", "--workers", "3")) == 0
    [(command, env)], [(local, local_env)], tf_jobs = launched
    assert command[1:3] == ["-m", "torch.distributed.run"]
    for flag in ("--nproc-per-node=4", "--nnodes=2", "--node-rank=1", "--master-addr=10.1.2.3",
                 "--master-port=29400"):  # fmt: skip
        assert flag in command
    assert command[-2:] == list(distributed.WORKER_PROGRAM)
    assert json.loads(env[distributed.WORKER_ENV])[:1] == ["train"]  # the workers' arguments
    assert "GLOO_SOCKET_IFNAME" not in env  # several machines: gloo picks the real interface
    assert "--master-addr=127.0.0.1" in local and local_env.get("GLOO_SOCKET_IFNAME", "lo").startswith("lo")
    configs = [json.loads(job_env["TF_CONFIG"]) for _, job_env in tf_jobs]
    assert [c["task"]["index"] for c in configs] == [0, 1, 2]
    assert all(address.startswith("127.0.0.1:") for address in configs[0]["cluster"]["worker"])
    assert not (tmp_path / "a").exists()  # nothing ran: the launch was intercepted
