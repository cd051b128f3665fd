"""The command line as a new user meets it (issue 36): runs that remember their settings,
errors in the CLI's words, output fit for a file, Ctrl-C, and exports an app can use."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rnncore
from rnncore import cli
from rnncore.data import load_bundled

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["--text-column", "review", "--label-column", "verdict"]
SMALL = ["--epochs", "1", "--batch-size", "16", "--max-len", "24", "--quiet"]


def _rnncore(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnncore", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def _write_csv(path: Path, rows, header=("review", "verdict")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> dict[str, Path]:
    """Real Rotten Tomatoes snippets under the column names review/verdict: a training file
    and a separate test file."""
    folder = tmp_path_factory.mktemp("reviews")
    data = load_bundled("rotten_tomatoes")
    return {
        "train": _write_csv(folder / "reviews.csv", zip(data.texts[:240], data.labels[:240], strict=True)),
        "test": _write_csv(folder / "test.csv", zip(data.texts[240:300], data.labels[240:300], strict=True)),
    }


@pytest.fixture(scope="module")
def trained(reviews, tmp_path_factory) -> Path:
    """One small torch run on review/verdict columns, shared by the tests that only read it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(["train", "--data", str(reviews["train"]), "--out", str(run), *COLUMNS, *SMALL]) == 0
    return run


# ---- 1. one class ----------------------------------------------------------------------------
def test_a_one_class_dataset_is_refused_before_training(reviews, tmp_path, capsys):
    data = load_bundled("rotten_tomatoes")
    one_class = _write_csv(tmp_path / "one.csv", [(text, "fresh") for text in data.texts[:60]])
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(one_class), "--out", str(run), *COLUMNS, *SMALL]) == 2
    err = capsys.readouterr().err
    assert "one class ('fresh')" in err and "--label-column" in err and "Traceback" not in err
    assert not run.exists()


def test_a_very_rare_class_trains_with_a_warning(tmp_path, capsys):
    data = load_bundled("rotten_tomatoes")
    rows = [(text, "fresh" if i % 2 else "rotten") for i, text in enumerate(data.texts[:200])]
    rows += [(data.texts[200], "meh")]  # 1 of 201
    skewed = _write_csv(tmp_path / "skewed.csv", rows)
    assert cli.main(["train", "--data", str(skewed), "--out", str(tmp_path / "run"), *COLUMNS, *SMALL]) == 0
    err = capsys.readouterr().err
    assert "rnncore: warning: class 'meh' has 1 of 201 examples" in err
    assert "fresh" not in err and "rotten" not in err  # the common classes are not flagged


def test_a_small_balanced_set_warns_of_no_class(tmp_path, recwarn):
    from rnncore.runinfo import DataWarning, check_classes

    check_classes([str(i % 10) for i in range(60)], "sixty.npz")  # 10 classes of 6
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]
    with pytest.warns(DataWarning, match="class 'z' has 2 of 152"):  # 1.3%, but 2 against an even share of 14
        check_classes([*(str(i % 10) for i in range(150)), "z", "z"], "skewed.npz")


# ---- 2. bundles carry the data settings; the model card's commands run --------------------------
def test_a_ported_bundle_reads_data_with_the_runs_columns(trained, reviews, tmp_path, capsys):
    ported = tmp_path / "ported"
    assert cli.main(["port", str(trained), "--to", "tensorflow", "--out", str(ported)]) == 0
    assert json.loads((ported / "config.json").read_text())["columns"] == ["review", "verdict"]
    capsys.readouterr()
    assert cli.main(["evaluate", str(ported), "--data", str(reviews["test"]), "--json"]) == 0
    from_bundle = json.loads(capsys.readouterr().out)
    assert cli.main(["evaluate", str(trained), "--data", str(reviews["test"]), "--json"]) == 0
    assert from_bundle == pytest.approx(json.loads(capsys.readouterr().out), abs=1e-5)


def test_the_model_cards_commands_run_as_written(trained, reviews, tmp_path, capsys):
    ported = tmp_path / "ported"
    assert cli.main(["port", str(trained), "--to", "tensorflow", "--out", str(ported)]) == 0
    card = (ported / "README.md").read_text(encoding="utf-8")
    assert "column `review`" in card and "column `verdict`" in card
    commands = [line for line in card.splitlines() if line.startswith("rnncore ")]
    assert [c.split()[1] for c in commands] == ["evaluate", "predict", "port", "export"]
    names = {"THIS_FOLDER": str(ported), "test.csv": str(reviews["test"]),
             "OTHER_FOLDER": str(tmp_path / "other"),
             "model.tflite": str(tmp_path / "model.tflite")}  # fmt: skip
    for command in commands:
        args = [names.get(word, word) for word in shlex.split(command)[1:]]
        assert cli.main(args) == 0, command
    assert (tmp_path / "other" / "config.json").is_file() and (tmp_path / "model.tflite").is_file()


# ---- 3. --resume alone ----------------------------------------------------------------------
def test_resume_alone_continues_the_run_with_its_own_data_and_columns(reviews, tmp_path, monkeypatch):
    run = tmp_path / "run"
    settings = ["--data", str(reviews["train"]), *COLUMNS, "--lr", "0.01", "--max-len", "24", "--quiet"]
    assert cli.main(["train", "--out", str(run), *settings, "--epochs", "1"]) == 0
    straight = tmp_path / "straight"
    assert cli.main(["train", "--out", str(straight), *settings, "--epochs", "2"]) == 0
    monkeypatch.chdir(tmp_path / "..")  # from elsewhere: the data path is remembered absolute
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["columns"] == ["review", "verdict"] and info["data"] == str(reviews["train"].resolve())
    assert info["train"]["lr"] == 0.01 and info["train"]["max_len"] == 24 and info["train"]["epochs"] == 2
    assert len(json.loads((run / "history.json").read_text())["epochs"]) == 2
    a, b = rnncore.get_weights(rnncore.load(run)), rnncore.get_weights(rnncore.load(straight))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(
    ("flag", "value", "recorded"),
    [
        ("--data", "test", "reviews.csv"),
        ("--label-column", "score", "'verdict'"),
        ("--task", "tagging", "'text-classification'"),
        ("--max-len", "50", "24"),
    ],
)
def test_resume_refuses_a_flag_that_disagrees_with_the_run(trained, reviews, flag, value, recorded, capsys):
    given = str(reviews["test"]) if value == "test" else value
    assert cli.main(["train", "--out", str(trained), "--resume", flag, given]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rnncore: error: {flag} is ") and recorded in err and given in err
    assert len(err.splitlines()) == 1


def test_resume_alone_of_a_folder_that_is_no_run_says_so(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "run.json does not exist" in err
    assert list((tmp_path / "run").iterdir()) == []  # and no bundled data was trained into it


# ---- 4. messages in the CLI's words ---------------------------------------------------------
def test_messages_name_the_flag_on_the_command_line_and_the_keyword_in_python(reviews, tmp_path, capsys):
    assert cli.main(["train", "--data", str(reviews["train"]), "--out", str(tmp_path / "r"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "no text column 'text'" in err and "Pass --text-column <one of these>" in err
    assert "text_column=" not in err and "header=False" not in err
    with pytest.raises(rnncore.data.DataError, match=r"Pass text_column=<one of these>, or header=False"):
        rnncore.data.read_texts(reviews["train"])


def test_a_folder_that_is_no_bundle_names_the_commands_that_write_one(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["predict", str(tmp_path / "empty"), "a text"]) == 2
    err = capsys.readouterr().err
    assert "`rnncore train`" in err and "`rnncore port`" in err and "rnncore.save" not in err
    with pytest.raises(rnncore.bundle.BundleError, match=r"written by rnncore\.save"):
        rnncore.load(tmp_path / "empty")


def test_weights_of_another_model_are_explained_without_the_python_api(trained, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    import shutil

    shutil.copytree(trained, damaged)
    config = json.loads((damaged / "config.json").read_text())
    config["spec"]["encoder"]["hidden_size"] += 1
    (damaged / "config.json").write_text(json.dumps(config))
    assert cli.main(["predict", str(damaged), "a text"]) == 2
    err = capsys.readouterr().err
    assert "written for a different model" in err and "init_weights/get_weights" not in err
    with pytest.raises(rnncore.bundle.BundleError, match="init_weights/get_weights"):
        rnncore.load(damaged)


# ---- 5. Ctrl-C --------------------------------------------------------------------------------
def test_ctrl_c_says_which_checkpoint_is_kept_and_how_to_continue(digits_npz, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "rnncore", "train", "--task", "sequence-classification",
               "--data", str(digits_npz(300)), "--out", str(run), "--epochs", "500", "--quiet"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "LATEST").is_file():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == cli.EXIT_INTERRUPTED
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    kept = re.search(r"kept checkpoint (\S+) \((\d+) epoch\(s\) done\)", err)
    assert kept and Path(kept.group(1)).is_dir(), err
    assert Path(kept.group(1)).name == (run / "checkpoints" / "LATEST").read_text().strip()
    again = err.split("Continue with: ")[1].strip()
    assert shlex.split(again) == ["rnncore", "train", "--out", str(run), "--resume"]
    done = int(kept.group(2))  # the printed command continues the run (here: one epoch more)
    resumed = _rnncore(*shlex.split(again)[1:], "--epochs", str(done + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert len(json.loads((run / "history.json").read_text())["epochs"]) == done + 1


# ---- 6. output: no bars in files, subcommand usage, defaults in --help, --test ---------------------
def test_redirected_training_output_is_one_line_per_epoch(reviews, tmp_path):
    run = tmp_path / "run"
    done = _rnncore("train", "--data", str(reviews["train"]), "--out", str(run), *COLUMNS,
                    "--epochs", "2", "--batch-size", "16", "--max-len", "24")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr and done.stderr == ""
    epochs = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert len(done.stdout) < 2500  # was 400 KB of progress-bar frames for a longer run
    assert "internal test split (10% of --data)" in done.stdout
    assert f"{run / 'run.json'}" in done.stdout  # the closing summary says what was written where


def test_an_unknown_option_prints_the_subcommands_usage(tmp_path):
    done = _rnncore("evaluate", str(tmp_path), "--no-such-option")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: rnncore evaluate") and "--no-such-option" in done.stderr


def test_help_shows_the_defaults():
    from rnncore.train.run import DEFAULT_TRAIN

    text = " ".join(_rnncore("train", "--help").stdout.split())  # unwrapped
    config = DEFAULT_TRAIN["text-classification"]
    text = text.replace("text- classification", "text-classification")  # argparse breaks at hyphens
    for flag, value in [("--epochs", config.epochs), ("--lr", config.lr), ("--max-len", config.max_len)]:
        assert re.search(rf"{flag} [A-Z_]+ [^(]*\(default: [^)]*{value} for text-classification", text), flag
    assert f"examples per step (default: {config.batch_size})" in text
    assert "(default: text-classification)" in text and "(default: torch)" in text
    parity = " ".join(_rnncore("parity", "--help").stdout.split())
    assert "(default 8)" in parity and "(default: False)" not in parity and "(default: None)" not in parity


def test_a_test_file_is_scored_instead_of_the_internal_split(reviews, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(reviews["train"]), "--test", str(reviews["test"]), "--out", str(run)]
    assert cli.main([*args, *COLUMNS, *SMALL]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("test file"))
    accuracy = float(line.split("accuracy ")[1].split(",")[0])
    assert cli.main(["evaluate", str(run), "--json"]) == 0  # the run's test file by default
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert cli.main(["evaluate", str(run), "--data", str(reviews["test"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(accuracy, abs=1e-4)


def test_tensorflow_start_up_lines_are_held_back_unless_verbose(trained):
    done = _rnncore("predict", str(trained), "--backend", "tensorflow", "a quietly moving film")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.split("\t")[0] in ("fresh", "rotten")


# ---- 7. exports an app can use ------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "runtime"), [("onnx", "onnxruntime"), ("tflite", "ai_edge_litert")])
def test_an_export_carries_what_an_app_needs_and_the_example_app_runs(trained, tmp_path, fmt, runtime):
    pytest.importorskip(runtime)
    model = tmp_path / f"model.{fmt}"
    done = _rnncore("export", str(trained), "--format", fmt, "--out", str(model))
    assert done.returncode == 0, done.stderr
    app = json.loads(Path(f"{model}.json").read_text())
    assert app["format"] == "rnncore.app/1" and app["model"] == model.name
    assert [(i["name"], i["dtype"]) for i in app["inputs"]] == [("inputs", "int64"), ("lengths", "int64")]
    assert app["padding_id"] == 0 and app["max_len"] == 24 and app["labels"] == ["fresh", "rotten"]
    assert Path(f"{model}.labels.txt").read_text().split() == ["fresh", "rotten"]
    vocab = Path(f"{model}.vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[0] == "[PAD]" and vocab[1] == "[UNK]"
    assert _input_dtypes(model, fmt) == {"inputs": np.int64, "lengths": np.int64}  # the file agrees
    texts = ["a quietly moving film", "dull , dull and far too long", "zzqx"]
    # the app: a copy of the export folder, run from there with numpy, tokenizers and the runtime only
    example = subprocess.run([sys.executable, str(ROOT / "docs" / "app_example.py"), model.name, *texts],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300,
                             env={**os.environ, "PYTHONPATH": ""})  # fmt: skip
    assert example.returncode == 0, example.stderr
    expected = _rnncore("predict", str(trained), *texts)
    assert example.stdout == expected.stdout


def _input_dtypes(model: Path, fmt: str) -> dict[str, type]:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        kinds = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
        return {i.name: kinds[i.type] for i in session.get_inputs()}
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model)).get_signature_runner("serving_default")
    return {name: detail["dtype"] for name, detail in runner.get_input_details().items()}


# ---- 8. start-up -----------------------------------------------------------------------------------
def test_a_tensorflow_predict_does_not_import_torch(trained):
    probe = (
        "import sys; from rnncore import cli; "
        f"sys.argv = ['rnncore', 'predict', {str(trained)!r}, '--backend', 'tensorflow', 'a fine film']; "
        "code = cli.entry(); "
        "print('torch' in sys.modules, 'tensorflow' in sys.modules); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False True"
