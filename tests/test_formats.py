"""Data read by what it is: the reader chosen from the file, the summary of what was read, and
the warnings when data looks wrong for its task (rnncore.data.formats, rnncore.data.summary)."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import rnncore
from rnncore import cli
from rnncore.data import DataError, load_bundled
from rnncore.data.formats import (
    ReaderRequest,
    choose_reader,
    describe,
    parse_tag_column,
    read_with,
    request_from,
)
from rnncore.data.summary import render, summarize

UD_SAMPLE = Path(__file__).parent / "data" / "ud_english_ewt_sample.conllu"
# The 17 universal part-of-speech tags (universaldependencies.org/u/pos/).
UPOS = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X"}  # fmt: skip


def _ud_words() -> list[list[list[str]]]:
    """The sample's syntactic word lines, split into fields, per sentence (parsed here by hand)."""
    sentences: list[list[list[str]]] = [[]]
    for line in UD_SAMPLE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if sentences[-1]:
                sentences.append([])
        elif not line.startswith("#") and line.split("\t")[0].isdigit():
            sentences[-1].append(line.split("\t"))
    return [s for s in sentences if s]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_csv(path: Path, header: tuple[str, str], rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def _summary(path: Path, task: str, request: ReaderRequest | None = None) -> dict:
    settings = choose_reader(path, task, request or ReaderRequest())
    return summarize(task, {"train": read_with(path, settings)}, describe(settings), str(path))


# -- choosing the reader ---------------------------------------------------------------


def test_a_real_ud_file_is_read_as_conllu_forms_and_upos():
    settings = choose_reader(UD_SAMPLE, "tagging")
    assert settings == {"format": "conllu", "tag_field": "upos"}
    data = read_with(UD_SAMPLE, settings)
    words = _ud_words()
    assert data.sentences == [[w[1] for w in sentence] for sentence in words]
    assert data.tags == [[w[3] for w in sentence] for sentence in words]
    tags = {tag for row in data.tags for tag in row}
    assert tags <= UPOS and len(tags) >= 14  # the UPOS set, not IDs, "_" or MISC values
    tokens = {token for sentence in data.sentences for token in sentence}
    assert "Here's" not in tokens and {"Here", "'s"} <= tokens  # the multiword range 1-2 is skipped


@pytest.mark.parametrize("name", ["train.conll", "train.txt", "train", "train.conllu.gz"])
def test_the_content_decides_not_the_name(tmp_path, name):
    path = tmp_path / name
    raw = UD_SAMPLE.read_bytes()
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    assert choose_reader(path, "tagging")["format"] == "conllu"


@pytest.mark.parametrize(
    ("flag", "field", "first"),
    [("XPOS", "xpos", "PRP$"), ("deprel", "deprel", "nmod:poss"), ("7", "deprel", "nmod:poss")],
)
def test_tag_column_picks_the_conllu_field(flag, field, first):
    settings = choose_reader(UD_SAMPLE, "tagging", ReaderRequest(tag_column=parse_tag_column(flag)))
    assert settings == {"format": "conllu", "tag_field": field}
    assert read_with(UD_SAMPLE, settings).tags[0][0] == first


def test_plain_columns_stay_conll_with_the_last_column_as_tag(tmp_path):
    brown = _write(tmp_path / "brown.tsv", "The\tat\njury\tnn\n\nIt\tpps\n")
    conll2003 = _write(tmp_path / "ner.txt", "-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    for path in (brown, conll2003):
        assert choose_reader(path, "tagging") == {"format": "conll", "token_column": 0, "tag_column": -1}
    assert read_with(conll2003, choose_reader(conll2003, "tagging")).tags == [["B-ORG", "O"]]


def test_a_hash_token_is_not_taken_for_a_comment(tmp_path):
    spaced = _write(tmp_path / "spaced.txt", "# NN O\nprice NN O\n")
    tabbed = _write(tmp_path / "tabbed.txt", "#\tNN\nprice\tNN\n")
    for path in (spaced, tabbed):
        assert read_with(path, choose_reader(path, "tagging")).sentences == [["#", "price"]]


def test_ten_columns_without_token_ids_are_not_conllu(tmp_path):
    """The bundled Japanese NER file has 10 tab fields per line; its first column is the token."""
    ner = load_bundled("ner_iob2")
    lines = [
        "\t".join([w, *["_"] * 8, t]) for s, ts in zip(ner.sentences[:3], ner.tags[:3], strict=True)
        for w, t in zip(s, ts, strict=True)
    ]  # fmt: skip
    path = _write(tmp_path / "ner.conll", "\n".join(lines) + "\n")
    assert choose_reader(path, "tagging")["format"] == "conll"


@pytest.mark.parametrize(
    ("name", "text", "task", "request_", "message"),
    [
        ("ids.conll", "1\tDogs\tNOUN\n2\tbark\tVERB\n\n1\tHi\tINTJ\n", "tagging", ReaderRequest(),
         r"first column holds numbers .* pass --token-column N"),
        ("x.conllu", "# sent_id = 1\n1\tDogs\tdog\tNOUN\n", "tagging", ReaderRequest(),
         r"named \.conllu but not CoNLL-U: saw token lines with 4 tab-separated field.*--data-format conll"),
        ("c.conll", "# sent_id = 1\nDogs\tNOUN\nbark\tVERB\n", "tagging", ReaderRequest(),
         r"comment lines \('# sent_id = 1'\).*would read them as tokens"),
        ("s.txt", "# text = Dogs bark\nDogs NOUN\nbark VERB\n", "tagging", ReaderRequest(),
         r"comment lines \('# text = Dogs bark'\)"),
        ("t.csv", "text,label\nhi,x\n", "tagging", ReaderRequest(),
         r"suffix \.csv says csv, which text-classification reads; tagging reads conllu, conll: pass --task "
         r"text-classification"),
        ("u.conllu", UD_SAMPLE.read_text(encoding="utf-8"), "text-classification", ReaderRequest(),
         r"which tagging reads; text-classification reads .*pass --task tagging"),
        ("u.txt", UD_SAMPLE.read_text(encoding="utf-8"), "text-classification", ReaderRequest(),
         r"holds CoNLL-U .*pass --task tagging"),
        ("notes.txt", "some words\n", "text-classification", ReaderRequest(),
         r"cannot tell the layout from the suffix '\.txt'.*--data-format \(csv, tsv, jsonl, folders\)"),
        ("d.csv", "a,b\n", "sequence-classification", ReaderRequest(), r"sequence-classification reads npz"),
        ("w.tsv", "The\tat\n", "tagging", ReaderRequest(tag_column="upos"),
         r"--tag-column UPOS names a CoNLL-U field, but this file is plain CoNLL columns"),
        ("u2.conllu", UD_SAMPLE.read_text(encoding="utf-8"), "tagging", ReaderRequest(tag_column=1),
         r"--tag-column 1: CoNLL-U columns 2\.\.9 can be tags"),
    ],
)  # fmt: skip
def test_an_unclear_or_mismatched_layout_is_refused_with_what_was_seen_and_the_flag(
    tmp_path, name, text, task, request_, message
):
    path = _write(tmp_path / name, text)
    with pytest.raises(DataError, match=message):
        choose_reader(path, task, request_)


def test_token_column_resolves_a_numbered_first_column(tmp_path):
    path = _write(tmp_path / "ids.conll", "1\tDogs\tNOUN\n2\tbark\tVERB\n")
    settings = choose_reader(path, "tagging", ReaderRequest(token_column=1))
    assert read_with(path, settings).sentences == [["Dogs", "bark"]]


def test_tag_column_values(tmp_path):
    assert [parse_tag_column(v) for v in ("UPOS", "xpos", "-1", "3")] == ["upos", "xpos", -1, 3]
    with pytest.raises(ValueError, match=r"expected a CoNLL-U field .*UPOS, XPOS"):
        parse_tag_column("pos")


def test_recorded_settings_read_another_file_the_same_way(tmp_path):
    table = _write(tmp_path / "a.csv", "review,verdict\ngood,fresh\n")
    settings = choose_reader(
        table, "text-classification", ReaderRequest(text_column="review", label_column="verdict")
    )
    lines = _write(tmp_path / "b.jsonl", '{"review": "bad", "verdict": "rotten"}\n')
    again = choose_reader(lines, "text-classification", request_from(settings))
    assert again == {"format": "jsonl", "text_column": "review", "label_column": "verdict"}
    assert read_with(lines, again).labels == ["rotten"]
    forced = choose_reader(_write(tmp_path / "c.txt", "text,label\nok,x\n"), "text-classification",
                           ReaderRequest(data_format="csv"))  # fmt: skip
    assert request_from(forced).data_format == "csv"


# -- what was read, and the warnings ---------------------------------------------------


def test_the_summary_of_the_ud_sample_counts_splits_labels_and_shows_examples():
    data = read_with(UD_SAMPLE, choose_reader(UD_SAMPLE, "tagging"))
    half = len(data) // 2
    parts = {"train": data.subset(range(half)), "test": data.subset(range(half, len(data)))}
    summary = summarize("tagging", parts, "CoNLL-U, FORM -> UPOS", "ud.conllu")
    words = _ud_words()
    assert summary["splits"]["train"] == {"sentences": half, "tokens": sum(len(s) for s in words[:half])}
    assert summary["splits"]["test"]["tokens"] == sum(len(s) for s in words[half:])
    upos = [w[3] for s in words for w in s]
    assert summary["labels"]["count"] == len(set(upos))
    top = summary["labels"]["top"][0]
    assert top["label"] == max(set(upos), key=upos.count)
    assert top["share"] == pytest.approx(upos.count(top["label"]) / len(upos), abs=1e-4)
    assert summary["examples"][0].startswith("His/PRON mother/NOUN was/AUX")
    assert summary["warnings"] == [] and summary["notes"] == []
    block = render(summary)
    assert "read as CoNLL-U, FORM -> UPOS" in block and f"{top['label']} {top['share']:.1%}" in block
    assert json.loads(json.dumps(summary)) == summary  # what run.json stores


def test_clean_text_data_raises_no_warning(tmp_path):
    rotten = load_bundled("rotten_tomatoes")
    path = tmp_path / "r.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [("text", "label"), *zip(rotten.texts[:200], rotten.labels[:200], strict=True)]
        )
    summary = _summary(path, "text-classification")
    assert summary["warnings"] == [] and summary["splits"]["train"]["examples"] == 200


def test_conllu_read_as_plain_columns_warns_of_placeholder_tags_and_numbered_tokens():
    """The issue's failure: IDs as tokens, MISC ('_' mostly) as tags."""
    summary = _summary(UD_SAMPLE, "tagging", ReaderRequest(data_format="conll"))
    placeholder, numbers = summary["warnings"][0], summary["warnings"][-1]
    assert "are labelled '_', which looks like a placeholder" in placeholder and "--tag-column" in placeholder
    assert "of tokens are numbers (e.g. '1', '2', '3')" in numbers and "--data-format conllu" in numbers


def test_a_placeholder_holding_most_tags_is_warned_of(tmp_path):
    path = _write(tmp_path / "p.conll", "".join(f"w{i}\t{'_' if i < 7 else 'NN'}\n" for i in range(10)))
    (warning,) = _summary(path, "tagging")["warnings"]
    assert warning.startswith("70% of tokens are labelled '_'") and "scores 70% accuracy" in warning


def test_a_common_real_label_is_not_a_placeholder(tmp_path):
    path = _write(tmp_path / "n.conll", "".join(f"w{i}\t{'NN' if i < 9 else 'VB'}\n" for i in range(10)))
    assert _summary(path, "tagging")["warnings"] == []


def test_the_share_of_o_is_stated_for_iob_tags(tmp_path):
    tags = ["O", "B-PER", "I-PER", "O", "O", "O", "B-LOC", "O"]
    path = _write(tmp_path / "ner.conll", "".join(f"w{i}\t{t}\n" for i, t in enumerate(tags)))
    summary = _summary(path, "tagging")
    assert summary["warnings"] == []
    assert summary["notes"] == [
        "'O' (outside any entity) is 62.5% of tokens: accuracy counts it, so watch the entity F1"
    ]
    assert "  note: 'O' (outside any entity) is 62.5%" in render(summary)


def test_numbered_tokens_are_warned_of(tmp_path):
    path = _write(tmp_path / "ids.conll", "1\tDT\n2\tNN\n3\tVB\n\n1\tNN\n")
    (warning,) = _summary(path, "tagging", ReaderRequest(token_column=0))["warnings"]
    assert warning.startswith("100% of tokens are numbers (e.g. '1', '2', '3')")


def test_texts_that_are_numbers_are_warned_of(tmp_path):
    path = _write(
        tmp_path / "n.csv", "id,text,label\n" + "".join(f"{i},words {i},{i % 2}\n" for i in range(8))
    )
    (warning,) = _summary(path, "text-classification", ReaderRequest(text_column="id"))["warnings"]
    assert warning.startswith("100% of texts are numbers") and "--text-column" in warning


def test_labels_that_look_like_text_are_warned_of(tmp_path):
    rotten = load_bundled("rotten_tomatoes")
    path = tmp_path / "swapped.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [("text", "label"), *zip(rotten.labels[:8], rotten.texts[:8], strict=True)]
        )
    warnings = _summary(path, "text-classification")["warnings"]
    assert any(w.startswith("8 of 8 labels look like text") and "--label-column" in w for w in warnings)


def test_far_more_labels_than_the_data_can_teach_are_warned_of(tmp_path):
    path = _write(
        tmp_path / "ids.csv", "text,label\n" + "".join(f"review number {i},c{i:02d}\n" for i in range(40))
    )
    (warning,) = _summary(path, "text-classification")["warnings"]
    assert warning.startswith("40 distinct labels for 40 examples (1.0 per label)")


def test_an_unlabelled_class_folder_is_a_placeholder(tmp_path):
    for label, count in (("pos", 2), ("neg", 2), ("unsup", 6)):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(count):
            (tmp_path / "train" / label / f"{i}.txt").write_text(f"text {label} {i}")
    (warning,) = _summary(tmp_path / "train", "text-classification")["warnings"]
    assert warning.startswith("60% of examples are labelled 'unsup'")


def test_sequence_data_is_summarized_by_steps(digits_npz):
    summary = _summary(digits_npz(50), "sequence-classification")
    assert summary["splits"]["train"] == {"examples": 50, "steps": 400}
    assert summary["labels"]["count"] == 10 and summary["warnings"] == []


def test_class_ids_that_are_not_whole_numbers_are_warned_of(tmp_path):
    path = tmp_path / "walks.npz"
    np.savez(path, x=np.zeros((6, 4, 2)), y=np.array([0.0, 1.0, 0.25, 1.0, 0.75, 0.0]))
    (warning,) = _summary(path, "sequence-classification")["warnings"]
    assert warning.startswith("y holds values that are not whole numbers (e.g. 0.25, 0.75)")


# -- the command line --------------------------------------------------------------------


def _train_tagger(data: Path, run: Path, *extra: str) -> int:
    return cli.main(["train", "--task", "tagging", "--data", str(data), "--out", str(run), "--epochs", "1",
                     "--batch-size", "8", "--quiet", *extra])  # fmt: skip


def test_train_on_conllu_prints_and_records_what_it_read_and_evaluate_reads_it_alike(tmp_path, capsys):
    data = tmp_path / "train.conllu"
    shutil.copy(UD_SAMPLE, data)
    run = tmp_path / "run"
    assert _train_tagger(data, run) == 0
    out = capsys.readouterr().out
    assert f"data: {data}, read as CoNLL-U, FORM -> UPOS" in out
    assert out.index("read as CoNLL-U") < out.index("held-out test split")
    assert "WARNING" not in out
    info = json.loads((run / "run.json").read_text())
    upos = sorted({w[3] for s in _ud_words() for w in s})
    assert info["reader"] == {"format": "conllu", "tag_field": "upos"}
    assert info["data_summary"]["labels"]["count"] == len(upos)
    assert rnncore.bundle.load_labels(run) == upos
    # another file of the same treebank, named otherwise: read with the run's settings
    other = tmp_path / "dev.txt"
    shutil.copy(UD_SAMPLE, other)
    assert cli.main(["evaluate", str(run), "--data", str(other), "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0
    # a tag field the run did not learn is read as asked, then refused by its labels
    assert cli.main(["evaluate", str(run), "--data", str(other), "--tag-column", "XPOS"]) == 2
    assert "was not seen in training" in capsys.readouterr().err
    # a run.json from before the reader was recorded still evaluates its own data
    del info["reader"]
    (run / "run.json").write_text(json.dumps(info))
    assert cli.main(["evaluate", str(run), "--json"]) == 0


def test_train_prints_and_records_the_warnings(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train_tagger(UD_SAMPLE, run, "--data-format", "conll") == 0
    out = capsys.readouterr().out
    warnings = json.loads((run / "run.json").read_text())["data_summary"]["warnings"]
    assert len(warnings) >= 2 and all(f"  WARNING: {w}" in out for w in warnings)
    assert any("placeholder" in w for w in warnings) and any("numbers" in w for w in warnings)


@pytest.mark.parametrize(
    ("task", "name", "text", "message"),
    [
        ("tagging", "ids.conll", "1\tDogs\tNOUN\n2\tbark\tVERB\n", "--token-column"),
        ("tagging", "t.csv", "text,label\nhi,x\n", "--task text-classification"),
        ("text-classification", "u.conllu", UD_SAMPLE.read_text(encoding="utf-8"), "--task tagging"),
        (
            "text-classification",
            "r.csv",
            "review,verdict\ngood,fresh\n",
            "(--text-column on the command line)",
        ),
        (
            "text-classification",
            "r.jsonl",
            '{"review": "good", "label": "fresh"}\n',
            "--text-column in the CLI",
        ),
    ],
)
def test_train_refuses_unclear_data_with_exit_2_and_writes_nothing(
    tmp_path, capsys, task, name, text, message
):
    run = tmp_path / "run"
    args = ["train", "--task", task, "--data", str(_write(tmp_path / name, text)), "--out", str(run)]
    assert cli.main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_predict_reads_the_text_column_of_a_table_not_its_lines(tmp_path, capsys):
    rotten = load_bundled("rotten_tomatoes")
    data = tmp_path / "reviews.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [("review", "verdict"), *zip(rotten.texts[:60], rotten.labels[:60], strict=True)]
        )
    run = tmp_path / "run"
    args = [
        "--text-column",
        "review",
        "--label-column",
        "verdict",
        "--epochs",
        "1",
        "--max-len",
        "16",
        "--quiet",
    ]
    assert cli.main(["train", "--data", str(data), "--out", str(run), *args]) == 0
    capsys.readouterr()
    unlabelled = tmp_path / "new.csv"
    with unlabelled.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [("id", "review"), ("1", "a quietly moving film"), ("2", "dull, and long")]
        )
    assert cli.main(["predict", str(run), "--data", str(unlabelled), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == ["a quietly moving film", "dull, and long"]
