"""Training runs on disk: read data, encode it, train, checkpoint, evaluate, predict.

A run folder is a model bundle (see `rnncore.bundle`) plus what the run needs to resume and
to be read back:

    config.json, model.safetensors, labels.json, tokenizer/   the final model (a bundle)
    run.json            task, data source, train config, split seed, backend
    history.json        per-epoch loss and validation metrics; history.png plots them
    checkpoints/epoch-NNNN/   a bundle + optimizer.safetensors + state.json per epoch (the
                        newest two, and with early stopping the best epoch's)
    checkpoints/LATEST  name of the newest complete checkpoint (written last, atomically)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import bundle, crf, staging
from ..api import build, device_of, set_weights, spec_of
from ..baselines import most_frequent_tag
from ..data import DataError, LabelVocab, SequenceDataset, TaggedDataset, TextDataset, load_bundled, split
from ..data.containers import class_names
from ..data.formats import ReaderRequest, choose_reader, describe, read_with, request_from, suffix_format
from ..data.summary import render, summarize
from ..device import Device, device_for
from ..jsonfile import read_json
from ..limits import bounded
from ..registry import ALIASES, get_backend
from ..runinfo import check_classes, data_source
from ..spec import ModelSpec
from .config import TrainConfig
from .lock import describe_holder, run_lock
from .loop import Encoded, History, evaluate, fit

if TYPE_CHECKING:
    from .distributed import Worker

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
TASK_DATA = {
    "text-classification": TextDataset,
    "tagging": TaggedDataset,
    "sequence-classification": SequenceDataset,
}


def choose_data_reader(source: str, task: str, request: ReaderRequest | None = None) -> dict[str, Any]:
    """Reader settings for a file/folder path or `bundled:NAME` (see `rnncore.data.formats`);
    `request` holds the user's choices (default: none, the file decides)."""
    if source.startswith(BUNDLED_PREFIX):
        return {"format": "bundled", "name": source[len(BUNDLED_PREFIX) :]}
    if not Path(source).exists():
        raise RunError(f"no such data file or folder: {source}")
    return choose_reader(source, task, request or ReaderRequest())


def read_dataset(
    source: str,
    task: str,
    columns: tuple[str, str] = ("text", "label"),
    settings: dict[str, Any] | None = None,
) -> Any:
    """A dataset for `task` from a file/folder path or `bundled:NAME`.

    `settings` says how to read it (from `choose_data_reader` or a run's run.json); without
    them the file decides, with `columns` naming the text and label columns of table files.
    """
    if settings is None:
        settings = choose_data_reader(
            source, task, ReaderRequest(text_column=columns[0], label_column=columns[1])
        )
    data = load_bundled(settings["name"]) if settings["format"] == "bundled" else read_with(source, settings)
    if not isinstance(data, TASK_DATA[task]):
        raise RunError(f"{source} holds a {type(data).__name__}, which {task} cannot train on")
    if isinstance(data, SequenceDataset):  # classes are exact: 0.9 is refused, not made class 0
        class_names(data.y, f"{source}: y")
    return data


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
        return Encoded(data.x, data.lengths, self.labels.encode(class_names(data.y, f"y of {where}"), where))

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
    return Encoder(task, LabelVocab.fit(class_names(inventory.y)), None, max_len)


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
def _fsync_tree(folder: Path) -> None:
    """Flush every file under `folder` and the folders themselves to disk. A full disk can
    surface only here (delayed allocation), and after a power cut LATEST must not name a
    folder whose files never reached the disk."""
    for path in [*sorted(folder.rglob("*"), reverse=True), folder]:
        if path.is_dir() and os.name == "nt":  # Windows cannot open a folder to flush it
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


CHECKPOINT = re.compile(r"epoch-(\d{4,})")  # checkpoints/epoch-NNNN, NNNN = epochs done


def _checkpoint_name(epochs_done: int) -> str:
    return f"epoch-{epochs_done:04d}"


def save_checkpoint(
    run: Path, model: Any, trainer: Any, history: History, epoch: int, encoder: Encoder, keep_best: bool
) -> None:
    """Checkpoint epoch `epoch` as checkpoints/epoch-NNNN/, then point checkpoints/LATEST at it.

    Safe against a kill at any instant (tests/test_training_faults.py kills at every file
    operation): the folder is written, flushed, and only then named by LATEST (replaced
    atomically), and no folder is removed before LATEST has moved past it. A failed write
    (a full disk) leaves LATEST on the previous checkpoint and says so.

    With `keep_best`, the best epoch's folder is kept besides the newest two: early stopping
    restores its weights, and it may be older. Its weights live in the checkpoint itself, so
    they always match the history that LATEST's state.json tells.
    """
    checkpoints = run / "checkpoints"
    folder = checkpoints / _checkpoint_name(epoch + 1)
    try:
        bundle.save(
            model, folder, labels=list(encoder.labels.labels), tokenizer=encoder.tokenizer, overwrite=True
        )
        bundle.write_weights(folder / "optimizer.safetensors", trainer.optimizer_state())
        state = {"epoch": epoch + 1, "history": history.to_dict()}
        staging.write_text(folder / "state.json", json.dumps(state, indent=2) + "\n")
        _fsync_tree(folder)
        staging.write_text(checkpoints / "LATEST", folder.name + "\n")
    except OSError as err:
        last = latest_checkpoint(run)
        kept = f"the last complete checkpoint, {last.name}, is intact" if last else "no checkpoint yet"
        failed = OSError(
            f"could not write checkpoint {folder} ({err.strerror or err}); {kept}: fix the cause "
            "(free disk space) and continue with --resume"
        )
        failed.errno = err.errno  # still ENOSPC for a caller that asks
        raise failed from err
    keep = {folder.name, _checkpoint_name(epoch)}  # the newest two
    if keep_best and history.best_epoch is not None:
        keep.add(_checkpoint_name(history.best_epoch + 1))
    for old in checkpoints.glob("epoch-*"):
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in [*checkpoints.glob(".epoch-*"), *checkpoints.glob(".LATEST.*")]:  # of a killed save
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def latest_checkpoint(run: Path) -> Path | None:
    """The checkpoint folder LATEST names, or None when there is none (yet) to resume from."""
    pointer = run / "checkpoints" / "LATEST"
    if not pointer.is_file():
        return None
    with pointer.open("rb") as handle:
        name = handle.read(64).decode("utf-8", "replace").strip()
    if not CHECKPOINT.fullmatch(name):  # e.g. "../../elsewhere": never read outside the run
        raise RunError(f"{pointer} names {name!r}, not a checkpoint folder (epoch-NNNN)")
    folder = run / "checkpoints" / name
    return folder if (folder / "state.json").is_file() else None


def _best_weights(run: Path, history: History) -> Any:
    """The weights of the best epoch so far, kept in its checkpoint (see `save_checkpoint`)."""
    if history.best_epoch is None:
        return None
    folder = run / "checkpoints" / _checkpoint_name(history.best_epoch + 1)
    return bundle.load_weights_and_spec(folder)[1]


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
    test: str | None = None,
    columns: tuple[str, str] = ("text", "label"),
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | str = True,
    distributed: Worker | None = None,
    reader: ReaderRequest | None = None,
    report: Callable[[str], None] | None = None,
    device: str | Device = "auto",
    use_crf: bool = False,
    constrain: str | None = None,
) -> dict[str, Any]:
    """Train on `data`, write the run folder `out`, return the test metrics: on the `test`
    file if given, else on the internal test split (10% of `data`).

    A classification set with one class is refused (`RunSettingError`); a very rare class
    gives a `DataWarning`.

    How the data is read follows from the file (`rnncore.data.formats`); `reader` holds the
    user's own choices (columns, tag field, format), default: `columns` for table files. What
    was read is summed up (`rnncore.data.summary`) in run.json and, before training, handed
    to `report` (the CLI prints it).

    `device` is auto (a GPU when the backend sees one), cpu, cuda or cuda:N; the device used is
    recorded in run.json. Checkpoints hold CPU arrays, so a run resumes on any device.
    Tagging only: `use_crf` puts a CRF on the model's head (the default model's or `spec`'s);
    `constrain` names the tag scheme (IOB1, IOB2, IOBES) whose illegal tag sequences decoding
    avoids, on a CRF or softmax tagger alike; the run remembers it for `evaluate`.

    With `distributed` (this process's place in a multi-process run, from
    `rnncore.train.distributed.start_worker`) every process reads the data and trains on its
    share of each batch; only rank 0 writes the run folder (checkpoints, history, final model),
    shows progress and returns the test metrics (the others return {}). A resumed run reads
    the checkpoint on every process: the run folder must be visible to all of them.
    """
    if task not in TASKS:
        raise RunError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    config = config or DEFAULT_TRAIN[task]
    _check_decoding_options(task, use_crf, constrain)
    run = Path(out)
    chief = distributed is None or distributed.rank == 0

    def train(overwrite_now: bool) -> dict[str, Any]:
        return _train(
            task=task, data=data, run=run, backend=backend, spec=spec, config=config, valid=valid,
            test=test, columns=columns, overwrite=overwrite_now, resume=resume, progress=progress,
            distributed=distributed, reader=reader, report=report, device=device, use_crf=use_crf,
            constrain=constrain,
        )  # fmt: skip

    if not chief:  # only rank 0 writes (and locks): another rank could see what rank 0 just made
        return train(False)
    check_run_folder(run, overwrite, resume)
    with run_lock(run, "resume" if resume else "train"):
        check_run_folder(run, overwrite, resume, holding_lock=True)  # again: it may have changed
        return train(overwrite)


def _train(
    *, task: str, data: str, run: Path, backend: str, spec: ModelSpec | None, config: TrainConfig,
    valid: str | None, test: str | None, columns: tuple[str, str], overwrite: bool, resume: bool,
    progress: bool | str, distributed: Worker | None, reader: ReaderRequest | None,
    report: Callable[[str], None] | None, device: str | Device, use_crf: bool, constrain: str | None,
) -> dict[str, Any]:  # fmt: skip
    chief = distributed is None or distributed.rank == 0
    request = reader or ReaderRequest(text_column=columns[0], label_column=columns[1])
    settings = choose_data_reader(data, task, request)
    dataset = read_dataset(data, task, settings=settings)
    if len(dataset) < 3:
        raise RunError(f"{data} holds {len(dataset)} examples; need at least 3 to train and evaluate")
    if task != "tagging":
        check_classes(_class_names(dataset), data)
    parts = split_dataset(dataset, config.seed)
    if valid is not None:  # read with the same choices; its own layout is detected again
        parts["valid"] = read_dataset(valid, task, settings=choose_data_reader(valid, task, request))
    if test is not None:
        parts["test"] = read_dataset(test, task, settings=choose_data_reader(test, task, request))
    summary = summarize(task, parts, describe(settings), data)
    if report is not None and chief:
        report(render(summary))
    encoder = fit_encoder(task, parts["train"], config.max_len, inventory=dataset)
    encoded = {name: encoder.encode(part, f"the {name} split") for name, part in parts.items()}
    if resume:
        spec = _resumed_spec(run, spec)
    spec = spec or default_spec(task, encoder, dataset)
    if use_crf:
        spec = _with_crf(spec)
    if constrain is not None:
        _check_scheme(encoder, constrain)
    if encoder.tokenizer is not None:
        _check_vocab(encoder, spec)
    placed = _placement(backend, device, distributed)
    with contextlib.nullcontext() if distributed is None else distributed.scope():
        model = build(spec, backend=backend, seed=config.seed, device=placed)  # TensorFlow: mirrored
    make_trainer = get_backend(backend).make_trainer if distributed is None else distributed.make_trainer
    start_epoch, history, trainer, best_weights = 0, History(), None, None
    if resume:
        start_epoch, history, trainer, best_weights = _resume(run, model, config, make_trainer)
    elif distributed is not None:
        trainer = make_trainer(model, config)
    if distributed is not None and not chief:
        fit(model, encoded["train"], config, encoded["valid"], start_epoch=start_epoch, trainer=trainer,
            progress=False, history=history, best_weights=best_weights, shard=distributed.shard)  # fmt: skip
        return {}
    # --overwrite of an existing run: the new run grows beside it and replaces it only once it
    # holds a checkpoint, so a failure (or a kill) before then leaves the old run as it was
    folder = RunFolder(run, replace=overwrite and not resume and run.exists())
    processes = 1 if distributed is None else distributed.world_size
    run_info = {"format": RUN_FORMAT, "task": task, "data": data, "valid": valid, "test": test,
                "backend": backend, "columns": list(columns), "reader": settings,
                "train": config.to_dict(), "processes": processes, "data_summary": summary,
                "device": device_of(model), "constrain_decoding": constrain}  # fmt: skip
    staging.write_text(folder.path / "run.json", json.dumps(run_info, indent=2) + "\n")

    def on_epoch_end(epoch: int, hist: History, tr: Any) -> None:
        keep_best = bool(config.early_stopping_patience)
        save_checkpoint(folder.path, model, tr, hist, epoch, encoder, keep_best=keep_best)
        folder.promote()

    with folder:
        history = fit(model, encoded["train"], config, encoded["valid"], start_epoch=start_epoch,
                      trainer=trainer, on_epoch_end=on_epoch_end, progress=progress, history=history,
                      best_weights=best_weights,
                      shard=None if distributed is None else distributed.shard)  # fmt: skip
    reads_as = {**data_settings(task, config.max_len, columns), "constrain_decoding": constrain}
    _write_final_bundle(run, model, encoder, reads_as)
    staging.write_text(run / "history.json", json.dumps(history.to_dict(), indent=2) + "\n")
    _plot_history(history, run / "history.png")
    return evaluate(model, encoded["test"], label_names=encoder.labels.labels, constrain=constrain)


def _check_decoding_options(task: str, use_crf: bool, constrain: str | None) -> None:
    if (use_crf or constrain is not None) and task != "tagging":
        flag = "--crf" if use_crf else "--constrain-decoding"
        raise RunError(f"{flag} is for --task tagging (it decodes tag sequences), not {task}")
    if constrain is not None and constrain not in crf.SCHEMES:
        raise RunError(f"--constrain-decoding {constrain!r}: choose one of {', '.join(crf.SCHEMES)}")


def _with_crf(spec: ModelSpec) -> ModelSpec:
    if spec.head is None or spec.head.task != "tagging":
        raise RunError("--crf needs a tagging spec (head.task 'tagging', pooling 'none')")
    return spec.replace(head={**spec.head.to_dict(), "crf": True})


def _check_scheme(encoder: Encoder, scheme: str) -> None:
    try:
        crf.allowed_transitions(encoder.labels.labels, scheme)
    except ValueError as err:
        raise RunError(f"--constrain-decoding {scheme}: {err}") from None


def _placement(backend: str, device: str | Device, distributed: Worker | None) -> Device | None:
    """The device to build on: `device` resolved, or, in a distributed run, the worker's own
    choice (None: each process takes the GPU of its local rank, or the CPU)."""
    if distributed is not None:
        return None
    return device_for(get_backend(backend), device)


def check_run_folder(run: Path, overwrite: bool, resume: bool, holding_lock: bool = False) -> None:
    """Refuse to replace a run folder unasked, to replace anything that is not a run (or an
    empty folder), to resume one that is not there, or to touch one another process writes."""
    busy = None if holding_lock else describe_holder(run)
    if busy is not None:
        raise RunError(f"{run} is in use: {busy} is writing it; wait for it to finish or stop it")
    exists = run.exists() or run.is_symlink()
    if exists and not (overwrite or resume):
        raise RunError(f"{run} already exists; pass --overwrite to replace it or --resume to continue it")
    if resume and not run.exists():
        raise RunError(f"cannot resume: {run} does not exist")
    if exists and overwrite and not resume and not _replaceable(run):
        raise RunError(
            f"--overwrite replaces a run folder, and {run} is not one (no run.json, checkpoints/ or "
            "model bundle in it) nor an empty folder; choose another --out, or remove it yourself"
        )


def _replaceable(run: Path) -> bool:
    """A training run (or what is left of one), a model bundle, or an empty folder."""
    if not run.is_dir() or run.is_symlink():
        return False
    marks = ("run.json", "checkpoints", bundle.CONFIG)
    return any((run / mark).exists() for mark in marks) or not any(run.iterdir())


class RunFolder:
    """Where a run is being written: the run folder itself, or, when it replaces an existing
    run, a new hidden sibling that takes the run's place at its first checkpoint (`promote`).
    Leaving the `with` block by an exception before that removes the sibling, old run intact."""

    def __init__(self, run: Path, replace: bool) -> None:
        self.run = run
        run.parent.mkdir(parents=True, exist_ok=True)
        if replace:
            self.path = Path(tempfile.mkdtemp(prefix=f".{run.name}.new-", dir=run.parent))
        else:
            run.mkdir(exist_ok=True)
            self.path = run

    def promote(self) -> None:
        if self.path == self.run:
            return
        aside = Path(tempfile.mkdtemp(prefix=f".{self.run.name}.old-", dir=self.run.parent))
        os.replace(self.run, aside / self.run.name)  # a link named run is moved, not followed
        os.replace(self.path, self.run)
        self.path = self.run
        shutil.rmtree(aside, ignore_errors=True)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None and self.path != self.run:
            shutil.rmtree(self.path, ignore_errors=True)


def data_settings(task: str, max_len: int, columns: tuple[str, str] | None) -> dict[str, Any]:
    """What a bundle records of how its model reads data (config.json keys; `port` copies
    them): the task, max_len and, for text classification, the table columns, so that
    `rnncore evaluate BUNDLE --data FILE` reads FILE as the run did."""
    settings: dict[str, Any] = {"task": task, "max_len": max_len}
    if task == "text-classification" and columns is not None:
        settings["columns"] = list(columns)
    return settings


def _class_names(dataset: Any) -> list[str]:
    if hasattr(dataset, "labels"):
        return [str(label) for label in dataset.labels]
    return class_names(dataset.y)  # exact, as the encoder reads them


def _write_final_bundle(run: Path, model: Any, encoder: Encoder, settings: dict[str, Any]) -> None:
    """Make the run folder itself a bundle holding the final model.

    The bundle is written whole beside the run, then moved in file by file with config.json
    last (and removed first): a crash in between leaves a folder without config.json, which
    every reader refuses as "not a bundle", never new weights under an old config.
    """
    staged = run / "final.tmp"
    _remove_leftover(staged)  # a kill during an earlier attempt may have left it half-written
    bundle.save(model, staged, labels=list(encoder.labels.labels), tokenizer=encoder.tokenizer,
                extra=settings, overwrite=True)  # fmt: skip
    (run / bundle.CONFIG).unlink(missing_ok=True)
    for name in (bundle.WEIGHTS, bundle.LABELS):
        os.replace(staged / name, run / name)
    if (staged / bundle.TOKENIZER).exists():
        old = run / bundle.TOKENIZER
        if old.is_symlink():  # replace the link, never what it points at
            old.unlink()
        shutil.rmtree(old, ignore_errors=True)
        os.replace(staged / bundle.TOKENIZER, run / bundle.TOKENIZER)
    os.replace(staged / bundle.CONFIG, run / bundle.CONFIG)
    shutil.rmtree(staged, ignore_errors=True)


def _remove_leftover(path: Path) -> None:
    """Remove this run's own scratch folder (the run is locked by this process): a link is
    unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _check_vocab(encoder: Encoder, spec: ModelSpec) -> None:
    try:
        encoder.tokenizer.check_spec(spec)
    except ValueError as err:
        raise RunError(str(err)) from None


def _resumed_spec(run: Path, given: ModelSpec | None) -> ModelSpec:
    """The spec of the run being resumed (its newest checkpoint's); a different one is refused."""
    folder = latest_checkpoint(run)
    if folder is None:
        raise RunError(f"{run} has no complete checkpoint to resume from; start again with --overwrite")
    saved, _ = bundle.load_weights_and_spec(folder)
    if given is not None and given != saved:
        raise RunError(
            f"--spec differs from the model of the run being resumed ({folder / bundle.CONFIG}); "
            "leave --spec out to continue the run, or start a new run"
        )
    return saved


def _resume(
    run: Path, model: Any, config: TrainConfig, make_trainer: Callable[[Any, TrainConfig], Any]
) -> tuple[int, History, Any, Any]:
    folder = latest_checkpoint(run)
    if folder is None:
        raise RunError(f"{run} has no complete checkpoint to resume from; start again with --overwrite")
    _, weights = bundle.load_weights_and_spec(folder)
    set_weights(model, weights)
    epoch, history = _read_state(folder / "state.json")
    trainer = make_trainer(model, config)
    optimizer = bundle.own_path(folder, "optimizer.safetensors")
    try:
        trainer.load_optimizer_state(bundle.read_weights(optimizer))
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise RunError(
            f"{optimizer} does not hold this model's optimizer state ({str(err)[:200]}); the checkpoint "
            "is damaged: remove it and LATEST to resume from an older one, or start again with --overwrite"
        ) from None
    best_weights = _best_weights(run, history) if config.early_stopping_patience else None
    return epoch, history, trainer, best_weights


def _read_state(path: Path) -> tuple[int, History]:
    """A checkpoint's state.json (epochs done, the history so far), checked field by field."""
    state = read_json(bundle.own_path(path.parent, path.name), RunError, allow_nan=True)
    epoch = state.get("epoch") if isinstance(state, dict) else None
    recorded = state.get("history") if isinstance(state, dict) else None
    try:
        if (
            isinstance(epoch, bool)
            or not isinstance(epoch, int)
            or epoch < 1
            or not isinstance(recorded, dict)
        ):
            raise TypeError("expected an object with an integer epoch >= 1 and a history object")
        history = History(**recorded)
        if not isinstance(history.epochs, list) or len(history.epochs) != epoch:
            raise TypeError(f"the history must hold one record per epoch done ({epoch})")
        best = history.best_epoch
        if best is not None and (
            isinstance(best, bool) or not isinstance(best, int) or not 0 <= best < epoch
        ):
            raise TypeError(f"best_epoch is {bounded(best)}; expected null or an epoch index below {epoch}")
    except TypeError as err:
        raise RunError(f"{path}: {err}; the checkpoint is damaged: start again with --overwrite") from None
    return epoch, history


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
    with staging.staged(path) as tmp:  # a link named history.png is replaced, not written through
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# ---- reading a run back ----------------------------------------------------------------------
def task_of(spec: ModelSpec) -> str:
    """The run task a bundle's spec serves (bundles not written by `rnncore train` say none)."""
    if spec.head is not None and spec.head.task == "tagging":
        return "tagging"
    return "text-classification" if spec.input.kind == "tokens" else "sequence-classification"


def _run_info(folder: Path) -> dict[str, Any]:
    """run.json of a training run; for any other bundle, what its config.json tells. Checked:
    a damaged file is refused here, naming it, not met later as a KeyError or a bad int."""
    try:
        config = bundle.read_config(folder)  # refuses a folder that is not a bundle, with the reason
    except bundle.BundleError:
        busy = describe_holder(folder)
        if busy is None:
            raise
        raise RunError(
            f"{folder} is still training ({busy}); its model is written when training ends: wait for it, "
            f"or evaluate its newest checkpoint ({folder / 'checkpoints'}/epoch-NNNN, with --data)"
        ) from None
    info_path = bundle.own_path(folder, "run.json")
    if info_path.is_file():
        info = read_json(info_path, RunError)
        _check_run_info(info, info_path)
        return dict(info)
    spec, _ = bundle.load_weights_and_spec(folder)
    task = config.get("task") or task_of(spec)
    max_len = config.get("max_len") or TrainConfig().max_len
    info = {"task": task, "data": None, "backend": config.get("backend", "torch"),
            "train": {"max_len": max_len, "seed": 0},
            "constrain_decoding": config.get("constrain_decoding")}  # fmt: skip
    if "columns" in config:
        info["columns"] = config["columns"]
    _check_run_info(info, folder / bundle.CONFIG)
    return info


def _check_run_info(info: Any, where: Path) -> None:
    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    train = info.get("train") if isinstance(info, dict) else None
    if not isinstance(train, dict):
        raise RunError(f'{where}: expected an object with "task", "backend", "data" and "train"')
    if info.get("task") not in TASKS:
        raise RunError(f"{where}: task is {info.get('task')!r}; expected one of {', '.join(TASKS)}")
    backend, data = info.get("backend"), info.get("data")
    reader = info.get("reader")
    if reader is not None and not (isinstance(reader, dict) and isinstance(reader.get("format"), str)):
        raise RunError(f'{where}: "reader" must be an object naming the data "format" (or be absent)')
    if not (isinstance(backend, str) and backend.lower() in ALIASES and isinstance(data, (str, type(None)))):
        raise RunError(f'{where}: "backend" must name a backend and "data" a data source')
    if not (integer(train.get("max_len")) and train["max_len"] >= 1 and integer(train.get("seed"))):
        raise RunError(f"{where}: max_len must be an integer >= 1 and seed an integer")
    columns = info.get("columns", ["text", "label"])
    if not (isinstance(columns, list) and len(columns) == 2 and all(isinstance(c, str) for c in columns)):
        raise RunError(f'{where}: "columns" must be [text column, label column], two names')
    if info.get("constrain_decoding") not in (None, *crf.SCHEMES):
        raise RunError(f"{where}: constrain_decoding must be null or one of {', '.join(crf.SCHEMES)}")


def load_run(
    run: str | Path, backend: str | None = None, device: str | None = None
) -> tuple[Any, Encoder, dict[str, Any]]:
    """The model of a run folder or any bundle on `backend` (default: the one that wrote it),
    on `device` (see `rnncore.build`; a run trained on a GPU loads on a CPU and back)."""
    run = Path(run)
    info = _run_info(run)
    model = bundle.load(run, backend=backend or info["backend"], device=device)
    tokenizer = None
    tokenizer_folder = bundle.tokenizer_folder(run)  # refuses links out of the bundle
    if tokenizer_folder is not None:
        from ..tokenize import Tokenizer

        tokenizer = Tokenizer.from_pretrained(tokenizer_folder)
    labels = LabelVocab(tuple(bundle.load_labels(run, spec_of(model)) or ()))
    max_len = int(info["train"].get("max_len", TrainConfig().max_len))
    return model, Encoder(info["task"], labels, tokenizer, max_len), info


def evaluate_run(
    run: str | Path,
    data: str | None = None,
    split_name: str = "test",
    backend: str | None = None,
    columns: tuple[str, str] | None = None,
    tag_column: str | int | None = None,
    scheme: str | None = None,
    mode: str = "default",
    device: str | None = None,
    constrain: str | None = None,
) -> dict[str, Any]:
    """Metrics of a run's model on `data` (default: the run's test file, or the internal split
    `split_name` of its training data).

    `columns` names the text and label columns of a table file (default: the run's own, or
    text/label for a bundle that does not record them); a run trained with `--test FILE`
    scores that file by default.

    The data is read as the run read its own (run.json's "reader"): the same columns, tag
    field or token column, with the layout of another file detected again. `columns` (text
    and label columns of a table file) and `tag_column` override those choices; a bundle that
    is not a training run reads text/label and, for tagging, UPOS or the last column.

    A tagging run adds "tagging": the report of `rnncore.train.tagging.tagging_report`,
    entities read in `scheme` (default: inferred from the tags) and `mode`, beside the
    most-frequent-tag baseline of the run's training split.

    `constrain` (a tag scheme) decodes a tagger under that scheme's constraints; by default a run
    decodes as it was trained to (`train_run`'s `constrain`).
    """
    model, encoder, info = load_run(run, backend, device)
    if info["task"] != "tagging" and (scheme is not None or mode != "default"):
        raise RunError(f"{run} is a {info['task']} run; entity schemes and modes apply to tagging runs")
    if data is None and split_name == "test" and info.get("test"):
        data = info["test"]
    source = data or info["data"]
    if source is None:
        raise RunError(f"{run} is a model bundle, not a training run: say which data to score with --data")
    _check_usable(run, encoder)
    settings = _evaluation_reader(source, info, columns, tag_column)
    dataset = read_dataset(source, info["task"], settings=settings)
    whole = dataset
    if data is None or data_source(data) == data_source(info["data"]):
        dataset = split_dataset(dataset, int(info["train"]["seed"]))[split_name]
    try:
        encoded = encoder.encode(dataset, f"{source}")
    except DataError as err:
        raise RunError(str(err)) from None
    constrain = constrain or info.get("constrain_decoding")
    _check_decoding_options(info["task"], False, constrain)
    if constrain is not None:
        _check_scheme(encoder, constrain)
    scores: dict[str, Any] = evaluate(model, encoded, label_names=encoder.labels.labels, constrain=constrain)
    if info["task"] == "tagging":
        as_trained = source == info["data"] and columns is None and tag_column is None
        read = whole if as_trained else None  # else the training data is read as the run read it
        scores["tagging"] = _tagging_report(
            model, encoder, encoded, dataset, info, read, scheme, mode, constrain
        )
    return scores


def _tagging_report(
    model: Any,
    encoder: Encoder,
    encoded: Encoded,
    dataset: Any,
    info: dict[str, Any],
    training_data: Any,
    scheme: str | None,
    mode: str,
    constrain: str | None = None,
) -> dict[str, Any]:
    """The model's tagging report beside the most-frequent-tag baseline of its training split."""
    from .tagging import tagging_report

    train, missing = _training_split(info, training_data)
    baseline = None if train is None else most_frequent_tag(train.sentences, train.tags)
    names = encoder.labels.labels
    report = tagging_report(model, encoded, dataset.sentences, names, baseline, scheme, mode, constrain)
    if missing:
        report["baseline_missing"] = missing
    return report


def _training_split(info: dict[str, Any], data: Any = None) -> tuple[Any, str | None]:
    """(the run's training split, None), or (None, why there is none); `data`: the run's
    data when already read."""
    if info["data"] is None:
        return None, "a plain bundle has no training split to fit the baseline on"
    if data is None:
        try:
            settings = _evaluation_reader(info["data"], info, None, None)
            data = read_dataset(info["data"], info["task"], settings=settings)
        except (RunError, DataError) as err:
            return None, f"the run's training data cannot be read ({err})"
    return split_dataset(data, int(info["train"]["seed"]))["train"], None


def _evaluation_reader(
    source: str, info: dict[str, Any], columns: tuple[str, str] | None, tag_column: str | int | None
) -> dict[str, Any]:
    recorded = info.get("reader")
    overrides: dict[str, Any] = {"tag_column": tag_column}
    if columns is not None:
        overrides.update(text_column=columns[0], label_column=columns[1])
    if recorded is not None and source == info["data"] and columns is None and tag_column is None:
        return dict(recorded)  # the training file itself, exactly as it was read
    if recorded is None:  # a run from before run.json recorded its reader, or a plain bundle
        text, label = info.get("columns", ("text", "label"))
        recorded = {"text_column": text, "label_column": label}
    return choose_data_reader(source, info["task"], request_from(recorded, **overrides))


def _check_usable(folder: str | Path, encoder: Encoder) -> None:
    """A bundle needs its tokenizer to read text and its label names to report classes."""
    if encoder.task != "sequence-classification" and encoder.tokenizer is None:
        raise RunError(
            f"{folder} has no tokenizer/ folder; text needs the tokenizer the model was trained with"
        )
    if not encoder.labels.labels:
        raise RunError(f"{folder} has no labels.json; save the bundle with its label names")


def table_texts(run: str | Path, path: str | Path) -> list[str] | None:
    """The texts of a .csv/.tsv/.jsonl file to classify, from the run's own text column; None
    for any other file (read as one text per line). A table's header and label column are
    not texts: read line by line they would be classified too."""
    fmt = suffix_format(path)
    if fmt not in ("csv", "tsv", "jsonl"):
        return None
    info = _run_info(Path(run))
    recorded = info.get("reader") or {}
    column = recorded.get("text_column", info.get("columns", ("text",))[0])
    # Predicting needs no labels: naming the text column as both reads every row's text and
    # checks it, whether or not the file has a label column.
    settings = {"format": fmt, "text_column": column, "label_column": column}
    return list(read_with(path, settings).texts)


def predict_texts(
    run: str | Path, texts: list[str], backend: str | None = None, device: str | None = None
) -> list[dict[str, Any]]:
    from ..api import predict

    model, encoder, info = load_run(run, backend, device)
    _check_usable(run, encoder)
    if info["task"] != "text-classification":
        raise RunError(f"{run} is a {info['task']} run; `predict` with texts needs a text-classification run")
    ids, lengths = encoder.encode_texts(texts)
    logits = predict(model, ids, lengths)
    broken = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if len(broken):  # finite weights can still overflow: never print a label for a NaN
        raise RunError(
            f"the model's outputs for text {int(broken[0])} hold NaN or infinity; it cannot classify it"
        )
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
