"""Training: one config and one set of update rules, implemented by every backend."""

from .config import OPTIMIZERS, SCHEDULES, TRAIN_FORMAT, TrainConfig
from .losses import LOSSES, loss_name

__all__ = ["LOSSES", "OPTIMIZERS", "SCHEDULES", "TRAIN_FORMAT", "TrainConfig", "loss_name"]
