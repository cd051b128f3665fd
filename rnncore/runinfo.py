"""What a training run remembers, and the checks on data before training starts.

`rnncore train --out RUN --resume` alone continues a run: the data, columns, task, backend,
test file and training settings come from RUN/run.json, and the model spec from the newest
checkpoint. A flag given again must agree with what the run recorded, or the run is refused
with both values named (a different `--data` would meet a weight-shape error much later, or
worse, train the old weights on other data). Two flags may change: `--epochs` (a larger value
trains the run further) and `--backend` (checkpoints hold canonical weights and optimizer
state, so a run started on TensorFlow may continue on torch).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .jsonfile import read_json
from .train.config import TrainConfig

DEFAULT_TASK = "text-classification"
DEFAULT_BACKEND = "torch"
DEFAULT_COLUMNS = ("text", "label")
BUNDLED_PREFIX = "bundled:"
# a class this rare leaves the internal 10% test split with a handful of examples or none
RARE_FRACTION, RARE_COUNT = 0.01, 10


class RunSettingError(ValueError):
    """A flag disagrees with what the run being resumed recorded."""


class DataWarning(UserWarning):
    """The data trains, but its scores may mislead (a very rare class)."""


@dataclass(frozen=True)
class RunSettings:
    """Where a run's data comes from and how it is read (what run.json records)."""

    task: str = DEFAULT_TASK
    data: str | None = None
    valid: str | None = None
    test: str | None = None
    columns: tuple[str, str] = DEFAULT_COLUMNS
    backend: str = DEFAULT_BACKEND


def data_source(value: str | None) -> str | None:
    """A data path made absolute (a resumed run may start from another folder); `bundled:`
    names and None pass through."""
    if value is None or value.startswith(BUNDLED_PREFIX):
        return value
    return str(Path(value).expanduser().resolve())


def resolve(given: Mapping[str, Any], recorded: Mapping[str, Any] | None) -> RunSettings:
    """The settings of a run from the flags `given` (None: not given) and, when resuming,
    what run.json `recorded`; a given flag that disagrees with the record is refused."""
    if recorded is None:
        return RunSettings(
            task=given.get("task") or DEFAULT_TASK,
            data=data_source(given.get("data")),
            valid=data_source(given.get("valid")),
            test=data_source(given.get("test")),
            columns=(given.get("text_column") or "text", given.get("label_column") or "label"),
            backend=given.get("backend") or DEFAULT_BACKEND,
        )
    columns = tuple(recorded.get("columns") or DEFAULT_COLUMNS)
    before = {name: recorded.get(name) for name in ("task", "data", "valid", "test")}
    before.update(text_column=columns[0], label_column=columns[1])
    for name, old in before.items():
        new = given.get(name)
        if name in ("data", "valid", "test"):  # (a run.json of rnncore 0.2 may hold a relative path)
            new, old = data_source(new), data_source(old)
        if new is not None and new != old:
            raise RunSettingError(_conflict(name, new, old))
    return RunSettings(
        task=str(before["task"]),
        data=before["data"],
        valid=before["valid"],
        test=before["test"],
        columns=(str(columns[0]), str(columns[1])),
        backend=given.get("backend") or str(recorded.get("backend") or DEFAULT_BACKEND),
    )


def recorded(run: str | Path, data_given: bool) -> dict[str, Any] | None:
    """RUN/run.json of a run to resume. Without one (a run folder made by hand), the flags
    must say where the data is: refused, saying why, when they do not; None when they do."""
    from .train.lock import describe_holder

    busy = describe_holder(Path(run))
    if busy is not None:  # said before anything else: run.json may not be written yet
        raise RunSettingError(f"{run} is in use: {busy} is writing it; wait for it to finish or stop it")
    path = Path(run) / "run.json"
    if path.is_symlink():  # a link planted in the run is never the run's own record
        if data_given:
            return None  # the flags say where the data is; the link is replaced, not followed
        raise RunSettingError(
            f"cannot resume: {path} is a symbolic link, not the run's own record; give --data (and "
            "the other settings) to resume from the flags, or remove the link"
        )
    if not path.is_file():
        if data_given:
            return None
        raise RunSettingError(
            f"cannot resume: {path} does not exist (is {run} a run folder written by `rnncore train`?)"
        )
    info = read_json(path, RunSettingError, "rnncore.run/1")
    if not isinstance(info.get("train"), dict):
        raise RunSettingError(f'{path}: expected an object with "task", "data", "columns" and "train"')
    return dict(info)


def _conflict(name: str, new: Any, old: Any) -> str:
    flag = "--" + name.replace("_", "-")
    return (
        f"{flag} is {new!r} but the run being resumed has {old!r}; leave {flag} out to continue "
        f"the run as it started, or start a new run (another --out, or --overwrite)"
    )


def resume_config(
    recorded: Mapping[str, Any], file_config: TrainConfig | None, overrides: Mapping[str, Any]
) -> TrainConfig:
    """The training settings of a resumed run: the recorded ones, where --config and the flags
    must agree with them except for `epochs` (which may grow: the run trains further)."""
    base = TrainConfig.from_dict(recorded)
    if file_config is not None:
        for field in (f.name for f in fields(TrainConfig)):
            value = getattr(file_config, field)
            if field != "epochs" and value != getattr(base, field):
                old = getattr(base, field)
                raise RunSettingError(
                    f"--config sets {field} {value!r} but the run being resumed has {old!r}; "
                    "resume with the run's own settings, or start a new run"
                )
        base = base.with_overrides(epochs=file_config.epochs)
    for field, value in overrides.items():
        if value is not None and field != "epochs" and value != getattr(base, field):
            raise RunSettingError(_conflict(field, value, getattr(base, field)))
    return base.with_overrides(**overrides)


def check_classes(labels: Iterable[str], where: str) -> None:
    """Refuse a classification set with one class; warn about a very rare one (under 1% of
    the examples, or under 10 and under a fifth of an even share).

    One class trains without a word and then reports accuracy 1.0 and log-loss 0.0 (found by
    a user who had named the wrong label column), so it is an error, not a result.
    """
    counts = Counter(labels)
    if len(counts) < 2:
        only = ", ".join(repr(c) for c in counts) or "none"
        raise RunSettingError(
            f"{where} has one class ({only}) in all {sum(counts.values())} examples; a classifier needs "
            "at least two (is --label-column the right column?)"
        )
    total = sum(counts.values())
    even_share = total / len(counts)
    for label, count in sorted(counts.items(), key=lambda item: item[1]):
        # rare against the data, not merely small: a small balanced set (10 classes of 6) warns
        # of nothing, which would otherwise bury real messages under one line per class
        if count < RARE_FRACTION * total or (count < RARE_COUNT and count < even_share / 5):
            warnings.warn(
                f"class {label!r} has {count} of {total:,} examples ({count / total:.1%}); the 10% "
                "internal test split holds few or none of them, so its scores say little about it",
                DataWarning,
                stacklevel=2,
            )
