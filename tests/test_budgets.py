"""Class 1 of issue 33: a small hostile file must not buy unbounded work.

Each case is a file under 1 MB given to the command line; rnncore must refuse it with exit 2
and one line naming the problem (and the limit to raise, where a real user might need more),
spending under 5 CPU seconds and 500 MB (measured on the child process, `budget_support`).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest
from budget_support import run_cli

from rnncore import bundle, limits
from rnncore.data import DataError, read_jsonl, read_texts
from rnncore.jsonfile import parse_yaml
from rnncore.spec import ModelSpec, SpecError
from rnncore.tokenizer_checks import check_tokenizer_folder, star_height

SMALL = {
    "input": {"kind": "tokens", "vocab_size": 100, "embedding_dim": 8},
    "encoder": {"cell": "gru", "hidden_size": 8},
    "pooling": "last",
    "head": {"num_outputs": 2},
}


def _spec_file(tmp_path: Path, changes: dict, name: str = "spec.json") -> Path:
    spec = json.loads(json.dumps(SMALL))
    for key, value in changes.items():
        part, field = key.split(".")
        spec[part][field] = value
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


# ---- spec dimensions and their products ----------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"encoder.num_layers": 300_000_000}, ["encoder.num_layers", "RNNCORE_LIMIT_MAX_LAYERS"]),
        ({"encoder.hidden_size": 10**12}, ["encoder.hidden_size", "RNNCORE_LIMIT_MAX_WIDTH"]),
        ({"input.vocab_size": 2 * 10**9}, ["input.vocab_size", "RNNCORE_LIMIT_MAX_VOCAB"]),
        ({"input.vocab_size": 9_000_000, "input.embedding_dim": 512}, ["parameters", "MAX_PARAMETERS"]),
        ({"encoder.hidden_size": 60_000, "encoder.num_layers": 900}, ["parameters", "MAX_PARAMETERS"]),
        ({"encoder.num_layers": 10**1000}, ["encoder.num_layers", "an integer of about 1001 digits"]),
    ],
    ids=["300M layers", "huge width", "huge vocabulary", "vocab x embedding", "width x layers", "10^1000"],
)
def test_a_spec_beyond_the_size_budgets_is_refused_before_any_work(tmp_path, changes, words):
    spec = _spec_file(tmp_path, changes)
    run_cli("validate", str(spec)).assert_refused(*words)


def test_an_integer_too_long_to_convert_is_refused_as_bad_json(tmp_path):
    spec = _spec_file(tmp_path, {"encoder.num_layers": 7})
    spec.write_text(spec.read_text().replace('"num_layers": 7', '"num_layers": 1' + "0" * 200_000))
    run_cli("validate", str(spec)).assert_refused("not valid JSON")


def test_parity_and_train_refuse_a_200_million_word_vocabulary_without_a_memory_error(tmp_path):
    """The issue's example: vocab_size 2e8 ended in a MemoryError traceback."""
    spec = _spec_file(tmp_path, {"input.vocab_size": 200_000_000, "input.embedding_dim": 64})
    run_cli("parity", str(spec)).assert_refused("input.vocab_size", "RNNCORE_LIMIT_MAX_VOCAB")
    run_cli("train", "--spec", str(spec), "--out", str(tmp_path / "run")).assert_refused("input.vocab_size")
    product = _spec_file(tmp_path, {"input.vocab_size": 9_000_000, "input.embedding_dim": 64}, "big.json")
    run_cli("parity", str(product)).assert_refused("576,", "parameters (2.3 GB of weights)")
    assert not (tmp_path / "run").exists()


def test_a_limit_is_raised_by_its_environment_variable():
    spec = json.loads(json.dumps(SMALL))
    spec["encoder"]["num_layers"] = 1500
    with pytest.raises(SpecError, match="num_layers"):
        ModelSpec.from_dict(spec)
    env = {"RNNCORE_LIMIT_MAX_LAYERS": "2000"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert ModelSpec.from_dict(spec).encoder.num_layers == 1500


def test_a_malformed_limit_variable_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("RNNCORE_LIMIT_MAX_LAYERS", "lots")
    with pytest.raises(limits.LimitError, match="RNNCORE_LIMIT_MAX_LAYERS='lots' is not an integer"):
        limits.limit("MAX_LAYERS")


def test_the_parameter_count_matches_the_weights_it_would_build():
    from rnncore.weights import canonical_shapes

    for spec in (
        ModelSpec.from_dict(SMALL),
        ModelSpec.from_dict({**SMALL, "encoder": {"cell": "lstm", "hidden_size": 6, "num_layers": 3,
                                                   "bidirectional": True},
                             "pooling": "attention", "head": {"num_outputs": 3, "hidden": [5, 4]}}),
        ModelSpec.from_dict({"input": {"kind": "features", "feature_dim": 3},
                             "encoder": {"cell": "rnn", "hidden_size": 7}, "pooling": "none",
                             "head": {"num_outputs": 2, "task": "tagging"}}),
    ):  # fmt: skip
        expected = sum(int(np.prod(shape)) for shape in canonical_shapes(spec).values())
        assert spec.parameter_count == expected


# ---- nesting and YAML aliases --------------------------------------------------------------
BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
input: *i
"""


def test_a_billion_laughs_yaml_is_refused_in_a_short_message(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    assert path.stat().st_size < 1000
    run_cli("validate", str(path)).assert_refused("aliases (*name) are not allowed")


def test_yaml_without_aliases_still_reads_and_anchors_alone_are_harmless():
    assert parse_yaml("a: &x 1\nb: 2\n", ValueError, "t.yaml") == {"a": 1, "b": 2}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_deeply_nested_spec_is_refused(tmp_path, suffix):
    path = tmp_path / f"deep{suffix}"
    path.write_text("[" * 100_000 + "]" * 100_000)
    run_cli("validate", str(path)).assert_refused("nested")


def test_a_spec_nested_just_past_the_limit_is_refused_and_at_the_limit_read(tmp_path):
    deep: object = 1
    for _ in range(limits.limit("MAX_NESTING")):  # lists nested exactly as deep as allowed
        deep = [deep]
    with pytest.raises(SpecError, match="expected an object"):  # read, then refused as no spec
        ModelSpec.from_json(json.dumps(deep))
    with pytest.raises(SpecError, match="nested more than"):
        ModelSpec.from_json(json.dumps([deep]))


def test_a_huge_value_is_quoted_in_bounded_form(tmp_path):
    spec = _spec_file(tmp_path, {"encoder.cell": "x" * 500_000})
    outcome = run_cli("validate", str(spec))
    outcome.assert_refused("encoder.cell", "...")


def test_nan_and_infinity_are_not_json_in_a_spec_or_config(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SMALL).replace('"hidden_size": 8', '"hidden_size": NaN'))
    run_cli("validate", str(spec)).assert_refused("NaN is not a JSON value")


# ---- compressed and long data --------------------------------------------------------------
def _gzip_bomb(path: Path, inflated: int) -> None:
    """A .gz file inflating to `inflated` bytes of one line: gzip members may be concatenated,
    so one compressed 8 MB block repeated makes it fast to build."""
    block = gzip.compress(b"a" * (8 << 20), compresslevel=9)
    with open(path, "wb") as handle:
        handle.write(gzip.compress(b"text,label\n"))
        for _ in range(inflated // (8 << 20)):
            handle.write(block)


def test_a_1_mb_csv_gz_that_inflates_to_1_gb_is_refused_early(tmp_path):
    bomb = tmp_path / "bomb.csv.gz"
    _gzip_bomb(bomb, 1 << 30)
    assert bomb.stat().st_size < 1.1e6
    outcome = run_cli("train", "--data", str(bomb), "--out", str(tmp_path / "run"))
    outcome.assert_refused("decompression bomb", "RNNCORE_LIMIT_MAX_COMPRESSION_RATIO")
    assert not (tmp_path / "run").exists()


def test_an_honest_compressed_file_still_reads(tmp_path):
    path = tmp_path / "ok.csv.gz"
    rows = "".join(f"review number {i} was fine,{i % 2}\n" for i in range(2000))
    path.write_bytes(gzip.compress(("text,label\n" + rows).encode()))
    assert len(read_texts(path)) == 2000


def test_a_jsonl_line_past_the_line_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNCORE_LIMIT_MAX_LINE_CHARS", "1000")
    path = tmp_path / "long.jsonl"
    path.write_text(
        '{"text": "fine", "label": "a"}\n' + json.dumps({"text": "x" * 5000, "label": "b"}) + "\n"
    )
    with pytest.raises(DataError, match=r"long\.jsonl:2: line is 5,0\d\d characters long.*MAX_LINE_CHARS"):
        read_jsonl(path)


def test_a_jsonl_line_nested_past_recursion_is_refused(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "a", "label": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(DataError, match="nested too deeply"):
        read_jsonl(path)


# ---- tokenizers ----------------------------------------------------------------------------
def _tokenizer_folder(tmp_path: Path, edit) -> Path:
    pytest.importorskip("tokenizers")
    from rnncore.tokenize import Tokenizer

    folder = tmp_path / "tok"
    corpus = ["a small corpus of words", "and a few more words"]
    Tokenizer.train(corpus, kind="word", vocab_size=50).save(folder)
    document = json.loads((folder / "tokenizer.json").read_text())
    edit(document)
    (folder / "tokenizer.json").write_text(json.dumps(document))
    return folder


def test_a_tokenizer_id_of_four_billion_is_refused_before_rust_reads_it(tmp_path):
    def huge_id(document):
        document["model"]["vocab"]["words"] = 4_000_000_000

    folder = _tokenizer_folder(tmp_path, huge_id)
    from rnncore.tokenize import Tokenizer

    with pytest.raises(ValueError, match=r"the id of token 'words' is 4000000000.*MAX_VOCAB"):
        Tokenizer.from_pretrained(folder)


def test_a_backtracking_regex_pre_tokenizer_is_refused_fast(tmp_path):
    def catastrophic(document):
        document["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a+)+$"},
                                     "behavior": "Isolated", "invert": False}  # fmt: skip

    folder = _tokenizer_folder(tmp_path, catastrophic)
    from rnncore.tokenize import Tokenizer

    start = time.process_time()
    with pytest.raises(ValueError, match=r"repeats a group that itself repeats.*MAX_REGEX_STAR_HEIGHT"):
        Tokenizer.from_pretrained(folder)
    assert time.process_time() - start < 5


@pytest.mark.parametrize(
    ("pattern", "height"),
    [
        (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", 1),  # GPT-2
        (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}", 1),  # cl100k
        (r"[(+*]+", 1),  # quantifiers inside a class are characters
        (r"\(a+\)+", 1),  # escaped parentheses are characters
        (r"(a+)+$", 2),
        (r"(x+x+)+y", 2),
        (r"(\w{2,})*", 2),
        (r"((ab)*c)*", 2),
        (r"(a{2,5})+", 1),  # a bounded inner repeat backtracks polynomially, not exponentially
    ],
)
def test_star_height_of_known_patterns(pattern, height):
    assert star_height(pattern) == height


def test_a_known_tokenizer_pattern_is_accepted(tmp_path):
    def gpt2_split(document):
        pattern = {"Regex": r" ?\p{L}+| ?\p{N}+|\s+(?!\S)|\s+"}
        document["pre_tokenizer"] = {
            "type": "Split",
            "pattern": pattern,
            "behavior": "Isolated",
            "invert": False,
        }

    check_tokenizer_folder(_tokenizer_folder(tmp_path, gpt2_split))


# ---- safetensors ---------------------------------------------------------------------------
def test_a_safetensors_file_naming_too_many_tensors_is_refused_before_loading(tmp_path, monkeypatch):
    path = tmp_path / "many.safetensors"
    bundle.write_weights(path, {f"t{i}": np.zeros(1, np.float32) for i in range(20)})
    assert len(bundle.read_weights(path)) == 20
    monkeypatch.setenv("RNNCORE_LIMIT_MAX_TENSORS", "10")
    with pytest.raises(bundle.BundleError, match=r"names 20 tensors, above the limit of 10"):
        bundle.read_weights(path)


def test_a_safetensors_header_length_of_an_exabyte_is_refused(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    with pytest.raises(bundle.BundleError, match="header"):
        bundle.read_weights(path)
