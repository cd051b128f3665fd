"""The tagging report of `rnncore evaluate`: the model beside the most-frequent-tag baseline.

With entity tags (O, B-X, I-X, ... in one of `rnncore.entities.SCHEMES`) the report gives
entity precision/recall/F1 overall and per entity type; with other tags (parts of speech)
token accuracy overall and per tag. The baseline (`rnncore.baselines.most_frequent_tag`) is
fitted on the run's training split and scored on the same words as the model: each row's
words up to the run's `max_len` cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import metrics
from ..baselines import MostFrequentTag
from ..entities import infer_scheme
from .loop import Encoded, predict_batched, tag_paths
from .losses import IGNORE_INDEX

# Rows of the terminal table per tag; --json holds them all (Brown's POS data has 218 tags).
SHOWN_TAGS = 15


class TaggingReportError(ValueError):
    """The report cannot be made as asked (e.g. entity scores for tags that are not entity tags)."""


def word_rows(encoded: Encoded, predicted: np.ndarray, names: tuple[str, ...]) -> tuple[list, list]:
    """True and predicted tag names per sentence, one per scored word (its first sub-token)."""
    true_rows, pred_rows = [], []
    for row, length in enumerate(encoded.lengths):
        targets = encoded.targets[row, :length]
        keep = targets != IGNORE_INDEX
        true_rows.append([names[i] for i in targets[keep]])
        pred_rows.append([names[i] for i in predicted[row, :length][keep]])
    return true_rows, pred_rows


def tagging_report(
    model: Any,
    encoded: Encoded,
    sentences: list[list[str]],
    names: tuple[str, ...],
    baseline: MostFrequentTag | None,
    scheme: str | None = None,
    mode: str = "default",
    constrain: str | None = None,
) -> dict[str, Any]:
    """Scores of `model` and of `baseline` on the encoded sentences, JSON-ready.

    Args:
        model: a tagging model.
        encoded: the sentences, encoded by the run's encoder.
        sentences: the same sentences as words (for the baseline).
        names: tag name of each class id.
        baseline: the fitted baseline, or None when there is no training split to fit it on.
        scheme: the entity scheme; default inferred from `names` (None: not entity tags).
        mode: "default" or "strict" entity reading (see `rnncore.entities`).
        constrain: the tag scheme (IOB1, IOB2, IOBES) whose illegal sequences the model's
            decoding avoids (`rnncore.crf`); the model's tags are its decoded paths (Viterbi
            for a CRF head).

    Returns:
        {"metric": "entity" or "token_accuracy", "scheme", "mode" (entities only),
        "model": report, "baseline": report or None} with the reports of
        `metrics.entity_report` or `metrics.tag_accuracy_report`.
    """
    scheme = scheme or infer_scheme(names)
    if scheme is None and mode != "default":
        raise TaggingReportError(
            "strict entity scores need entity tags (O, B-X, I-X, ...); this run's tags are not, "
            f"e.g. {', '.join(map(repr, names[:3]))}"
        )
    logits = predict_batched(model, encoded)
    predicted = tag_paths(model, logits, encoded.lengths, encoded.targets, names, constrain)
    true_rows, pred_rows = word_rows(encoded, predicted, names)
    guessed = None
    if baseline is not None:
        guessed = baseline.predict(
            [words[: len(row)] for words, row in zip(sentences, true_rows, strict=True)]
        )

    def score(rows: list[list[str]]) -> dict[str, Any]:
        if scheme is None:
            return metrics.tag_accuracy_report(true_rows, rows)
        return metrics.entity_report(true_rows, rows, scheme, mode)

    report: dict[str, Any] = {"metric": "token_accuracy" if scheme is None else "entity"}
    if scheme is not None:
        report.update(scheme=scheme, mode=mode)
    report["model"] = score(pred_rows)
    report["baseline"] = None if guessed is None else score(guessed)
    return report


def format_tagging_report(report: dict[str, Any]) -> list[str]:
    """The report as terminal lines: one table, model and baseline side by side."""
    model, baseline = report["model"], report["baseline"]
    columns: tuple[str, ...]
    if report["metric"] == "entity":
        title = f"entities ({report['scheme']}, {report['mode']} mode)"
        columns, per = ("precision", "recall", "f1"), "per_type"
    else:
        title, columns, per = "token accuracy", ("accuracy",), "per_tag"
    width = max(12, *(len(name) for name in model[per]))
    head = "".join(f"{c:>10}" for c in columns)
    lines = [f"{title}: model | most-frequent-tag baseline"]
    lines.append(f"{'':<{width}} {'support':>8}{head}  |{head}")
    rows = [("all", model, baseline)]
    shown = sorted(model[per], key=lambda name: (-model[per][name]["support"], name))
    rows += [(name, model[per][name], baseline and baseline[per].get(name)) for name in shown[:SHOWN_TAGS]]
    for name, ours, theirs in rows:
        values = "".join(f"{ours[c]:>10.4f}" for c in columns)
        other = "".join(f"{theirs[c]:>10.4f}" if theirs else f"{'-':>10}" for c in columns)
        lines.append(f"{name:<{width}} {ours['support']:>8}{values}  |{other}")
    if len(shown) > SHOWN_TAGS:
        lines.append(f"({len(shown) - SHOWN_TAGS} more in --json)")
    if baseline is None:
        lines.append(f"(no baseline: {report.get('baseline_missing', 'none was fitted')})")
    return lines
