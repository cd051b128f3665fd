"""The training loop, written once: batches, learning rates, evaluation, early stopping.

The backend supplies only a trainer (`make_trainer(model, config)` with `.step(inputs,
lengths, targets, lr) -> loss`); everything that decides *what* is trained on, in which order
and with which learning rate lives here, so both stacks see identical batches and rates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import crf, metrics
from ..api import get_weights, predict, set_weights, spec_of
from ..data.splits import bucket_batches
from ..registry import backend_of
from ..weights import Weights
from .config import TrainConfig
from .losses import IGNORE_INDEX, labelled_first

if TYPE_CHECKING:
    from .distributed import Shard


@dataclass(frozen=True)
class Encoded:
    """A dataset as arrays: inputs (N, T) ids or (N, T, F) features, lengths (N,), targets.

    `per_step` says the targets are one label per step (tagging, `(N, T)`), so a batch cuts
    them with the inputs; it is stated, not guessed from shapes (a 2-class multilabel target
    of width T would look the same).
    """

    inputs: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    per_step: bool = False

    def __post_init__(self) -> None:
        if not len(self.inputs) == len(self.lengths) == len(self.targets):
            raise ValueError(
                f"inputs ({len(self.inputs)}), lengths ({len(self.lengths)}) and targets "
                f"({len(self.targets)}) must have one row per example"
            )
        if self.per_step and self.targets.shape[:2] != self.inputs.shape[:2]:
            raise ValueError(
                f"per-step targets have shape {self.targets.shape}; the inputs are {self.inputs.shape[:2]}"
            )

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows `index`, cut to the longest of them: bucketed batches then carry little padding."""
        lengths = self.lengths[index]
        steps = int(lengths.max())
        targets = self.targets[index]
        if self.per_step:
            targets = targets[:, :steps]
        return self.inputs[index, :steps], lengths, targets


@dataclass
class History:
    """Per-epoch records: mean training loss and validation metrics."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch, "stopped_early": self.stopped_early}


def predict_batched(model: Any, data: Encoded, batch_size: int = 256) -> np.ndarray:
    """Outputs for every row of `data`, in order, batched by similar length."""
    order = bucket_batches(data.lengths, batch_size, shuffle=False)
    outputs: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    steps = data.inputs.shape[1]
    for index in order:
        x, lengths, _ = data.batch(index)
        out = predict(model, x, lengths)
        if out.ndim == 3:  # per-step outputs: pad back to the full width
            out = np.pad(out, ((0, 0), (0, steps - out.shape[1]), (0, 0)))
        outputs.append(out)
        positions.append(index)
    result = np.concatenate(outputs)
    inverse = np.empty(len(data), dtype=np.int64)
    inverse[np.concatenate(positions)] = np.arange(len(data))
    return result[inverse]


def evaluate(
    model: Any,
    data: Encoded,
    batch_size: int = 256,
    label_names: Sequence[str] | None = None,
    constrain: str | None = None,
) -> dict[str, float]:
    """Task metrics of `model` on `data`, computed with the shared numpy metrics.

    For tagging with IOB tag names (`O`, `B-X`, `I-X`) given in `label_names`, the
    entity-level (seqeval-style, IOB2) precision/recall/F1 are reported too. A tagger's
    predictions are its decoded tag paths (`rnncore.crf.decode`: Viterbi for a CRF head);
    `constrain` names the tag scheme (IOB1, IOB2, IOBES) whose illegal moves decoding avoids.
    """
    spec = spec_of(model)
    assert spec.head is not None
    logits = predict_batched(model, data, batch_size)
    task = spec.head.task
    if task == "classification":
        report = metrics.classification_report(data.targets, logits.argmax(axis=-1))
        keep = ("accuracy", "macro_f1", "weighted_f1", "micro_f1")
        scores = {k: float(report[k]) for k in keep}
        scores["log_loss"] = metrics.log_loss_from_logits(data.targets, logits)
        return scores
    if task == "tagging":
        paths = tag_paths(model, logits, data.lengths, data.targets, label_names, constrain)
        labels, preds = metrics.masked_token_arrays(data.targets, paths, data.lengths)
        keep_mask = labels != IGNORE_INDEX
        labels, preds = labels[keep_mask], preds[keep_mask]
        report = metrics.classification_report(labels, preds)
        scores = {"accuracy": float(report["accuracy"]), "macro_f1": float(report["macro_f1"])}
        if label_names is not None and all(IOB_TAG.match(name) for name in label_names):
            scores.update(_entity_scores(data, paths, label_names))
        return scores
    if task == "multilabel":
        predicted = (logits > 0).astype(np.int64)
        return {"accuracy": float((predicted == data.targets).all(axis=1).mean())}
    return {"mse": float(((logits - data.targets) ** 2).mean())}


def tag_paths(
    model: Any,
    logits: np.ndarray,
    lengths: np.ndarray,
    targets: np.ndarray,
    label_names: Sequence[str] | None,
    constrain: str | None,
) -> np.ndarray:
    """A tagger's predicted tags (B, T) from its logits, under the scheme `constrain` names.

    Decoded over each row's labelled steps (a word's first sub-token; `labelled_first`), the
    chain a CRF is trained on; the other steps keep `crf.PAD_TAG` (no metric reads them).
    """
    allowed = None
    if constrain is not None:
        if label_names is None:
            raise ValueError(
                "constrained decoding needs the tag names (labels.json) to know the scheme's tags"
            )
        allowed = crf.allowed_transitions(label_names, constrain)
    spec = spec_of(model)
    assert spec.head is not None
    weights = get_weights(model) if spec.head.crf else {}
    order, counts = labelled_first(targets, lengths)
    chains = crf.decode(
        spec, weights, np.take_along_axis(logits, order[..., None], axis=1), np.maximum(counts, 1), allowed
    )
    paths = np.full_like(chains, crf.PAD_TAG)
    np.put_along_axis(
        paths, order, np.where(np.arange(paths.shape[1]) < counts[:, None], chains, crf.PAD_TAG), axis=1
    )
    return paths


IOB_TAG = re.compile(r"^(O|[BI]-.+)$")


def _entity_scores(data: Encoded, predicted: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    true_rows, pred_rows = [], []
    for row, length in enumerate(data.lengths):
        targets = data.targets[row, :length]
        keep = targets != IGNORE_INDEX  # one label per word: its first sub-token
        true_rows.append([names[i] for i in targets[keep]])
        pred_rows.append([names[i] for i in predicted[row, :length][keep]])
    found = metrics.entity_precision_recall_f1(true_rows, pred_rows, scheme="IOB2")
    return {f"entity_{k}": float(found[k]) for k in ("precision", "recall", "f1")}


def _improved(metric: str, value: float, best: float | None) -> bool:
    lower_is_better = metric in ("log_loss", "mse", "loss")
    return best is None or (value < best if lower_is_better else value > best)


def fit(
    model: Any,
    train: Encoded,
    config: TrainConfig,
    valid: Encoded | None = None,
    *,
    start_epoch: int = 0,
    trainer: Any = None,
    on_epoch_end: Callable[[int, History, Any], None] | None = None,
    progress: bool | str = True,
    history: History | None = None,
    best_weights: Weights | None = None,
    shard: Shard | None = None,
) -> History:
    """Train `model` in place for `config.epochs` epochs (from `start_epoch`, to resume).

    Batches are bucketed by length and shuffled with seed `config.seed + epoch`; learning
    rates follow `config.learning_rate`; after each epoch the model is evaluated on `valid`
    and `on_epoch_end(epoch, history, trainer)` is called (checkpointing lives there).
    With `config.early_stopping_patience`, training stops after that many epochs without a
    better validation metric and the model ends with the best epoch's weights (as Keras'
    `restore_best_weights`); without it, the model keeps the last epoch's weights.
    A resumed run passes the best epoch's weights so far as `best_weights` (from its
    checkpoint), so that it restores the same weights an uninterrupted run would.

    With a `shard` (one process of a distributed run, its trainer from the backend's
    `start_distributed`), every process forms the same global batches and learning rates,
    trains on its share of each (`Shard.split`) and gets back the loss of the whole batch;
    every process also evaluates, so all take the same early-stopping decisions.
    """
    backend = backend_of(model)
    trainer = trainer or backend.make_trainer(model, config)
    history = history or History()
    steps_per_epoch = len(bucket_batches(train.lengths, config.batch_size, seed=config.seed))
    total_steps = steps_per_epoch * config.epochs
    best = (
        None
        if history.best_epoch is None
        else history.epochs[history.best_epoch].get(f"val_{config.early_stopping_metric}")
    )
    for epoch in range(start_epoch, config.epochs):
        batches = bucket_batches(train.lengths, config.batch_size, seed=config.seed + epoch)
        losses = []
        bar = _progress(len(batches), f"epoch {epoch + 1}/{config.epochs}", progress)
        for i, index in enumerate(batches):
            step = epoch * steps_per_epoch + i
            loss = _train_step(trainer, train, index, config.learning_rate(step, total_steps), shard)
            if not np.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss} at epoch {epoch + 1}, step {step}: lower the learning rate "
                    "or set clip_norm; the last checkpoint is kept"
                )
            losses.append(loss)
            bar.update(loss)
        record = {"epoch": float(epoch + 1), "loss": float(np.mean(losses))}
        if valid is not None:
            record.update({f"val_{k}": v for k, v in evaluate(model, valid).items()})
        bar.close(record)
        history.epochs.append(record)
        metric = f"val_{config.early_stopping_metric}"
        if config.early_stopping_patience and valid is not None and metric not in record:
            measured = ", ".join(k.removeprefix("val_") for k in record if k.startswith("val_"))
            raise ValueError(
                f"early_stopping_metric {config.early_stopping_metric!r} is not measured for this task "
                f"(it measures {measured}): early stopping would never happen; pick one of those"
            )
        if metric in record and _improved(config.early_stopping_metric, record[metric], best):
            best, history.best_epoch = record[metric], len(history.epochs) - 1
            best_weights = get_weights(model) if config.early_stopping_patience else None
        if on_epoch_end is not None:
            on_epoch_end(epoch, history, trainer)  # after best_weights: a checkpoint may save them
        patience = config.early_stopping_patience
        if (
            patience
            and history.best_epoch is not None
            and len(history.epochs) - 1 - history.best_epoch >= patience
        ):
            history.stopped_early = True
            break
    if best_weights is not None:
        set_weights(model, best_weights)
    return history


def _train_step(trainer: Any, data: Encoded, index: np.ndarray, lr: float, shard: Shard | None) -> float:
    """One update on global batch `index`: the whole batch, or this process's share of it."""
    if shard is None:
        return float(trainer.step(*data.batch(index), lr))
    rows, weight = shard.split(data, index)
    return float(trainer.step(*data.batch(rows), lr, weight))


class _progress:
    """A per-epoch progress bar with loss and speed (tqdm when installed, else silent), or
    with `mode` "lines" one printed line per epoch (for output that goes to a file)."""

    def __init__(self, total: int, desc: str, mode: bool | str):
        self.bar: Any = None
        self.desc = desc
        self.lines = mode == "lines"
        if mode is True or mode == "bar":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=desc, unit="batch", leave=True)

    def update(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.update(1)

    def close(self, record: dict[str, float]) -> None:
        if self.lines:
            scores = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch")
            print(f"{self.desc}: {scores}", flush=True)
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
            self.bar.close()
