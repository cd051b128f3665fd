"""Data readers, splits, bucketing and the bundled datasets (rnncore.data).

Fixtures are written into tmp_path in each format; where it matters they are real slices of
the bundled data, so the readers see real text (line breaks in quotes, Japanese tokens, Brown
tags) and not only toy rows.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnncore.data import (
    BUNDLED,
    DataError,
    LabelVocab,
    SequenceDataset,
    TaggedDataset,
    TextDataset,
    bucket_batches,
    bundled_path,
    load_bundled,
    padding_fraction,
    read_class_folders,
    read_conll,
    read_conllu,
    read_idx,
    read_jsonl,
    read_mnist,
    read_npz,
    read_table,
    read_texts,
    split,
)
from rnncore.data import datasets as datasets_module

BUNDLED_DIR = Path(datasets_module.__file__).with_name("bundled")

# The committed files, hashed independently of the table in datasets.py: editing a file
# without updating both this table and BUNDLED fails here.
EXPECTED = {
    "rotten_tomatoes.csv.gz": ("93bc82f24f4ec72e78f17b024a0821efa8972ac1803cd321c6fc386a6e8573a9", 12808),
    "digits.npz": ("ac4c88e3aac26bb6198e8af3f784cd0be54513e08c5ce4ec60bfe3ee32931f58", 1797),
    "brown_pos.conll.gz": ("0f4c2b22bbd946b64da21863b5600ba5fd8f761790bb4d7343f9cc1135c63380", 4623),
    "ner_iob2.conll.gz": ("f41df778089984c146dc2b06f464e85c6e59f723e36c39bb33b2cb7656782d64", 500),
}


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def saved_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def rotten() -> TextDataset:
    return load_bundled("rotten_tomatoes")


@pytest.fixture(scope="module")
def brown() -> TaggedDataset:
    return load_bundled("brown_pos")


# -- text classification ---------------------------------------------------------------


def test_csv_columns_are_chosen_by_name(tmp_path):
    path = write(
        tmp_path / "reviews.csv",
        'id,review,sentiment\n1,"Tense, taut, terrific.",pos\n2,"Two lines,\nstill one review",neg\n',
    )
    ds = read_table(path, text_column="review", label_column="sentiment")
    assert ds.texts == ["Tense, taut, terrific.", "Two lines,\nstill one review"]
    assert ds.labels == ["pos", "neg"]


def test_headerless_csv_columns_by_position(tmp_path):
    path = write(tmp_path / "plain.csv", "neg,Dull.\npos,A joy.\n")
    ds = read_table(path, text_column=1, label_column=0, header=False)
    assert (ds.texts, ds.labels) == (["Dull.", "A joy."], ["neg", "pos"])


def test_tsv_has_no_quoting_so_quotes_stay(tmp_path):
    path = write(tmp_path / "sst.tsv", 'sentence\tlabel\nhe said "wow" twice\t1\n"quoted start\t0\n')
    ds = read_table(path, text_column="sentence")
    assert ds.texts == ['he said "wow" twice', '"quoted start']
    assert ds.labels == ["1", "0"]


def test_csv_with_bom_crlf_and_blank_lines(tmp_path):
    (tmp_path / "win.csv").write_bytes("\ufefftext,label\r\nfine,a\r\n\r\nalso fine,b\r\n".encode())
    ds = read_table(tmp_path / "win.csv")
    assert (ds.texts, ds.labels) == (["fine", "also fine"], ["a", "b"])


def test_real_rotten_tomatoes_slice_round_trips_through_csv_tsv_and_jsonl(tmp_path, rotten):
    part = rotten.subset(range(300))
    assert any("\n" in t for t in rotten.texts)  # quoted line breaks are part of the real data
    with gzip.open(tmp_path / "rt.csv.gz", "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["movie", "label", "text"])
        writer.writerows(["m", label, text] for text, label in zip(part.texts, part.labels, strict=True))
    no_tabs = [t.replace("\n", " ") for t in part.texts]
    write(
        tmp_path / "rt.tsv",
        "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(no_tabs, part.labels, strict=True)),
    )
    write(
        tmp_path / "rt.jsonl",
        "".join(json.dumps({"text": t, "y": y}) + "\n" for t, y in zip(part.texts, part.labels, strict=True)),
    )
    assert read_texts(tmp_path / "rt.csv.gz") == part
    assert read_texts(tmp_path / "rt.tsv") == TextDataset(no_tabs, part.labels)
    assert read_jsonl(tmp_path / "rt.jsonl", label_field="y") == part


def test_line_separators_inside_values_do_not_split_lines(tmp_path):
    # JSON allows a raw U+2028 inside a string; str.splitlines would cut the line there.
    path = write(tmp_path / "d.jsonl", '{"text": "one\u2028line", "label": "a"}\r\n')
    assert read_jsonl(path).texts == ["one\u2028line"]
    path = write(tmp_path / "t.conll", "a\x85b\tX\n")
    assert read_conll(path).sentences == [["a\x85b"]]


def test_jsonl_numbers_and_booleans_become_label_strings(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "good", "label": 1}\n\n{"text": "bad", "label": false}\n')
    assert read_jsonl(path).labels == ["1", "false"]


def test_folder_per_class_like_aclimdb(tmp_path):
    train = tmp_path / "aclImdb" / "train"
    for label, texts in {"pos": ["Loved it.", "Superb."], "neg": ["Awful.\n"], "unsup": ["?"]}.items():
        (train / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            write(train / label / f"{i}_{7 if label == 'pos' else 2}.txt", text)
    write(train / "urls_pos.txt", "http://example.invalid\n")  # files beside the folders are ignored
    ds = read_class_folders(train, classes=("neg", "pos"))
    assert ds.texts == ["Awful.", "Loved it.", "Superb."]
    assert ds.labels == ["neg", "pos", "pos"]
    assert sorted(set(read_texts(train).labels)) == ["neg", "pos", "unsup"]


# -- tagging ---------------------------------------------------------------------------


def test_conll_skips_docstart_and_splits_on_blank_lines(tmp_path):
    path = write(
        tmp_path / "ner.txt",
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
        "-DOCSTART- -X- -X- O\n"
        "BRUSSELS NNP B-NP B-LOC",
    )
    ds = read_conll(path)
    assert ds.sentences == [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert ds.tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert read_conll(path, tag_column=1).tags[0] == ["NNP", "VBZ", "JJ"]


def test_conll_tab_columns_keep_tokens_with_spaces(tmp_path):
    path = write(tmp_path / "t.tsv", "New York\tB-LOC\n\u3000\tO\n")
    assert read_conll(path).sentences == [["New York", "\u3000"]]


def test_real_brown_slice_in_conll_columns(tmp_path, brown):
    part = brown.subset(range(40))
    lines = ["-DOCSTART-\t-X-", ""]
    for words, tags in zip(part.sentences, part.tags, strict=True):
        lines += [f"{w}\t{t}" for w, t in zip(words, tags, strict=True)] + [""]
    path = write(tmp_path / "brown.conll", "\n".join(lines))
    ds = read_conll(path)
    assert ds == part
    assert ds.sentences[0][:4] == ["The", "Fulton", "County", "Grand"]
    assert ds.tags[0][:4] == ["at", "np-tl", "nn-tl", "jj-tl"]


CONLLU = """# sent_id = 1
# text = Vámonos al mar.
1-2\tVámonos\t_\t_\t_\t_\t_\t_\t_\t_
1\tVamos\tir\tVERB\tVMM\t_\t0\troot\t_\t_
2\tnos\tnosotros\tPRON\tPP\t_\t1\tobj\t_\t_
3-4\tal\t_\t_\t_\t_\t_\t_\t_\t_
3\ta\ta\tADP\tSPS\t_\t5\tcase\t_\t_
4\tel\tel\tDET\tDA\t_\t5\tdet\t_\t_
5\tmar\tmar\tNOUN\tNC\t_\t1\tobl\t_\tSpaceAfter=No
6\t.\t.\tPUNCT\tFp\t_\t1\tpunct\t_\t_

# sent_id = 2
1\tSue\tSue\tPROPN\tNNP\t_\t2\tnsubj\t_\t_
2\tlikes\tlike\tVERB\tVBZ\t_\t0\troot\t_\t_
2.1\tlikes\tlike\tVERB\tVBZ\t_\t_\t_\t2:conj\t_
3\ttea\ttea\tNOUN\tNN\t_\t2\tobj\t_\t_
"""


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    path = write(tmp_path / "es.conllu", CONLLU)
    ds = read_conllu(path)
    assert ds.sentences == [["Vamos", "nos", "a", "el", "mar", "."], ["Sue", "likes", "tea"]]
    assert ds.tags == [["VERB", "PRON", "ADP", "DET", "NOUN", "PUNCT"], ["PROPN", "VERB", "NOUN"]]
    assert read_conllu(path, tag_field="xpos").tags[1] == ["NNP", "VBZ", "NN"]


# -- real-valued sequences -------------------------------------------------------------


def test_npz_with_and_without_lengths(tmp_path):
    x = np.arange(2 * 4 * 3, dtype=np.float64).reshape(2, 4, 3)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([3, 1], dtype=np.int32), lengths=np.array([4, 2]))
    ds = read_npz(tmp_path / "a.npz")
    assert (ds.x.dtype, ds.y.dtype, ds.lengths.tolist()) == (np.float32, np.int64, [4, 2])
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))
    np.savez(tmp_path / "b.npz", feats=x, target=np.array([0.5, -1.0]))
    ds = read_npz(tmp_path / "b.npz", x_key="feats", y_key="target")
    assert ds.y.dtype == np.float32
    assert ds.lengths.tolist() == [4, 4]


def test_real_digits_slice_through_npz(tmp_path):
    digits = load_bundled("digits")
    raw = np.rint(digits.x[:100] * 16).astype(np.uint8)
    np.savez_compressed(tmp_path / "d.npz", x=raw, y=digits.y[:100])
    ds = read_npz(tmp_path / "d.npz")
    assert ds.x.shape == (100, 8, 8)
    np.testing.assert_array_equal(ds.x / 16, digits.x[:100])
    np.testing.assert_array_equal(ds.y, digits.y[:100])


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_mnist_idx_images_are_read_as_rows(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    image_file = idx_bytes(images, 0x08)
    assert image_file[:4] == b"\x00\x00\x08\x03"  # 2051, the MNIST image magic number
    assert idx_bytes(labels, 0x08)[:4] == b"\x00\x00\x08\x01"  # 2049, labels
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(image_file))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x08))
    ds = read_mnist(tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte")
    assert ds.x.shape == (5, 28, 28)
    np.testing.assert_allclose(ds.x[1, 3], images[1, 3] / 255.0, rtol=1e-6)  # step 3 = image row 3
    assert ds.y.tolist() == [7, 2, 1, 0, 4]
    assert ds.lengths.tolist() == [28] * 5


@pytest.mark.parametrize(
    ("code", "dtype"),
    [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_idx_value_types(tmp_path, code, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array, code))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)


# -- splits and batches ----------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete():
    parts = split(1001, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [801, 100, 100]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1001))
    assert all(np.array_equal(a, b) for a, b in zip(parts, split(1001, (0.8, 0.1, 0.1), seed=3), strict=True))
    assert not np.array_equal(parts[1], split(1001, (0.8, 0.1, 0.1), seed=4)[1])
    assert [len(p) for p in split(10, (0.5, 0.5))] == [5, 5]


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (1.2, -0.2), ()])
def test_split_rejects_fractions_that_do_not_add_up(fractions):
    with pytest.raises(DataError, match="add up to 1"):
        split(10, fractions)


def test_bucket_batches_cover_every_index_once_and_are_deterministic(brown):
    lengths = brown.lengths
    batches = bucket_batches(lengths, batch_size=32, seed=1)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(lengths)))
    sizes = sorted(len(b) for b in batches)
    assert sizes[1:] == [32] * (len(batches) - 1) and sizes[0] == len(lengths) % 32
    again = bucket_batches(lengths, batch_size=32, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = bucket_batches(lengths, batch_size=32, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))


def test_bucketing_cuts_padding_against_random_batches(brown):
    lengths = brown.lengths  # real sentence lengths: 1 to 102 tokens
    order = np.random.default_rng(0).permutation(len(lengths))
    random_batches = [order[i : i + 32] for i in range(0, len(order), 32)]
    random_pad = padding_fraction(lengths, random_batches)
    bucket_pad = padding_fraction(lengths, bucket_batches(lengths, 32, seed=0))
    sorted_pad = padding_fraction(lengths, bucket_batches(lengths, 32, shuffle=False))
    assert random_pad > 0.5
    assert bucket_pad < random_pad / 5
    assert sorted_pad <= bucket_pad


def test_unshuffled_batches_are_sorted_by_length():
    lengths = np.array([5, 1, 3, 3, 2])
    assert [b.tolist() for b in bucket_batches(lengths, 2, shuffle=False)] == [[1, 4], [2, 3], [0]]


# -- labels ----------------------------------------------------------------------------


def test_label_vocab_is_sorted_and_round_trips_through_json(tmp_path):
    vocab = LabelVocab.fit(["rotten", "fresh", "rotten"])
    assert vocab.labels == ("fresh", "rotten")
    assert vocab.encode(["rotten", "fresh"]).tolist() == [1, 0]
    assert vocab.decode(np.array([0, 1])) == ["fresh", "rotten"]
    vocab.save(tmp_path / "labels.json")
    assert json.loads((tmp_path / "labels.json").read_text())["format"] == "rnncore.labels/1"
    assert LabelVocab.load(tmp_path / "labels.json") == vocab


def test_label_seen_only_outside_training_is_refused_by_name(rotten):
    train_idx, _, test_idx = split(len(rotten), seed=0)
    vocab = LabelVocab.fit(rotten.subset(train_idx).labels)
    test_labels = [*rotten.subset(test_idx).labels[:3], "certified fresh"]
    with pytest.raises(
        DataError, match=r"'certified fresh' at position 3 of the test split .*known: 'fresh', 'rotten'"
    ):
        vocab.encode(test_labels, "the test split")


# -- bundled datasets ------------------------------------------------------------------


@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_committed_files_match_their_sha256(file):
    digest = hashlib.sha256((BUNDLED_DIR / file).read_bytes()).hexdigest()
    assert digest == EXPECTED[file][0]
    entry = next(e for e in BUNDLED.values() if e.file == file)
    assert (entry.sha256, entry.examples) == EXPECTED[file]
    assert digest in (BUNDLED_DIR / "SOURCES.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "kind"),
    [("rotten_tomatoes", TextDataset), ("digits", SequenceDataset), ("brown_pos", TaggedDataset),
     ("ner_iob2", TaggedDataset)],
)  # fmt: skip
def test_bundled_datasets_load_with_their_counts(name, kind):
    ds = load_bundled(name)
    assert isinstance(ds, kind)
    assert len(ds) == BUNDLED[name].examples


def test_bundled_contents():
    rotten = load_bundled("rotten_tomatoes")
    assert (rotten.labels.count("fresh"), rotten.labels.count("rotten")) == (7403, 5405)
    digits = load_bundled("digits")
    assert digits.x.shape == (1797, 8, 8) and digits.x.min() >= 0 and digits.x.max() == 1
    assert np.bincount(digits.y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    brown = load_bundled("brown_pos")
    assert int(brown.lengths.sum()) == 100554
    ner = load_bundled("ner_iob2")
    tags = {t for sentence in ner.tags for t in sentence}
    assert "O" in tags and all(t == "O" or t[:2] in ("B-", "I-") for t in tags)
    assert int(ner.lengths.sum()) == 15520


def test_bundled_data_stays_small():
    assert sum(p.stat().st_size for p in BUNDLED_DIR.iterdir()) < 8 * 2**20


def test_edited_bundled_file_is_refused(tmp_path, monkeypatch):
    shutil.copy(BUNDLED_DIR / "ner_iob2.conll.gz", tmp_path / "ner_iob2.conll.gz")
    with open(tmp_path / "ner_iob2.conll.gz", "ab") as f:
        f.write(b"\0")
    monkeypatch.setattr(datasets_module, "BUNDLED_DIR", tmp_path)
    with pytest.raises(DataError, match=r"ner_iob2\.conll\.gz: sha256 is .* changed or damaged"):
        load_bundled("ner_iob2")


def test_unknown_bundled_name_lists_the_choices():
    with pytest.raises(DataError, match="no bundled dataset 'imdb'; choose one of brown_pos, digits"):
        bundled_path("imdb")


def test_rnncore_data_imports_only_numpy_and_the_standard_library(tmp_path):
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import rnncore.data\n"
        "new = {m.partition('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'numpy', 'rnncore'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- bad input: a DataError that names the file, the place and the fix -----------------


def ragged_npz(path: Path) -> Path:
    x = np.empty(2, dtype=object)
    x[0], x[1] = np.zeros((3, 2)), np.zeros((5, 2))  # two sequences of different lengths
    return saved_npz(path, x=x, y=np.array([0, 1]))


BAD_INPUTS = {
    "missing csv column": (
        lambda p: read_table(write(p / "r.csv", "review,label\nok,pos\n")),
        r"r\.csv:1: no text column 'text'; the header has 'review', 'label'\. Pass text_column=",
    ),
    "missing jsonl field": (
        lambda p: read_jsonl(write(p / "r.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')),
        r"r\.jsonl:2: no field 'label'; this object has 'text'\. Pass label_field=",
    ),
    "empty file": (
        lambda p: read_table(write(p / "empty.csv", "\n \n")),
        r"empty\.csv: the file is empty",
    ),
    "header only": (
        lambda p: read_table(write(p / "head.csv", "text,label\n")),
        r"head\.csv: the file has a header but no rows",
    ),
    "not utf-8": (
        lambda p: read_table(write(p / "latin.csv", b"text,label\nok,a\ncaf\xe9,b\n")),
        r"latin\.csv:3: not valid utf-8 \(byte 0xe9 .*encoding='latin-1'",
    ),
    "ragged row": (
        lambda p: read_table(write(p / "rag.csv", "text,label\na,b\nc, d,e\n")),
        r"rag\.csv:3: row has 3 fields but the header has 2; quote fields",
    ),
    "empty label": (
        lambda p: read_table(write(p / "nolabel.csv", "text,label\nfine,\n")),
        r"nolabel\.csv:2: empty label",
    ),
    "bad json": (
        lambda p: read_jsonl(write(p / "bad.jsonl", '{"text": "a", "label": "x"}\n{"text": \n')),
        r"bad\.jsonl:2: not valid JSON",
    ),
    "missing class folder": (
        lambda p: read_class_folders(p, classes=("pos",)),
        r"pos: no \*\.txt files for label 'pos'",
    ),
    "conll missing tag": (
        lambda p: read_conll(write(p / "t.conll", "The\tDT\ndog\n")),
        r"t\.conll:2: line has 1 column\(s\) \['dog'\]; .*a token and its tag",
    ),
    "conll only docstart": (
        lambda p: read_conll(write(p / "d.conll", "-DOCSTART- O\n\n")),
        r"d\.conll: no sentences",
    ),
    "conllu field count": (
        lambda p: read_conllu(write(p / "x.conllu", "# hi\n1\tDogs\tdog\tNOUN\n")),
        r"x\.conllu:2: has 4 tab-separated field\(s\); CoNLL-U needs 10 .*use read_conll",
    ),
    "conllu missing xpos": (
        lambda p: read_conllu(write(p / "u.conllu", "1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n"), "xpos"),
        r"u\.conllu:1: token 'Hi' has no XPOS",
    ),
    "ragged npz": (
        lambda p: read_npz(ragged_npz(p / "rag.npz")),
        r"rag\.npz: array 'x' holds Python objects, .*ragged.*save the true lengths as 'lengths'",
    ),
    "npz x and y disagree": (
        lambda p: read_npz(saved_npz(p / "xy.npz", x=np.zeros((3, 2, 1)), y=np.zeros(2))),
        r"xy\.npz: 'x' has 3 sequences but 'y' has shape \(2,\); they must line up",
    ),
    "npz missing key": (
        lambda p: read_npz(saved_npz(p / "k.npz", inputs=np.zeros((1, 2, 1)), y=[0])),
        r"k\.npz: no array 'x'; it has 'inputs', 'y'\. Pass x_key=",
    ),
    "npz two-dimensional x": (
        lambda p: read_npz(saved_npz(p / "f.npz", x=np.zeros((3, 5)), y=np.zeros(3))),
        r"f\.npz: 'x' must be numbers of shape \(N, T, F\); got float64 \(3, 5\) \(for one feature",
    ),
    "npz length out of range": (
        lambda p: read_npz(saved_npz(p / "l.npz", x=np.zeros((2, 3, 1)), y=[0, 1], lengths=[3, 4])),
        r"l\.npz: row 1 has length 4; every length must be in 1\.\.3",
    ),
    "idx bad magic": (
        lambda p: read_idx(write(p / "x.idx", b"PK\x03\x04 not idx")),
        r"x\.idx: not an IDX file: magic number 504b0304",
    ),
    "idx gzip without suffix": (
        lambda p: read_idx(write(p / "y-idx1-ubyte", gzip.compress(b"\0\0\x08\x01"))),
        r"looks gzip-compressed, so name it \*\.gz",
    ),
    "idx truncated": (
        lambda p: read_idx(write(p / "t.idx", idx_bytes(np.zeros((4, 3), np.uint8), 0x08)[:-2])),
        r"t\.idx: IDX header promises shape \(4, 3\) \(12 bytes of data\) but the file has 10",
    ),
    "no such file": (
        lambda p: read_conll(p / "missing.conll"),
        r"missing\.conll: no such file",
    ),
    "unknown suffix": (
        lambda p: read_texts(write(p / "data.xml", "<x/>")),
        r"data\.xml: unknown format '\.xml'",
    ),
    "label vocabulary file": (
        lambda p: LabelVocab.load(write(p / "labels.json", '["a", "b"]')),
        r"labels\.json: not a label vocabulary",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_data_error_with_file_place_and_fix(tmp_path, case):
    make, message = BAD_INPUTS[case]
    with pytest.raises(DataError, match=message) as info:
        make(tmp_path)
    assert isinstance(info.value, ValueError)
    assert info.value.path is not None and str(tmp_path) in info.value.path
