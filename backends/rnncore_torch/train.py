"""Training steps on torch with the update rules of `rnncore.train.config` (torch.optim's own).

A trainer flushes denormal floats to zero on the CPU (`torch.set_flush_denormal`, for the whole
process), as TensorFlow does on its own: training drives RNN gradients and optimizer slots into
the denormal range (below 1.2e-38 in float32), where x86 arithmetic is many times slower (an
RNN 2-layer step slowed from 61 to 113 ms within 48 steps of one repeated batch, unflushed). The
values flushed are far below every training tolerance, and both backends then agree on them.

Optimizer state is exchanged in canonical names (`<weight>/exp_avg`, `<weight>/exp_avg_sq`,
`<weight>/momentum_buffer`, plus `step`), so a checkpoint written here resumes on Keras.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from rnncore.train.config import TrainConfig, dropout_seed
from rnncore.train.losses import CRF_LOSS, IGNORE_INDEX, check_training_batch, loss_name
from rnncore.weights import Weights

from .convert import parameter_map
from .model import RnnModel

_SLOTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq")}


def _optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )  # fmt: skip
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(
        params, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
        weight_decay=config.weight_decay,
    )  # fmt: skip


def compute_loss(
    model: RnnModel, outputs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    name = loss_name(model.spec)
    if name == "cross_entropy":
        return F.cross_entropy(outputs, targets)
    if name == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(outputs, targets)
    if name == "mean_squared_error":
        return F.mse_loss(outputs, targets)
    steps = targets.shape[1]
    positions = torch.arange(steps, device=targets.device)
    valid = (positions[None, :] < lengths.to(targets.device)[:, None]) & (targets != IGNORE_INDEX)
    if name == CRF_LOSS:  # the chain of labelled steps (`rnncore.train.losses.labelled_first`)
        assert model.crf is not None
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
        emissions = outputs.gather(1, order[:, :, None].expand(-1, -1, outputs.shape[2]))
        counts = valid.sum(dim=1)
        ll = model.crf.log_likelihood(emissions, targets.gather(1, order), counts.clamp(min=1))
        return -(ll * (counts > 0)).sum() / counts.sum().clamp(min=1)
    per_step = F.cross_entropy(outputs.transpose(1, 2), torch.where(valid, targets, 0), reduction="none")
    return (per_step * valid).sum() / valid.sum().clamp(min=1)


class Trainer:
    """One model, one optimizer; `step` runs forward, backward, clipping and the update."""

    def __init__(self, model: RnnModel, config: TrainConfig):
        self.model, self.config = model, config
        paths = dict(model.named_parameters())
        # canonical name -> trainable parameter (LSTM/RNN bias_hh is frozen and not here)
        self.params = {canonical: paths[path] for canonical, path in parameter_map(model.spec)}
        self.optimizer = _optimizer(list(self.params.values()), config)
        torch.set_flush_denormal(True)  # see the module's docstring (False where the CPU cannot)
        self.steps = 0  # torch's SGD keeps no step count of its own
        # what runs the forward pass: the model, or a DistributedDataParallel wrapper of it
        self.forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = model

    def step(self, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray, lr: float) -> float:
        model = self.model
        inputs, lengths, targets = check_training_batch(model.spec, inputs, lengths, targets)
        model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        device = next(iter(self.params.values())).device
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(device)
        lens = torch.from_numpy(np.ascontiguousarray(lengths))  # stays on the CPU, as packing wants
        y = torch.from_numpy(np.ascontiguousarray(targets)).to(device)
        self.optimizer.zero_grad(set_to_none=True)
        with self._dropout_masks(device):
            loss = compute_loss(model, self.forward(x, lens), y, lens)
        self._backward(loss)
        if self.config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.config.clip_norm, foreach=False)
        self.optimizer.step()
        self.steps += 1
        return float(loss.detach())

    def _dropout_masks(self, device: torch.device) -> contextlib.AbstractContextManager[None]:
        """Where the forward pass draws its dropout masks: from `dropout_seed(seed, step)`, so
        that a run repeats from its seed and a resumed run draws what the uninterrupted one
        would (torch's own generator starts from a random seed in every process). The global
        generator is put back afterwards: a user's own draws are not disturbed."""
        spec = self.model.spec
        if spec.encoder.dropout == 0 and (spec.head is None or spec.head.dropout == 0):
            return contextlib.nullcontext()  # nothing drawn (the benchmarks' models)
        return _seeded(dropout_seed(self.config.seed, self.steps), device)

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_state(self) -> Weights:
        """Optimizer slots in canonical names, numpy copies; `step` is the update count."""
        state: Weights = {}
        for canonical, param in self.params.items():
            slots = self.optimizer.state.get(param, {})
            for slot in _SLOTS[self.config.optimizer]:
                value = slots.get(slot)
                state[f"{canonical}/{slot}"] = (
                    np.zeros(tuple(param.shape), dtype=self.model.spec.dtype)
                    if value is None
                    else value.detach().cpu().numpy().copy()
                )
        state["step"] = np.array(self.steps, dtype=np.int64)
        return state

    def load_optimizer_state(self, state: Weights) -> None:
        steps = int(np.asarray(state["step"]).ravel()[0])  # safetensors stores scalars as (1,)
        for canonical, param in self.params.items():
            slots: dict[str, torch.Tensor] = {}
            for slot in _SLOTS[self.config.optimizer]:
                value = torch.from_numpy(np.array(state[f"{canonical}/{slot}"]))
                slots[slot] = value.to(param.device, param.dtype)
            if self.config.optimizer != "sgd":
                slots["step"] = torch.tensor(float(steps))
            elif steps == 0 or self.config.momentum == 0:
                slots = {}  # torch starts the momentum buffer from the first gradient
            self.optimizer.state[param] = slots
        self.steps = steps


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def make_trainer(model: RnnModel, config: TrainConfig) -> Trainer:
    return Trainer(model, config)
