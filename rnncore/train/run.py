"""Training runs on disk: read data, encode it, train, checkpoint, evaluate, predict.

A run folder is a model bundle (see `rnncore.bundle`) plus what the run needs to resume and
to be read back:

    config.json, model.safetensors, labels.json, tokenizer/   the final model (a bundle)
    run.json            task, data source, train config, split seed, backend
    history.json        per-epoch loss and validation metrics; history.png plots them
    checkpoints/epoch-NNNN/   a bundle + optimizer.safetensors + state.json per epoch
    checkpoints/LATEST  name of the newest complete checkpoint (written last, atomically)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import bundle
from ..api import build, get_weights, set_weights
from ..data import DataError, LabelVocab, load_bundled, read_conll, read_npz, read_texts, split
from ..spec import ModelSpec
from .config import TrainConfig
from .loop import Encoded, History, evaluate, fit

TASKS = ("text-classification", "sequence-classification", "tagging")
RUN_FORMAT = "rnncore.run/1"
BUNDLED_PREFIX = "bundled:"
DEFAULT_DATA = {
    "text-classification": "rotten_tomatoes",
    "sequence-classification": "digits",
    "tagging": "brown_pos",
}
# Starting points per task, measured on the bundled data (see README); flags override them.
DEFAULT_TRAIN = {
    "text-classification": TrainConfig(
        epochs=8, lr=2e-3, batch_size=32, max_len=64, early_stopping_patience=2
    ),
    "sequence-classification": TrainConfig(epochs=20, lr=5e-3, batch_size=32),
    "tagging": TrainConfig(epochs=6, lr=5e-3, batch_size=32),
}


class RunError(ValueError):
    """A run cannot start or be read: the message says why and what to do."""


# ---- data ------------------------------------------------------------------------------------
def read_dataset(source: str, task: str, columns: tuple[str, str] = ("text", "label")) -> Any:
    """A dataset for `task` from a file/folder path or `bundled:NAME`.

    `columns` names the text and label columns (or JSONL fields) of table files.
    """
    if source.startswith(BUNDLED_PREFIX):
        return load_bundled(source[len(BUNDLED_PREFIX) :])
    path = Path(source)
    if not path.exists():
        raise RunError(f"no such data file or folder: {source}")
    if task == "text-classification":
        return read_texts(path, *columns)
    if task == "tagging":
        return read_conll(path)
    return read_npz(path)


def split_dataset(data: Any, seed: int) -> dict[str, Any]:
    parts = split(len(data), (0.8, 0.1, 0.1), seed=seed)
    return {name: data.subset(idx) for name, idx in zip(("train", "valid", "test"), parts, strict=True)}


@dataclass
class Encoder:
    """Turns a dataset of the run's task into model arrays (tokenizer and labels included)."""

    task: str
    labels: LabelVocab
    tokenizer: Any = None
    max_len: int = 128

    def encode(self, data: Any, where: str) -> Encoded:
        if self.task == "text-classification":
            ids, lengths = self.tokenizer.encode_batch(list(data.texts), max_len=self.max_len, on_empty="unk")
            return Encoded(ids, lengths, self.labels.encode(data.labels, where))
        if self.task == "tagging":
            tags = [self.labels.encode(row, where) for row in data.tags]
            batch = self.tokenizer.encode_words(
                list(data.sentences), [list(t) for t in tags], max_len=self.max_len, on_empty="unk"
            )
            return Encoded(batch.ids, batch.lengths, batch.labels, per_step=True)
        return Encoded(data.x, data.lengths, self.labels.encode([str(int(y)) for y in data.y], where))

    def encode_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        for i, text in enumerate(texts):
            if not text.strip():
                raise RunError(f"text {i} is empty; give at least one word to classify")
        return self.tokenizer.encode_batch(texts, max_len=self.max_len, on_empty="unk")


def fit_encoder(task: str, train: Any, max_len: int, inventory: Any = None) -> Encoder:
    """Tokenizer fitted on the training split; labels from `inventory` (default: the training split).

    The label set is the annotation scheme's inventory, so a run takes it from the whole data
    file: a rare tag that only the test split holds is still a class, not an error.
    """
    inventory = inventory if inventory is not None else train
    if task == "text-classification":
        from ..tokenize import Tokenizer

        tokenizer = Tokenizer.train(list(train.texts), kind="word", vocab_size=20000, min_frequency=2)
        return Encoder(task, LabelVocab.fit(inventory.labels), tokenizer, max_len)
    if task == "tagging":
        from ..tokenize import Tokenizer

        words = [" ".join(sentence) for sentence in train.sentences]
        tokenizer = Tokenizer.train(words, kind="word", vocab_size=30000, min_frequency=1)
        labels = LabelVocab.fit(tag for row in inventory.tags for tag in row)
        return Encoder(task, labels, tokenizer, max_len)
    return Encoder(task, LabelVocab.fit(str(int(y)) for y in inventory.y), None, max_len)


def default_spec(task: str, encoder: Encoder, data: Any) -> ModelSpec:
    """A sensible model for the task when the user gives no spec."""
    classes = len(encoder.labels)
    if task == "sequence-classification":
        return ModelSpec.from_dict(
            {
                "input": {"kind": "features", "feature_dim": int(data.x.shape[2])},
                "encoder": {"cell": "lstm", "hidden_size": 64},
                "pooling": "last",
                "head": {"num_outputs": classes},
            }
        )
    tokens = {"kind": "tokens", "vocab_size": encoder.tokenizer.vocab_size, "embedding_dim": 64,
              "padding_idx": encoder.tokenizer.pad_id}  # fmt: skip
    if task == "tagging":
        return ModelSpec.from_dict(
            {"input": tokens, "encoder": {"cell": "lstm", "hidden_size": 64, "bidirectional": True},
             "pooling": "none", "head": {"num_outputs": classes, "task": "tagging"}}
        )  # fmt: skip
    return ModelSpec.from_dict(
        {"input": tokens,
         "encoder": {"cell": "lstm", "hidden_size": 64, "bidirectional": True, "dropout": 0.3},
         "pooling": "max", "head": {"num_outputs": classes, "dropout": 0.3}}
    )  # fmt: skip


# ---- checkpoints -----------------------------------------------------------------------------
def _write_text_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


BEST = "best.safetensors"  # in checkpoints/: the best epoch's weights, kept for early stopping


def save_checkpoint(
    run: Path, model: Any, trainer: Any, history: History, epoch: int, encoder: Encoder, keep_best: bool
) -> None:
    """Checkpoint epoch `epoch`; with `keep_best`, also the weights of the best epoch so far.

    The best epoch may be older than the two checkpoints kept, and early stopping restores it,
    so its weights are kept apart: a resumed run restores what an uninterrupted one would.
    """
    if keep_best and history.best_epoch == len(history.epochs) - 1:
        tmp = run / "checkpoints" / f".{BEST}.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        bundle.write_weights(tmp, get_weights(model))
        os.replace(tmp, run / "checkpoints" / BEST)
    folder = run / "checkpoints" / f"epoch-{epoch + 1:04d}"
    bundle.save(
        model, folder, labels=list(encoder.labels.labels), tokenizer=encoder.tokenizer, overwrite=True
    )
    bundle.write_weights(folder / "optimizer.safetensors", trainer.optimizer_state())
    state = {"epoch": epoch + 1, "history": history.to_dict()}
    (folder / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    _write_text_atomically(run / "checkpoints" / "LATEST", folder.name + "\n")
    for old in sorted((run / "checkpoints").glob("epoch-*"))[:-2]:  # keep the newest two
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run: Path) -> Path | None:
    pointer = run / "checkpoints" / "LATEST"
    if not pointer.is_file():
        return None
    folder = run / "checkpoints" / pointer.read_text(encoding="utf-8").strip()
    return folder if folder.is_dir() else None


# ---- the run ---------------------------------------------------------------------------------
def train_run(
    *,
    task: str,
    data: str,
    out: str | Path,
    backend: str = "torch",
    spec: ModelSpec | None = None,
    config: TrainConfig | None = None,
    valid: str | None = None,
    columns: tuple[str, str] = ("text", "label"),
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on `data`, write the run folder `out`, return the test (or validation) metrics."""
    if task not in TASKS:
        raise RunError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    config = config or DEFAULT_TRAIN[task]
    run = Path(out)
    if run.exists() and not (overwrite or resume):
        raise RunError(f"{run} already exists; pass --overwrite to replace it or --resume to continue it")
    if resume and not run.exists():
        raise RunError(f"cannot resume: {run} does not exist")
    dataset = read_dataset(data, task, columns)
    if len(dataset) < 3:
        raise RunError(f"{data} holds {len(dataset)} examples; need at least 3 to train and evaluate")
    parts = split_dataset(dataset, config.seed)
    if valid is not None:
        parts["valid"] = read_dataset(valid, task, columns)
    encoder = fit_encoder(task, parts["train"], config.max_len, inventory=dataset)
    encoded = {name: encoder.encode(part, f"the {name} split") for name, part in parts.items()}
    spec = spec or default_spec(task, encoder, dataset)
    if encoder.tokenizer is not None:
        _check_vocab(encoder, spec)
    model = build(spec, backend=backend, seed=config.seed)
    start_epoch, history, trainer, best_weights = 0, History(), None, None
    if resume:
        start_epoch, history, trainer, best_weights = _resume(run, model, config, backend)
    elif run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    run_info = {"format": RUN_FORMAT, "task": task, "data": data, "valid": valid, "backend": backend,
                "columns": list(columns), "train": config.to_dict()}  # fmt: skip
    (run / "run.json").write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")

    def on_epoch_end(epoch: int, hist: History, tr: Any) -> None:
        save_checkpoint(run, model, tr, hist, epoch, encoder, keep_best=bool(config.early_stopping_patience))

    history = fit(model, encoded["train"], config, encoded["valid"], start_epoch=start_epoch, trainer=trainer,
                  on_epoch_end=on_epoch_end, progress=progress, history=history,
                  best_weights=best_weights)  # fmt: skip
    _write_final_bundle(run, model, encoder, task, config)
    (run / "history.json").write_text(json.dumps(history.to_dict(), indent=2) + "\n", encoding="utf-8")
    _plot_history(history, run / "history.png")
    return evaluate(model, encoded["test"], label_names=encoder.labels.labels)


def _write_final_bundle(run: Path, model: Any, encoder: Encoder, task: str, config: TrainConfig) -> None:
    """Make the run folder itself a bundle holding the final model.

    The bundle is written whole beside the run, then moved in file by file with config.json
    last (and removed first): a crash in between leaves a folder without config.json, which
    every reader refuses as "not a bundle", never new weights under an old config.
    """
    staged = run / "final.tmp"
    bundle.save(model, staged, labels=list(encoder.labels.labels), tokenizer=encoder.tokenizer,
                extra={"task": task, "max_len": config.max_len}, overwrite=True)  # fmt: skip
    (run / bundle.CONFIG).unlink(missing_ok=True)
    for name in (bundle.WEIGHTS, bundle.LABELS):
        os.replace(staged / name, run / name)
    if (staged / bundle.TOKENIZER).exists():
        shutil.rmtree(run / bundle.TOKENIZER, ignore_errors=True)
        os.replace(staged / bundle.TOKENIZER, run / bundle.TOKENIZER)
    os.replace(staged / bundle.CONFIG, run / bundle.CONFIG)
    shutil.rmtree(staged, ignore_errors=True)


def _check_vocab(encoder: Encoder, spec: ModelSpec) -> None:
    try:
        encoder.tokenizer.check_spec(spec)
    except ValueError as err:
        raise RunError(str(err)) from None


def _resume(run: Path, model: Any, config: TrainConfig, backend: str) -> tuple[int, History, Any, Any]:
    from ..registry import get_backend

    folder = latest_checkpoint(run)
    if folder is None:
        raise RunError(f"{run} has no complete checkpoint to resume from; start again with --overwrite")
    _, weights = bundle.load_weights_and_spec(folder)
    set_weights(model, weights)
    trainer = get_backend(backend).make_trainer(model, config)
    trainer.load_optimizer_state(bundle.read_weights(folder / "optimizer.safetensors"))
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    history = History(**state["history"])
    best = run / "checkpoints" / BEST
    best_weights = bundle.read_weights(best) if config.early_stopping_patience and best.is_file() else None
    return int(state["epoch"]), history, trainer, best_weights


def _plot_history(history: History, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = [r["epoch"] for r in history.epochs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [r["loss"] for r in history.epochs], marker="o", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    metric = next((k for k in ("val_accuracy", "val_mse") if history.epochs and k in history.epochs[0]), None)
    if metric:
        other = ax.twinx()
        other.plot(epochs, [r[metric] for r in history.epochs], marker="s", color="tab:orange", label=metric)
        other.set_ylabel(metric)
    ax.set_title("training history")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- reading a run back ----------------------------------------------------------------------
def task_of(spec: ModelSpec) -> str:
    """The run task a bundle's spec serves (bundles not written by `rnncore train` say none)."""
    if spec.head is not None and spec.head.task == "tagging":
        return "tagging"
    return "text-classification" if spec.input.kind == "tokens" else "sequence-classification"


def _run_info(folder: Path) -> dict[str, Any]:
    """run.json of a training run; for any other bundle, what its config.json tells."""
    config = bundle.read_config(folder)  # refuses a folder that is not a bundle, with the reason
    info_path = folder / "run.json"
    if info_path.is_file():
        return dict(json.loads(info_path.read_text(encoding="utf-8")))
    spec, _ = bundle.load_weights_and_spec(folder)
    task = config.get("task") or task_of(spec)
    max_len = int(config.get("max_len") or TrainConfig().max_len)
    return {"task": task, "data": None, "backend": config.get("backend", "torch"),
            "train": {"max_len": max_len, "seed": 0}}  # fmt: skip


def load_run(run: str | Path, backend: str | None = None) -> tuple[Any, Encoder, dict[str, Any]]:
    """The model of a run folder or any bundle on `backend` (default: the one that wrote it)."""
    run = Path(run)
    info = _run_info(run)
    model = bundle.load(run, backend=backend or info["backend"])
    tokenizer = None
    if (run / bundle.TOKENIZER).is_dir():
        from ..tokenize import Tokenizer

        tokenizer = Tokenizer.from_pretrained(run / bundle.TOKENIZER)
    labels = LabelVocab(tuple(bundle.load_labels(run) or ()))
    max_len = int(info["train"].get("max_len", TrainConfig().max_len))
    return model, Encoder(info["task"], labels, tokenizer, max_len), info


def evaluate_run(
    run: str | Path,
    data: str | None = None,
    split_name: str = "test",
    backend: str | None = None,
    columns: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Metrics of a run's model on `data` (default: the held-out split of its training data).

    `columns` names the text and label columns of a table file (default: the run's own, or
    text/label for a bundle that is not a training run).
    """
    model, encoder, info = load_run(run, backend)
    source = data or info["data"]
    if source is None:
        raise RunError(f"{run} is a model bundle, not a training run: say which data to score with --data")
    _check_usable(run, encoder)
    dataset = read_dataset(source, info["task"], columns or tuple(info.get("columns", ("text", "label"))))
    if data is None or data == info["data"]:
        dataset = split_dataset(dataset, int(info["train"]["seed"]))[split_name]
    try:
        encoded = encoder.encode(dataset, f"{source}")
    except DataError as err:
        raise RunError(str(err)) from None
    return evaluate(model, encoded, label_names=encoder.labels.labels)


def _check_usable(folder: str | Path, encoder: Encoder) -> None:
    """A bundle needs its tokenizer to read text and its label names to report classes."""
    if encoder.task != "sequence-classification" and encoder.tokenizer is None:
        raise RunError(
            f"{folder} has no tokenizer/ folder; text needs the tokenizer the model was trained with"
        )
    if not encoder.labels.labels:
        raise RunError(f"{folder} has no labels.json; save the bundle with its label names")


def predict_texts(run: str | Path, texts: list[str], backend: str | None = None) -> list[dict[str, Any]]:
    from ..api import predict

    model, encoder, info = load_run(run, backend)
    _check_usable(run, encoder)
    if info["task"] != "text-classification":
        raise RunError(f"{run} is a {info['task']} run; `predict` with texts needs a text-classification run")
    ids, lengths = encoder.encode_texts(texts)
    logits = predict(model, ids, lengths)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    names = encoder.labels.labels
    return [
        {
            "text": text,
            "label": names[int(p.argmax())],
            "probabilities": dict(zip(names, map(float, p), strict=True)),
        }
        for text, p in zip(texts, probs, strict=True)
    ]
