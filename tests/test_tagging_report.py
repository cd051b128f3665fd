"""The tagging report of `rnncore evaluate`, on the bundled POS and NER data.

The models are untrained (their predictions are whatever random weights give): the report
is checked for scoring the model and the baseline on the same words, by the metric the
tags call for, agreeing with the run metrics computed by another path (`loop.evaluate`).
"""

from __future__ import annotations

import pytest

import rnncore
from rnncore import metrics
from rnncore.baselines import most_frequent_tag
from rnncore.data import load_bundled
from rnncore.train.loop import evaluate
from rnncore.train.run import default_spec, fit_encoder, split_dataset
from rnncore.train.tagging import SHOWN_TAGS, TaggingReportError, format_tagging_report, tagging_report


def _setup(name: str, max_len: int = 512):
    data = load_bundled(name).subset(range(300))
    parts = split_dataset(data, seed=0)
    encoder = fit_encoder("tagging", parts["train"], max_len, inventory=data)
    model = rnncore.build(default_spec("tagging", encoder, parts["train"]), "torch", seed=0)
    baseline = most_frequent_tag(parts["train"].sentences, parts["train"].tags)
    test = parts["test"]
    return model, encoder, encoder.encode(test, "test split"), test, baseline


@pytest.fixture(scope="module")
def pos():
    return _setup("brown_pos")


@pytest.fixture(scope="module")
def ner():
    return _setup("ner_iob2")


def test_pos_tags_get_token_accuracy_per_tag(pos):
    model, encoder, encoded, test, baseline = pos
    report = tagging_report(model, encoded, test.sentences, encoder.labels.labels, baseline)
    assert report["metric"] == "token_accuracy" and "scheme" not in report
    run_scores = evaluate(model, encoded, label_names=encoder.labels.labels)
    assert report["model"]["accuracy"] == pytest.approx(run_scores["accuracy"], rel=1e-12)
    words = sum(map(len, test.tags))
    assert report["model"]["support"] == report["baseline"]["support"] == words
    guessed = baseline.predict(test.sentences)
    assert report["baseline"]["accuracy"] == pytest.approx(metrics.token_accuracy(test.tags, guessed))
    assert report["baseline"]["accuracy"] > 0.6  # most-frequent-tag on 240 training sentences of Brown
    nouns = sum(tag == "nn" for row in test.tags for tag in row)
    assert report["model"]["per_tag"]["nn"]["support"] == nouns
    assert sum(tag["support"] for tag in report["model"]["per_tag"].values()) == words


def test_entity_tags_get_entity_scores_per_type(ner):
    model, encoder, encoded, test, baseline = ner
    names = encoder.labels.labels
    report = tagging_report(model, encoded, test.sentences, names, baseline)
    assert (report["metric"], report["scheme"], report["mode"]) == ("entity", "IOB2", "default")
    run_scores = evaluate(model, encoded, label_names=names)
    assert report["model"]["f1"] == pytest.approx(run_scores["entity_f1"], rel=1e-12)
    guessed = baseline.predict(test.sentences)
    expected = metrics.entity_precision_recall_f1(test.tags, guessed)
    assert report["baseline"]["f1"] == pytest.approx(expected["f1"]) and report["baseline"]["f1"] > 0.2
    per_type = report["baseline"]["per_type"]
    assert (
        sum(t["support"] for t in per_type.values()) == report["baseline"]["support"] == expected["support"]
    )


def test_strict_mode_reaches_both_model_and_baseline(ner):
    model, encoder, encoded, test, baseline = ner
    report = tagging_report(model, encoded, test.sentences, encoder.labels.labels, baseline, mode="strict")
    assert report["mode"] == "strict" == report["model"]["mode"] == report["baseline"]["mode"]
    guessed = baseline.predict(test.sentences)
    strict = metrics.entity_precision_recall_f1(test.tags, guessed, mode="strict")
    assert report["baseline"]["f1"] == pytest.approx(strict["f1"])


def test_the_baseline_is_scored_on_the_words_the_model_sees():
    model, encoder, encoded, test, baseline = _setup("ner_iob2", max_len=6)
    report = tagging_report(model, encoded, test.sentences, encoder.labels.labels, baseline)
    full = metrics.entity_precision_recall_f1(test.tags, test.tags)["support"]
    assert report["model"]["support"] == report["baseline"]["support"] < full


def test_refusals(pos, ner):
    model, encoder, encoded, test, baseline = pos
    with pytest.raises(TaggingReportError, match="strict entity scores need entity tags"):
        tagging_report(model, encoded, test.sentences, encoder.labels.labels, baseline, mode="strict")
    model, encoder, encoded, test, baseline = ner
    with pytest.raises(ValueError, match=r"tag 'B-.*' is not valid in IOE2"):
        tagging_report(model, encoded, test.sentences, encoder.labels.labels, baseline, scheme="IOE2")


def test_terminal_table(pos, ner):
    model, encoder, encoded, test, baseline = ner
    lines = format_tagging_report(
        tagging_report(model, encoded, test.sentences, encoder.labels.labels, baseline)
    )
    assert lines[0] == "entities (IOB2, default mode): model | most-frequent-tag baseline"
    assert lines[1].split() == ["support", "precision", "recall", "f1", "|", "precision", "recall", "f1"]
    assert lines[2].split()[0] == "all" and len(lines[2].split()) == 9
    model, encoder, encoded, test, _ = pos
    report = tagging_report(model, encoded, test.sentences, encoder.labels.labels, None)
    report["baseline_missing"] = "a plain bundle has no training split to fit the baseline on"
    lines = format_tagging_report(report)
    assert lines[0] == "token accuracy: model | most-frequent-tag baseline"
    assert lines[2].split()[-2:] == ["|", "-"]  # no baseline value
    assert len(lines) == 3 + SHOWN_TAGS + 2
    assert lines[-2] == f"({len(report['model']['per_tag']) - SHOWN_TAGS} more in --json)"
    assert lines[-1] == "(no baseline: a plain bundle has no training split to fit the baseline on)"
