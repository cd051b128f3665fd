"""Class 3 of issue 33: no traceback from any command, and nothing accepted silently.

Every expected failure exits 1 or 2 with one line naming the file or field and the fix; a bug
exits 70 with one line and the path of a file holding the traceback. Values are checked with
their types (a "3" is no integer), labels are exact, NaN is refused where it would pass as a
class or a score, and JSON output is always valid JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from budget_support import run_cli

from rnncore import boundary, cli, metrics
from rnncore.data import DataError, read_jsonl
from rnncore.data.containers import class_names
from rnncore.spec import SpecError
from rnncore.train.config import EARLY_STOPPING_METRICS, TrainConfig


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnncore: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    return err


# ---- training configs: types, names, finite numbers ----------------------------------------
@pytest.mark.parametrize(
    ("document", "words"),
    [
        ("5", ["train: got 5; expected an object"]),
        ("[]", ["train: got []; expected an object"]),
        ('{"warmup_steps": "3"}', ["train.warmup_steps", "'3'", "an integer >= 0"]),
        ('{"early_stopping_metric": "bogus"}', ["train.early_stopping_metric", "'bogus'", "macro_f1"]),
        ('{"lr": 1e999}', ["train.lr", "inf", "finite number > 0"]),
        ('{"lr": NaN}', ["NaN is not a JSON value"]),
        ('{"epochs": 2.5}', ["train.epochs", "positive integer"]),
        ('{"nesterov": "yes"}', ["train.nesterov", "true or false"]),
        ('{"seed": -1}', ["train.seed", "an integer >= 0"]),
        ("[" * 50_000 + "]" * 50_000, ["nested too deeply"]),
    ],
    ids=[
        "5",
        "[]",
        "warmup '3'",
        "bogus metric",
        "lr inf",
        "lr NaN",
        "epochs 2.5",
        "nesterov yes",
        "seed -1",
        "deep",
    ],
)
def test_a_bad_training_config_is_refused_naming_the_field(tmp_path, capsys, document, words):
    path = tmp_path / "train.json"
    path.write_text(document)
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_an_impossible_learning_rate_flag_is_refused(tmp_path, capsys, value):
    assert cli.main(["train", "--lr", value, "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "train.lr")


def test_every_early_stopping_metric_allowed_is_one_that_evaluation_measures():
    """The allowed names are the keys `evaluate` reports for some task (not copied from config)."""
    from rnncore.train import loop

    source = Path(loop.__file__).read_text()
    for name in EARLY_STOPPING_METRICS:
        assert f'"{name}"' in source or f'"{name.removeprefix("entity_")}"' in source, name
    with pytest.raises(SpecError, match="early_stopping_metric"):
        TrainConfig(early_stopping_metric="val_accuracy")


# ---- labels are exact ----------------------------------------------------------------------
def test_float_class_labels_in_npz_are_refused_not_truncated(tmp_path, capsys):
    x = np.zeros((6, 3, 2), np.float32)
    path = tmp_path / "seq.npz"
    np.savez(path, x=x, y=np.array([0.9, 1.0, 0.0, 1.0, 0.0, 1.0]))
    args = ["train", "--task", "sequence-classification", "--data", str(path), "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2
    _one_line_error(capsys, "seq.npz: y[0] is 0.9, not an integer class id")
    assert not (tmp_path / "run").exists()


def test_whole_float_labels_and_integer_labels_name_the_same_classes():
    assert class_names(np.array([0.0, 2.0, 1.0])) == class_names(np.array([0, 2, 1])) == ["0", "2", "1"]
    with pytest.raises(DataError, match=r"y\[1\] is nan"):
        class_names(np.array([0.0, np.nan]))


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("NaN", "NaN is not a JSON value"),
        ("Infinity", "Infinity is not a JSON value"),
        ("0.9", "the number 0.9; class labels are integers or strings"),
        ("1.0", "write 1"),
        ("null", "must be one string or integer"),
    ],
)
def test_a_jsonl_label_that_is_no_class_is_refused(tmp_path, label, message):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": ' + label + "}\n")
    with pytest.raises(DataError, match=rf"data\.jsonl:2: .*{message}"):
        read_jsonl(path)


def test_integer_and_boolean_jsonl_labels_are_kept_as_their_json_text(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": true}\n{"text": "c", "label": "x"}\n')
    assert read_jsonl(path).labels == ["1", "true", "x"]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_metrics_refuse_labels_that_are_not_finite(bad):
    with pytest.raises(ValueError, match=r"y_true\[1\] is (nan|inf); labels and scores must be finite"):
        metrics.accuracy([0.0, bad, 1.0], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"y_pred\[0\]"):
        metrics.accuracy([0.0, 1.0], [bad, 1.0])


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_roc_auc_refuses_scores_that_are_not_finite(bad):
    with pytest.raises(ValueError, match=r"scores\[2\]"):
        metrics.roc_auc_binary([0, 1, 1, 0], [0.1, 0.8, bad, 0.3])
    assert metrics.roc_auc_binary([0, 1, 1, 0], [0.1, 0.8, 0.7, 0.3]) == 1.0


# ---- the boundary itself --------------------------------------------------------------------
def test_an_unexpected_exception_is_one_line_and_its_traceback_is_filed(monkeypatch, capsys, tmp_path):
    def broken(args):
        raise KeyError("a bug deep inside")

    monkeypatch.setattr(cli, "cmd_validate", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    assert cli.main(["validate", "spec.json"]) == boundary.EXIT_INTERNAL
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error in `rnncore validate`: KeyError" in err, err
    assert "Traceback" not in err
    filed = list(tmp_path.glob("rnncore-crash-*.txt"))
    assert len(filed) == 1 and str(filed[0]) in err
    text = filed[0].read_text()
    assert "Traceback (most recent call last)" in text and "a bug deep inside" in text and "broken" in text


def test_out_of_memory_is_one_line_not_a_traceback(monkeypatch, capsys):
    def greedy(args):
        raise MemoryError

    monkeypatch.setattr(cli, "cmd_validate", greedy)
    assert cli.main(["validate", "spec.json"]) == 1
    _one_line_error(capsys, "out of memory")


def test_a_huge_error_message_is_cut(monkeypatch, capsys):
    def loud(args):
        raise ValueError("x" * 1_000_000)

    monkeypatch.setattr(cli, "cmd_validate", loud)
    assert cli.main(["validate", "spec.json"]) == 2
    err = _one_line_error(capsys, "characters cut")
    assert len(err) < 2 * boundary.MAX_MESSAGE_CHARS


def test_json_output_writes_nan_and_infinity_as_null():
    text = boundary.json_text({"accuracy": 0.5, "macro_f1": math.nan, "rows": [math.inf, 1.0]})
    assert json.loads(text) == {"accuracy": 0.5, "macro_f1": None, "rows": [None, 1.0]}
    assert "NaN" not in text and "Infinity" not in text


def test_a_config_that_is_a_number_is_refused_through_the_real_command(tmp_path):
    path = tmp_path / "train.json"
    path.write_text("5")
    run_cli("train", "--config", str(path), "--out", str(tmp_path / "run")).assert_refused(
        "expected an object"
    )


def test_a_bundle_whose_weights_hold_nan_is_refused_at_load(tmp_path, capsys):
    from rnncore import bundle
    from rnncore.spec import ModelSpec
    from rnncore.weights import init_weights

    tokens = {"kind": "tokens", "vocab_size": 20, "embedding_dim": 4}
    spec = ModelSpec.from_dict({"input": tokens, "encoder": {"cell": "gru", "hidden_size": 4}})
    weights = init_weights(spec)
    weights["head.output.bias"][1] = np.nan
    folder = tmp_path / "model"
    folder.mkdir()
    config = {"format": bundle.BUNDLE_FORMAT, "spec": spec.to_dict(), "backend": "torch"}
    (folder / bundle.CONFIG).write_text(json.dumps(config))
    bundle.write_weights(folder / bundle.WEIGHTS, weights)
    with pytest.raises(bundle.BundleError, match=r"head\.output\.bias holds NaN or infinity"):
        bundle.load_weights_and_spec(folder)
    assert cli.main(["predict", str(folder), "--json", "a text"]) == 2
    _one_line_error(capsys, "head.output.bias holds NaN or infinity")
