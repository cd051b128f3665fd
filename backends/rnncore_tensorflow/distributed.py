"""One worker of a MultiWorkerMirroredStrategy run, configured by TF_CONFIG.

tf.distribute does the gradient exchange: each worker computes the gradients of its rows in
the strategy's replica context, a cross-replica all-reduce (collective ops over gRPC; ring
on CPUs) averages them, every replica clips the averaged gradient, and the update of
`Trainer` (the same code, op for op) runs on each worker's copy of the mirrored variables
through `strategy.extended.update`, as Keras' own optimizers do under a strategy.

One replica per worker (a CPU, or one GPU per worker process): the loop hands each process
its own rows, which is what `strategy.run` feeds a worker's single replica.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import tensorflow as tf

from rnncore.device import resolve_device
from rnncore.train.config import TrainConfig
from rnncore.train.distributed import Shard
from rnncore.train.losses import check_training_batch

from .device import FRAMEWORK, gpu_count, use_device
from .runtime import dense
from .train import Trainer


def _step_signature(trainer: Trainer) -> list[tf.TensorSpec]:
    """The trainer's step signature (free batch and time sizes: one trace, the same on every
    worker), plus the loss weight. Collective ops are matched across workers by the order in
    which traces create them; a worker that retraced for a new batch shape while another did
    not would wait for ever.
    """
    return [*trainer.signature, tf.TensorSpec([], tf.float64)]


class DistributedTrainer(Trainer):
    """`Trainer` whose slots live in the strategy and whose gradients are averaged across workers."""

    def __init__(self, model: Any, config: TrainConfig, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        with strategy.scope():  # slots and step count become mirrored variables
            super().__init__(model, config)
        self._distributed_fn: Any = None

    def step(
        self, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray, lr: float, weight: float = 1.0
    ) -> float:
        """One update on this worker's rows; returns the loss of the whole global batch."""
        inputs, lengths, targets = check_training_batch(self.spec, inputs, lengths, targets)
        if self._distributed_fn is None:
            self._distributed_fn = tf.function(self._distributed_step, input_signature=_step_signature(self))
        args = self._tensors(inputs, lengths, targets, lr)
        self._seed_dropout()  # every worker sets the same seed states (mirrored variables)
        loss = self._distributed_fn(*args, tf.constant(weight, tf.float64))
        return float(loss.numpy())

    def _distributed_step(self, x: Any, lengths: Any, targets: Any, lr: Any, weight: Any) -> Any:
        loss, grads = self.strategy.run(self._replica_step, args=(x, lengths, targets, weight))
        self._apply(list(grads), lr)  # cross-replica context: the update runs per replica copy
        return self.strategy.experimental_local_results(loss)[0]

    def _replica_step(self, x: Any, lengths: Any, targets: Any, weight: Any) -> tuple[Any, list[Any]]:
        """This replica's weighted gradients, averaged with every other replica's, then clipped."""
        loss, grads = self._gradients(x, lengths, targets, weight)
        grads = dense(grads)  # the all-reduce sums dense tensors
        weighted = loss * tf.cast(weight, loss.dtype)
        context = tf.distribute.get_replica_context()
        # one batched all-reduce: the gradients, and the loss for the history
        reduced = context.all_reduce(tf.distribute.ReduceOp.MEAN, [weighted, *grads])
        return reduced[0], self._clipped(list(reduced[1:]))

    def _update_variable(self, i: int, update: Any, grad: Any, lr: Any) -> None:
        var = self.variables[i]
        # Inside `extended.update`, reads and writes of mirrored variables (this one, its slots,
        # the step count) go to this replica's copy, so `update` is Trainer's code unchanged.
        self.strategy.extended.update(
            var.value, lambda _, g: update(i, var, g, lr), args=(grad,), group=False
        )


def _rank(resolver: Any) -> int:
    """This worker's replica id: the chief (if any) is 0, then the workers in order."""
    jobs = resolver.cluster_spec().jobs
    if resolver.task_type == "chief":
        return 0
    return int(resolver.task_id) + (1 if "chief" in jobs else 0)


class Worker:
    """This process's place in the TF_CONFIG cluster: strategy, rank, shard, trainer."""

    def __init__(self, timeout_s: float):
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO,
            timeout_seconds=timeout_s,
        )
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )
        devices = self.strategy.extended.worker_devices
        if len(devices) != 1:
            raise RuntimeError(
                f"this worker has {len(devices)} replicas ({', '.join(devices)}); rnncore runs one "
                "replica per worker: start one worker per GPU (CUDA_VISIBLE_DEVICES)"
            )
        self.world_size = int(self.strategy.num_replicas_in_sync)
        self.rank = _rank(resolver) if self.world_size > 1 else 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return self.strategy.scope()

    def make_trainer(self, model: Any, config: TrainConfig) -> DistributedTrainer:
        return DistributedTrainer(model, config, self.strategy)

    def close(self, finished: bool = False) -> None:
        """Nothing to release: TensorFlow shuts the collective service down at exit."""


def start_distributed(timeout_s: float, device: str = "auto") -> Worker:
    """Join the cluster TF_CONFIG describes (must run before any other TensorFlow work);
    `device` cpu hides the GPUs first (auto and cuda leave them to TensorFlow: one per worker)."""
    resolve_device(device, gpu_count(), FRAMEWORK)  # cuda without a GPU: refused here
    use_device(device)
    return Worker(timeout_s)
