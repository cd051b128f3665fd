"""Training on several processes with the frameworks' own engines, written once.

PyTorch runs DistributedDataParallel under `torchrun`; TensorFlow runs
MultiWorkerMirroredStrategy, one process per worker, configured by `TF_CONFIG`. Neither
engine is re-implemented here: this module only decides which rows each process trains on
(`Shard`), starts the processes (`torchrun_command`, `local_tf_jobs`, `run_processes`) and
asks the backend for its worker side (`start_worker`). Nothing here imports a framework.

The update rule stays the one-process rule. Every process forms the same global batches as
a one-process run (same bucketing, same seed), takes its share of each, and weights its loss
so that the engine's cross-process *mean* of the gradients equals the one-process gradient
of the whole global batch; clipping and the optimizer step then run on that mean.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .losses import IGNORE_INDEX

if TYPE_CHECKING:
    from .config import TrainConfig
    from .loop import Encoded

# Set by the launchers in every process they start: the `rnncore` arguments (JSON) that
# process runs as one worker. Not on torchrun's command line: torchrun's own parser would
# take `--nproc` or `--node-rank` there for abbreviations of its options.
WORKER_ENV = "RNNCORE_WORKER_ARGV"
WORKER_PROGRAM = ("-m", "rnncore.train.distributed")
LOOPBACK = "127.0.0.1"
# What a stuck collective (a peer that died) may wait before it fails, by default.
DEFAULT_TIMEOUT_S = 1800.0


# ---- which rows each process trains on -------------------------------------------------------
def loss_units(data: Encoded, index: np.ndarray) -> int:
    """What the loss of rows `index` averages over: rows, or valid tokens for per-step targets.

    (Multilabel and regression losses average over rows x outputs; the outputs are the same
    for every row, so rows are the right count for the split too.)
    """
    if not data.per_step:
        return len(index)
    targets, lengths = data.targets[index], data.lengths[index]
    valid = (np.arange(targets.shape[1])[None, :] < lengths[:, None]) & (targets != IGNORE_INDEX)
    return int(valid.sum())


@dataclass(frozen=True)
class Shard:
    """Process `rank` of `world_size`: its part of each global batch and the weight of its loss."""

    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world_size} processes")

    def split(self, data: Encoded, index: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's rows of the global batch `index`, and the weight of its (mean) loss.

        Rows are dealt round robin (rank r takes rows r, r + W, ...): a bucketed batch is
        sorted by length, so every rank gets rows of about the same lengths and no rank waits
        long at the gradient all-reduce. Every row goes to exactly one rank; none is dropped.

        The weight is W * units_r / units (units: rows, or valid tokens for tagging). The
        engines average gradients over the W ranks, so the mean of weight_r * grad(mean loss
        of rank r) is grad(sum of all per-unit losses) / units: the one-process gradient of the
        whole global batch, also when the batch does not divide evenly.

        A rank left without rows (a last batch smaller than W) still has to join the
        all-reduce, or the others wait forever: it trains on a stand-in row with weight 0,
        which adds exactly nothing to the mean.
        """
        parts = [index[r :: self.world_size] for r in range(self.world_size)]
        mine = parts[self.rank]
        if len(mine) == 0:
            return index[:1], 0.0
        units = [loss_units(data, part) for part in parts]
        total = sum(units)
        # no valid token in the whole batch: the one-process loss is 0 and so is its gradient
        weight = self.world_size * units[self.rank] / total if total else 0.0
        return mine, weight


class Worker(Protocol):
    """One process of a distributed run, as a backend sets it up (`start_distributed`)."""

    rank: int
    world_size: int

    @property
    def shard(self) -> Shard: ...

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Build the model inside this (TensorFlow: the strategy's scope, so its variables are mirrored)."""
        ...

    def make_trainer(self, model: Any, config: TrainConfig) -> Any:
        """A trainer whose `step(inputs, lengths, targets, lr, weight)` averages gradients across ranks."""
        ...

    def close(self, finished: bool = False) -> None: ...


@contextlib.contextmanager
def joined(worker: Worker | None) -> Iterator[Worker | None]:
    """Run the body as `worker`'s part of its run, then leave the run (nothing for None).

    The worker learns whether the body finished: only then does it wait for the other ranks
    before leaving (a rank that raised must not wait at that barrier for ranks that may never
    come; it leaves at once and the launcher ends the rest).
    """
    finished = False
    try:
        yield worker
        finished = True
    finally:
        if worker is not None:
            worker.close(finished)


def start_worker(
    backend: str, timeout_s: float = DEFAULT_TIMEOUT_S, die_with_parent: bool = False, device: str = "auto"
) -> Worker:
    """Join the run this process was started for (torchrun's environment, or TF_CONFIG).

    Call it first: TensorFlow's multi-worker strategy must exist before any other TensorFlow
    work in the process. `die_with_parent` (for processes a launcher started) makes the
    process die with its launcher (Linux), so a killed launch leaves no worker behind.
    `device` is auto, cpu or cuda: with a GPU, each process takes one (see `worker_device`).
    """
    from ..registry import get_backend

    if die_with_parent:
        _die_with_parent(signal.SIGKILL)
    worker: Worker = get_backend(backend).start_distributed(timeout_s, worker_device(device))
    return worker


def worker_device(requested: str) -> str:
    """`requested` for one process of a distributed run: auto, cpu or cuda. A process takes the
    GPU its launcher gives it (its local rank's), so one GPU index for every process is refused."""
    from ..device import DeviceError, parse_device

    device = parse_device(requested)
    if device.index is not None:
        raise DeviceError(
            f"device {device}: in a run of several processes each takes the GPU of its local rank; "
            "use --device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose which GPUs"
        )
    return device.kind


def _die_with_parent(signum: int) -> None:
    """Ask Linux to send this process `signum` when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signum)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _child_dies_with_launcher() -> None:
    """Run in each launched child between fork and exec (the death signal survives exec).

    torchrun itself is no rnncore process: without this, `kill -9` of the launcher left it
    and its workers training and writing the run. SIGTERM, not SIGKILL: torchrun then stops
    its workers itself (and they have their own death signal, SIGKILL, for torchrun)."""
    _die_with_parent(signal.SIGTERM)


# ---- starting the processes ------------------------------------------------------------------
def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct ports free on `host` now (the OS picks them; all held until all are picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def loopback_interface() -> str | None:
    """The name of the loopback network interface ('lo' on Linux, 'lo0' on macOS), if any."""
    with contextlib.suppress(OSError, AttributeError):
        for _, name in socket.if_nameindex():
            if name.startswith("lo"):
                return name
    return None


def torchrun_command(
    program: Sequence[str],
    *,
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = LOOPBACK,
    master_port: int = 29500,
) -> list[str]:
    """`python -m torch.distributed.run ... PROGRAM` (torchrun, static rendezvous at the master)."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc-per-node={nproc}", f"--nnodes={nnodes}", f"--node-rank={node_rank}",
        f"--master-addr={master_addr}", f"--master-port={master_port}", "--max-restarts=0",
        *program,
    ]  # fmt: skip


def worker_env(argv: Sequence[str]) -> dict[str, str]:
    """This environment, plus the `rnncore` arguments that `WORKER_PROGRAM` runs."""
    return {**os.environ, WORKER_ENV: json.dumps(list(argv))}


def torch_env(env: Mapping[str, str], nproc: int, local: bool) -> dict[str, str]:
    """`env` for torchrun and its workers.

    Each process gets an equal share of the cores (torchrun alone would give each one
    thread). On one machine gloo talks over the loopback interface only: without
    GLOO_SOCKET_IFNAME it uses the address the host name resolves to, which may be a real
    network interface even when every process is on this machine. Values already set win.
    """
    env = dict(env)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    name = loopback_interface() if local else None
    if name is not None:
        env.setdefault("GLOO_SOCKET_IFNAME", name)
    return env


def tf_config(ports: Sequence[int], index: int, host: str = LOOPBACK) -> str:
    """TF_CONFIG for worker `index` of a cluster of workers at `host:port`."""
    workers = [f"{host}:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def tf_cluster_size(config: str) -> int:
    """How many replicas (chief + workers) a TF_CONFIG describes."""
    try:
        cluster = json.loads(config)["cluster"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster': {config!r}") from None
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def local_tf_jobs(
    program: Sequence[str], workers: int, env: Mapping[str, str] | None = None
) -> list[tuple[list[str], dict[str, str]]]:
    """One command and environment (`env` + TF_CONFIG) per local worker, on free ports of 127.0.0.1."""
    ports = free_ports(workers)
    base = dict(os.environ if env is None else env)
    return [([sys.executable, *program], {**base, "TF_CONFIG": tf_config(ports, i)}) for i in range(workers)]


def run_processes(jobs: Sequence[tuple[list[str], dict[str, str]]], grace_s: float = 10.0) -> int:
    """Run every job to the end; the exit code of the first that fails, else 0.

    When one process fails the others are stopped: they would otherwise wait for it at the
    next all-reduce. Ctrl-C or SIGTERM to this process stops them all too (SIGTERM, then
    SIGKILL after `grace_s`), so nothing outlives the launch.
    """
    processes: list[subprocess.Popen[bytes]] = []
    with _sigterm_as_interrupt():
        try:
            for command, env in jobs:
                processes.append(subprocess.Popen(command, env=env, preexec_fn=_child_dies_with_launcher))
            return _wait_all(processes)
        finally:
            _stop(processes, grace_s)


def _wait_all(processes: Sequence[subprocess.Popen[bytes]]) -> int:
    while True:
        codes = [p.poll() for p in processes]
        failed = next((code for code in codes if code not in (None, 0)), None)
        if failed is not None:
            return 128 - failed if failed < 0 else failed  # killed by signal N: the shell's 128 + N
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.1)


def _stop(processes: Sequence[subprocess.Popen[bytes]], grace_s: float) -> None:
    alive = [p for p in processes if p.poll() is None]
    for process in alive:
        process.terminate()
    deadline = time.monotonic() + grace_s
    for process in alive:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while launching, so `finally` stops the children."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def worker_main() -> int:
    """What every launched process runs: `rnncore` with the launcher's arguments, as a worker
    (its own process, so it sets the allocator up as the `rnncore` command does)."""
    from ..cli import main
    from ..memory import keep_freed_memory

    keep_freed_memory()
    return main(json.loads(os.environ[WORKER_ENV]))


if __name__ == "__main__":
    sys.exit(worker_main())
