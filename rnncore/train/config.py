"""The training config (`rnncore.train/1`) and the one definition of every update rule.

Both backends implement exactly the rules written here, so the same config, weights and
batches give the same weights after training on either stack. Where the frameworks differ
we pick one definition and write it down:

- learning rate: a Python float per step from `learning_rate(step)`, computed once in numpy
  and handed to the backend (no framework schedule objects);
- gradient clipping: global norm over all weights, as torch's `clip_grad_norm_`:
  g <- g * min(1, clip_norm / (||g||_2 + 1e-6)). (Keras' `clipnorm` clips each variable on
  its own; we do not use it);
- sgd: g <- g + wd * p; buf <- momentum * buf + g (buf = g on the first step);
  g <- g + momentum * buf (nesterov) or buf; p <- p - lr * g   (torch.optim.SGD);
- adam: g <- g + wd * p; m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
  p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)   (torch.optim.Adam:
  epsilon after bias correction; Keras' Adam adds it before, which we do not use);
- adamw: p <- p * (1 - lr * wd), then adam with wd = 0   (torch.optim.AdamW);
- dropout: the masks of update `step` come from `dropout_seed(seed, step)` (each framework
  draws its own masks from it, so the two stacks still draw different ones), so that a run is
  repeatable from its seed and a resumed run draws what the uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..jsonfile import read_json
from ..limits import bounded
from ..spec import SpecError

TRAIN_FORMAT = "rnncore.train/1"
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "linear_warmup", "cosine")
# What `rnncore.train.loop.evaluate` measures on the validation split, per task; early
# stopping watches one of them (a name it never measures would silently never stop).
EARLY_STOPPING_METRICS = ("accuracy", "macro_f1", "weighted_f1", "micro_f1", "log_loss", "mse",
                          "entity_precision", "entity_recall", "entity_f1")  # fmt: skip


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not a string such as "3", not NaN or infinity)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _positive(path: str, value: Any, integer: bool = False) -> None:
    if not _is_number(value) or (integer and not isinstance(value, int)) or value <= 0:
        expected = "positive integer" if integer else "finite number > 0"
        raise SpecError(path, f"got {bounded(value)}; expected a {expected}")


def _non_negative(path: str, value: Any, below_one: bool = False) -> None:
    if not _is_number(value) or value < 0 or (below_one and value >= 1):
        upper = "1)" if below_one else "inf)"
        raise SpecError(path, f"got {bounded(value)}; expected a number in [0, {upper}")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a training run, explicit. Validated when created."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    epochs: int = 5
    batch_size: int = 32
    max_len: int = 128
    seed: int = 0
    early_stopping_patience: int | None = None
    early_stopping_metric: str = "accuracy"

    def __post_init__(self) -> None:
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("early_stopping_metric", EARLY_STOPPING_METRICS)):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                expected = "one of " + ", ".join(allowed)
                raise SpecError(f"train.{name}", f"got {bounded(value)}; expected {expected}")
        if not isinstance(self.nesterov, bool):
            raise SpecError("train.nesterov", f"got {bounded(self.nesterov)}; expected true or false")
        _positive("train.lr", self.lr)
        _non_negative("train.momentum", self.momentum, below_one=True)
        _non_negative("train.beta1", self.beta1, below_one=True)
        _non_negative("train.beta2", self.beta2, below_one=True)
        _positive("train.eps", self.eps)
        _non_negative("train.weight_decay", self.weight_decay)
        if self.clip_norm is not None:
            _positive("train.clip_norm", self.clip_norm)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise SpecError("train.nesterov", "only for optimizer 'sgd' with momentum > 0")
        if self.momentum and self.optimizer != "sgd":
            raise SpecError("train.momentum", f"only for optimizer 'sgd'; {self.optimizer} uses beta1")
        for name in ("epochs", "batch_size", "max_len"):
            _positive(f"train.{name}", getattr(self, name), integer=True)
        for name in ("warmup_steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"train.{name}", f"got {bounded(value)}; expected an integer >= 0")
        if self.early_stopping_patience is not None:
            _positive("train.early_stopping_patience", self.early_stopping_patience, integer=True)

    def learning_rate(self, step: int, total_steps: int) -> float:
        """The learning rate for 0-based `step` of `total_steps`."""
        lr = self.lr
        if self.warmup_steps and step < self.warmup_steps:
            return lr * (step + 1) / self.warmup_steps
        if self.schedule == "cosine":
            decay_steps = max(1, total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / decay_steps)
            return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr

    def to_dict(self) -> dict[str, Any]:
        return {"format": TRAIN_FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        if not isinstance(data, Mapping):
            raise SpecError("train", f"got {bounded(data)}; expected an object of training settings")
        data = dict(data)
        fmt = data.pop("format", TRAIN_FORMAT)
        if fmt != TRAIN_FORMAT:
            raise SpecError("train.format", f"got {fmt!r}; expected {TRAIN_FORMAT!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise SpecError(f"train.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_json(Path(path), lambda message: SpecError("train", message)))

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A copy with the given fields changed; None values are ignored (CLI flags not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def dropout_seed(seed: int, step: int, stream: int = 0) -> int:
    """The seed of update `step`'s dropout masks in a run of `seed` (`stream`: one per dropout
    layer where a framework seeds each layer on its own). Mixed through numpy's `SeedSequence`,
    so that nearby seeds and steps give unrelated masks."""
    state = np.random.SeedSequence([seed, step, stream]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1  # below 2**63: any framework's int64 seed takes it
