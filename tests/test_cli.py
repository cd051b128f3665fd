"""The command line: help, exit codes, parity, and a whole train -> evaluate -> predict run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import script_validation

import rnncore
from rnncore import cli
from rnncore.data import load_bundled

SMALL_SPEC = {
    "input": {"kind": "features", "feature_dim": 3},
    "encoder": {"cell": "gru", "hidden_size": 4, "num_layers": 2, "bidirectional": True},
    "pooling": "attention",
    "head": {"hidden": [3], "num_outputs": 2},
}


def _rnncore(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnncore", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SMALL_SPEC))
    return path


@pytest.fixture
def reviews_csv(tmp_path: Path) -> Path:
    """240 real Rotten Tomatoes snippets as a CSV with its own column names."""
    data = load_bundled("rotten_tomatoes")
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "verdict"])
        writer.writerows(zip(data.texts[:240], data.labels[:240], strict=True))
    return path


def test_help_works_everywhere():
    for args in ([], ["parity"], ["train"], ["evaluate"], ["predict"], ["demo"], ["schema"]):
        result = _rnncore(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: rnncore" in result.stdout


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_parity_passes_and_prints_a_table(spec_file):
    result = _rnncore("parity", str(spec_file), "--batch", "3", "--max-len", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("torch vs oracle", "tensorflow vs oracle", "torch vs tensorflow", "gradients"):
        assert line in result.stdout
    assert "all checks within tolerance" in result.stdout


def test_parity_exits_1_when_a_check_fails(spec_file, monkeypatch, capsys):
    from rnncore import tolerances

    strict = {key: tolerances.Tolerance(0.0, 0.0) for key in tolerances.TOLERANCES}
    monkeypatch.setattr(tolerances, "TOLERANCES", strict)
    assert cli.main(["parity", str(spec_file), "--backends", "torch", "--batch", "4"]) == 1
    assert "PARITY FAILED" in capsys.readouterr().out


def test_bad_spec_exits_2_with_the_reason_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SMALL_SPEC, "pooling": "sum"}))
    result = _rnncore("parity", str(bad))
    assert result.returncode == 2
    assert "pooling: got 'sum'" in result.stderr
    assert "Traceback" not in result.stderr


def test_schema_is_json(capsys):
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["properties"]["format"]["const"] == rnncore.FORMAT


def _train(reviews_csv: Path, out: Path, *extra: str) -> int:
    return cli.main(
        ["train", "--data", str(reviews_csv), "--out", str(out), "--epochs", "1", "--batch-size", "16",
         "--max-len", "24", "--quiet", *extra]
    )  # fmt: skip


def test_train_evaluate_predict_on_a_csv(reviews_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(reviews_csv, run, "--text-column", "review", "--label-column", "verdict") == 0
    for name in (
        "config.json",
        "model.safetensors",
        "labels.json",
        "run.json",
        "history.json",
        "history.png",
    ):
        assert (run / name).is_file(), name
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "epoch-0001"
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1"} <= set(scores) and 0.0 <= scores["accuracy"] <= 1.0
    assert "tagging" not in scores
    assert cli.main(["evaluate", str(run), "--strict"]) == 2
    assert "entity schemes and modes apply to tagging runs" in capsys.readouterr().err
    assert cli.main(["predict", str(run), "a quietly moving film", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["label"] in ("fresh", "rotten") and abs(sum(row["probabilities"].values()) - 1) < 1e-6


def test_a_torch_trained_run_predicts_the_same_on_tensorflow(reviews_csv, tmp_path):
    from rnncore.train.loop import predict_batched
    from rnncore.train.run import load_run, read_dataset

    run = tmp_path / "run"
    assert _train(reviews_csv, run, "--text-column", "review", "--label-column", "verdict") == 0
    torch_model, encoder, info = load_run(run)
    keras_model, _, _ = load_run(run, backend="tensorflow")
    data = encoder.encode(read_dataset(str(reviews_csv), info["task"], ("review", "verdict")), "all rows")
    torch_logits, keras_logits = predict_batched(torch_model, data), predict_batched(keras_model, data)
    np.testing.assert_array_equal(torch_logits.argmax(1), keras_logits.argmax(1))
    rnncore.tolerances.assert_close(keras_logits, torch_logits, "outputs", "float32")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("review,verdict\ngood,fresh\n", "column"),
        ("", "empty"),
        (b"text,label\n\xff\xfe bad bytes,fresh\n", "not valid utf-8"),
    ],
)
def test_bad_data_exits_2_without_writing_a_run(tmp_path, content, message, capsys):
    data = tmp_path / "data.csv"
    if isinstance(content, bytes):
        data.write_bytes(content)
    else:
        data.write_text(content)
    run = tmp_path / "run"
    assert _train(data, run) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


def test_an_existing_run_is_not_overwritten_without_asking(reviews_csv, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    assert _train(reviews_csv, run) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (run / "precious.txt").read_text() == "keep me"


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(digits_npz, tmp_path):
    data = digits_npz(300)
    common = [
        "train",
        "--task",
        "sequence-classification",
        "--data",
        str(data),
        "--batch-size",
        "32",
        "--quiet",
    ]
    assert cli.main([*common, "--out", str(tmp_path / "straight"), "--epochs", "3"]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "resumed"), "--epochs", "2"]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "resumed"), "--epochs", "3", "--resume"]) == 0
    straight = rnncore.load(tmp_path / "straight")
    resumed = rnncore.load(tmp_path / "resumed")
    a, b = rnncore.get_weights(straight), rnncore.get_weights(resumed)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_resume_after_the_best_epoch_still_restores_the_best_weights(digits_npz, tmp_path, monkeypatch):
    """Early stopping restores the best epoch; a run killed after that epoch must too."""
    # best at epoch 3 (index 2); patience 2 stops after epoch 5
    script_validation(monkeypatch, "log_loss", [0.9, 0.6, 0.5, 0.7, 0.8, 0.9, 1.0])
    data = digits_npz(300)
    config = tmp_path / "train.json"
    settings = {
        "lr": 0.3,
        "batch_size": 32,
        "early_stopping_patience": 2,
        "early_stopping_metric": "log_loss",
    }
    config.write_text(json.dumps({"format": "rnncore.train/1", **settings}))
    common = [
        "train",
        "--task",
        "sequence-classification",
        "--data",
        str(data),
        "--config",
        str(config),
        "--quiet",
    ]
    assert cli.main([*common, "--out", str(tmp_path / "straight"), "--epochs", "10"]) == 0
    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert history["best_epoch"] == 2 and history["stopped_early"] and len(history["epochs"]) == 5
    # the interrupted run: 4 epochs (one past the best), then resumed; it sees the same script
    assert cli.main([*common, "--out", str(tmp_path / "resumed"), "--epochs", "4"]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "resumed"), "--epochs", "10", "--resume"]) == 0
    resumed = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert resumed["best_epoch"] == 2 and resumed["stopped_early"] and len(resumed["epochs"]) == 5
    a = rnncore.get_weights(rnncore.load(tmp_path / "straight"))
    b = rnncore.get_weights(rnncore.load(tmp_path / "resumed"))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _write_jsonl(path: Path, texts, labels) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(
            json.dumps({"review": t, "verdict": y}) + "\n" for t, y in zip(texts, labels, strict=True)
        )
    return path


def test_jsonl_training_data_with_a_separate_validation_file(tmp_path, capsys):
    data = load_bundled("rotten_tomatoes")
    train = _write_jsonl(tmp_path / "train.jsonl", data.texts[:200], data.labels[:200])
    valid = _write_jsonl(tmp_path / "valid.jsonl", data.texts[200:240], data.labels[200:240])
    run = tmp_path / "run"
    columns = ["--text-column", "review", "--label-column", "verdict"]
    assert _train(train, run, "--valid", str(valid), *columns) == 0
    assert json.loads((run / "run.json").read_text())["valid"] == str(valid)
    assert all("val_accuracy" in epoch for epoch in json.loads((run / "history.json").read_text())["epochs"])
    # the validation file is really read: a label the training data never had is refused
    bad = _write_jsonl(tmp_path / "bad.jsonl", ["an odd one"], ["meh"])
    capsys.readouterr()
    assert _train(train, tmp_path / "run2", "--valid", str(bad), *columns) == 2
    assert "'meh'" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()


def test_a_folder_per_class_trains_like_aclimdb(tmp_path, capsys):
    data = load_bundled("rotten_tomatoes")
    for i, (text, label) in enumerate(zip(data.texts[:160], data.labels[:160], strict=True)):
        folder = tmp_path / "train" / ("pos" if label == "fresh" else "neg")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}_7.txt").write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    assert _train(tmp_path / "train", run) == 0
    assert rnncore.bundle.load_labels(run) == ["neg", "pos"]
    capsys.readouterr()
    assert cli.main(["predict", str(run), "--json", "a quietly moving film"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("neg", "pos")


def test_a_diverging_run_stops_with_exit_1_and_says_what_to_do(reviews_csv, tmp_path, capsys):
    config = tmp_path / "wild.json"
    config.write_text(json.dumps({"format": "rnncore.train/1", "optimizer": "sgd", "lr": 1e38}))
    run = tmp_path / "run"
    assert _train(reviews_csv, run, "--config", str(config), "--text-column", "review", "--label-column",
                  "verdict") == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "loss became" in err and "learning rate" in err and "Traceback" not in err
    assert not (run / "config.json").exists()  # no final model pretends the run finished


def test_evaluate_and_predict_take_a_plain_bundle_from_either_backend(reviews_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(reviews_csv, run, "--text-column", "review", "--label-column", "verdict") == 0
    model, encoder, _ = rnncore.train.run.load_run(run)
    keras_bundle = tmp_path / "bundle"
    on_keras = rnncore.build(rnncore.spec_of(model), "tensorflow", rnncore.get_weights(model))
    labels = list(encoder.labels.labels)
    rnncore.save(
        on_keras, keras_bundle, labels=labels, tokenizer=encoder.tokenizer, extra={"max_len": encoder.max_len}
    )
    capsys.readouterr()
    assert cli.main(["predict", str(run), "--json", "a quietly moving film"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert cli.main(["predict", str(keras_bundle), "--json", "a quietly moving film"]) == 0
    from_bundle = json.loads(capsys.readouterr().out)
    assert from_bundle["label"] == from_run["label"]
    assert from_bundle["probabilities"] == pytest.approx(from_run["probabilities"], abs=1e-5)
    assert cli.main(["evaluate", str(keras_bundle)]) == 2
    assert "--data" in capsys.readouterr().err
    data = load_bundled("rotten_tomatoes")
    unseen = tmp_path / "unseen.csv"
    with unseen.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [("review", "verdict"), *zip(data.texts[240:400], data.labels[240:400], strict=True)]
        )
    assert cli.main(["evaluate", str(keras_bundle), "--data", str(unseen), "--json"]) == 2
    assert "column" in capsys.readouterr().err  # a bundle does not know the CSV's column names
    columns = ["--text-column", "review", "--label-column", "verdict"]
    assert cli.main(["evaluate", str(keras_bundle), "--data", str(unseen), "--json", *columns]) == 0
    keras_scores = json.loads(capsys.readouterr().out)
    assert cli.main(["evaluate", str(run), "--data", str(unseen), "--json"]) == 0
    assert keras_scores == pytest.approx(json.loads(capsys.readouterr().out), abs=1e-5)


def test_unseen_labels_and_empty_texts_are_refused_by_a_trained_run(reviews_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(reviews_csv, run, "--text-column", "review", "--label-column", "verdict") == 0
    other = tmp_path / "other.csv"
    other.write_text("review,verdict\nnot bad at all,meh\n")
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--data", str(other)]) == 2
    assert "'meh'" in capsys.readouterr().err
    assert cli.main(["predict", str(run), "   "]) == 2
    assert "empty" in capsys.readouterr().err


def test_tagging_runs_report_entity_scores_for_iob_tags(tmp_path, capsys):
    ner = load_bundled("ner_iob2")
    conll = tmp_path / "ner.conll"
    with conll.open("w", encoding="utf-8") as handle:
        for words, tags in zip(ner.sentences[:150], ner.tags[:150], strict=True):
            handle.writelines(f"{w}\t{t}\n" for w, t in zip(words, tags, strict=True))
            handle.write("\n")
    run = tmp_path / "ner"
    args = ["train", "--task", "tagging", "--data", str(conll), "--out", str(run), "--epochs", "2", "--quiet"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--json", "--backend", "tensorflow"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"accuracy", "entity_precision", "entity_recall", "entity_f1"} <= set(scores)
    assert 0.0 <= scores["entity_f1"] <= 1.0
    tagging = scores["tagging"]
    assert (tagging["metric"], tagging["scheme"], tagging["mode"]) == ("entity", "IOB2", "default")
    assert tagging["model"]["f1"] == pytest.approx(scores["entity_f1"])
    assert tagging["baseline"]["support"] == tagging["model"]["support"] > 0
    assert cli.main(["evaluate", str(run), "--strict"]) == 0
    printed = capsys.readouterr().out
    assert "entities (IOB2, strict mode): model | most-frequent-tag baseline" in printed
    assert any(line.split()[:1] == ["all"] for line in printed.splitlines())
    assert cli.main(["evaluate", str(run), "--scheme", "IOE2"]) == 2  # IOB2 tags hold B-, which IOE2 lacks
    assert "is not valid in IOE2" in capsys.readouterr().err


def test_explain_prints_tokens_and_writes_a_page(reviews_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(reviews_csv, run, "--text-column", "review", "--label-column", "verdict") == 0
    page = tmp_path / "why.html"
    capsys.readouterr()
    text = "a moving film"
    assert cli.main(["explain", str(run), text, "--steps", "8", "--html", str(page), "--backend", "tf"]) == 0
    printed = capsys.readouterr().out
    assert "moving" in printed and "film" in printed and "completeness" in printed
    label = printed.split()[0]
    assert label in ("fresh", "rotten")
    html = page.read_text(encoding="utf-8")
    assert "moving" in html and label in html
    assert cli.main(["explain", str(run)]) == 2


def test_bench_hands_its_arguments_to_the_harness(tmp_path):
    # from another folder: the alias finds the checkout's harness itself
    done = _rnncore("bench", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m benchmarks" in done.stdout and "--quick" in done.stdout
    refused = _rnncore("bench", "--no-such-option", cwd=tmp_path)
    assert refused.returncode == 2 and "--no-such-option" in refused.stderr


def test_bench_outside_a_checkout_says_where_the_harness_is(monkeypatch, capsys):
    monkeypatch.setattr(cli, "benchmarks_checkout", lambda: None)
    assert cli.main(["bench", "--quick"]) == cli.EXIT_USAGE
    assert "source repository" in capsys.readouterr().err
