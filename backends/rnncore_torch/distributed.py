"""One process of a DistributedDataParallel run, started by torchrun.

torch.distributed does the gradient exchange: DistributedDataParallel averages the gradients
over the processes during `backward`, then every process clips the averaged gradient and
steps its own optimizer, so the update rule is `Trainer`'s, unchanged. gloo on CPUs, NCCL
when this process has a GPU (one per process, `LOCAL_RANK`).
"""

from __future__ import annotations

import contextlib
import gc
import os
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from rnncore.device import resolve_device
from rnncore.train.config import TrainConfig
from rnncore.train.distributed import Shard

from .device import FRAMEWORK, gpu_count
from .model import RnnModel
from .train import Trainer


class DistributedTrainer(Trainer):
    """`Trainer` with the forward pass through DistributedDataParallel and a weighted loss."""

    def __init__(self, model: RnnModel, config: TrainConfig, device_ids: list[int] | None = None):
        super().__init__(model, config)
        # parameters start equal on every rank (same seed or checkpoint); DDP broadcasts rank 0's
        self.forward = DistributedDataParallel(model, device_ids=device_ids)
        self.world_size = dist.get_world_size()
        self._weight = 1.0

    def step(
        self, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray, lr: float, weight: float = 1.0
    ) -> float:
        """One update on this rank's rows; returns the loss of the whole global batch.

        `weight` (from `Shard.split`) scales this rank's mean loss so that DDP's average of the
        gradients is the gradient of the whole global batch's mean loss.
        """
        self._weight = weight
        local = super().step(inputs, lengths, targets, lr)
        device = next(iter(self.params.values())).device
        total = torch.tensor(local * weight / self.world_size, dtype=torch.float64, device=device)
        dist.all_reduce(total)  # the loss only, for the history: every rank reports the same
        return float(total)

    def _backward(self, loss: torch.Tensor) -> None:
        (loss * self._weight).backward()  # DDP all-reduces the gradients here (mean over ranks)


class Worker:
    """This process's place in the torchrun job: process group, rank, shard, trainer."""

    def __init__(self, timeout_s: float, device: str = "auto"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device: torch.device | None = None
        # auto/cuda: this rank's GPU (cuda refused without one); cpu: gloo even beside GPUs
        if resolve_device(device, gpu_count(), FRAMEWORK).is_gpu:
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        backend = "nccl" if self.device is not None else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def make_trainer(self, model: RnnModel, config: TrainConfig) -> DistributedTrainer:
        if self.device is None:
            return DistributedTrainer(model, config)
        model.to(self.device)
        return DistributedTrainer(model, config, device_ids=[self.device.index])

    def close(self, finished: bool = False) -> None:
        """Leave the process group; `finished`: every rank got here without error, so wait for
        the others first (a rank tearing gloo down while another still finishes aborted the
        process at exit: "terminate called without an active exception")."""
        if dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()
        # DistributedDataParallel holds the gloo group, and a trainer that is gone is still in
        # reference cycles (frames kept from torch's optimizer constructor). Left to the end
        # of the process, gloo's threads still run while C++ tears down and the process aborts
        # ("terminate called without an active exception": 24 of 170 two-rank launches on two
        # busy cores). Collected here, they are freed while the interpreter is whole: 0 of 120.
        gc.collect()


def start_distributed(timeout_s: float, device: str = "auto") -> Worker:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment)."""
    return Worker(timeout_s, device)
