"""The shared tokenizer: training, saving, padding, empty texts, spec checks and word-label alignment.

`data/tokenize_sample.txt` holds 50 movie-review-style sentences written for these tests (no third-party
text, same licence as the repository).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnncore import InputSpec, ModelSpec, tokenize
from rnncore.tokenize import Tokenizer, words_from_subtokens

pytest.importorskip("transformers")

SAMPLE = Path(__file__).parent / "data" / "tokenize_sample.txt"
TEXTS = SAMPLE.read_text(encoding="utf-8").splitlines()
VOCAB = {"wordpiece": 300, "bpe": 400, "word": 300}


@pytest.fixture(scope="module")
def trained() -> dict[str, Tokenizer]:
    return {kind: Tokenizer.train(TEXTS, kind=kind, vocab_size=VOCAB[kind]) for kind in tokenize.KINDS}


@pytest.fixture(params=tokenize.KINDS)
def tok(request: pytest.FixtureRequest, trained: dict[str, Tokenizer]) -> Tokenizer:
    return trained[request.param]


def _spec(vocab_size: int, padding_idx: int | None = 0) -> ModelSpec:
    return ModelSpec(input=InputSpec(vocab_size=vocab_size, embedding_dim=8, padding_idx=padding_idx))


def _bert_folder(folder: Path) -> Path:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "great", "un", "##watch",
             "##able", "!", ",", "a", "sequel"]  # fmt: skip
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return folder


# ---- training --------------------------------------------------------------------------------
def test_trained_vocabulary_starts_with_pad_then_unk_and_has_no_cls_or_sep(tok):
    vocab = tok.hf.get_vocab()
    assert (vocab["[PAD]"], vocab["[UNK]"]) == (0, 1)
    assert (tok.pad_id, tok.unk_id) == (0, 1)
    assert "[CLS]" not in vocab and "[SEP]" not in vocab
    assert 3 <= tok.vocab_size <= VOCAB[tok.kind]


def test_every_text_encodes_to_ids_inside_the_vocabulary(tok):
    ids, lengths = tok.encode_batch(TEXTS)
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    assert ids.shape == (len(TEXTS), lengths.max())
    assert lengths.min() >= 5  # every sample sentence has several words
    assert ids.min() >= 0 and ids.max() < tok.vocab_size


def test_encoding_matches_transformers_own_batch_encoding(tok):
    ours, lengths = tok.encode_batch(TEXTS)
    theirs = tok.hf(TEXTS, add_special_tokens=False, padding=True, return_tensors="np")
    np.testing.assert_array_equal(ours, theirs["input_ids"])
    np.testing.assert_array_equal(lengths, theirs["attention_mask"].sum(axis=1))


def test_byte_level_bpe_covers_scripts_it_never_saw(trained):
    ids, _ = trained["bpe"].encode_batch(["Ωμέγα 東京 🎬"])
    assert trained["bpe"].unk_id not in ids
    assert trained["bpe"].hf.decode(ids[0]).strip() == "ωμέγα 東京 🎬"  # lowercased, nothing lost


@pytest.mark.parametrize("kind", ["wordpiece", "word"])
def test_unknown_words_become_unk(trained, kind):
    tok = trained[kind]
    ids, lengths = tok.encode_batch(["zyxwv"] if kind == "word" else ["Ωζ"])
    assert ids.tolist() == [[tok.unk_id] * int(lengths[0])]


def test_lowercase_false_keeps_case(trained):
    cased = Tokenizer.train(TEXTS, kind="word", vocab_size=300, lowercase=False)
    assert "The" in cased.hf.get_vocab() and "the" in cased.hf.get_vocab()
    assert "The" not in trained["word"].hf.get_vocab()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kind": "sentencepiece"}, "kind: got 'sentencepiece'"),
     ({"kind": "bpe", "vocab_size": 100}, r"needs an integer >= 258"),
     ({"kind": "word", "min_frequency": -1}, "min_frequency")],
)  # fmt: skip
def test_bad_training_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Tokenizer.train(TEXTS, **kwargs)


def test_training_on_one_string_is_refused():
    with pytest.raises(TypeError, match="one string"):
        Tokenizer.train(TEXTS[0])


# ---- save / load -----------------------------------------------------------------------------
def test_save_and_load_give_identical_ids(tok, tmp_path):
    tok.save(tmp_path / "tok")
    assert {"tokenizer.json", tokenize.META_FILE} <= {p.name for p in (tmp_path / "tok").iterdir()}
    loaded = Tokenizer.from_pretrained(tmp_path / "tok")
    assert (loaded.kind, loaded.vocab_size, loaded.pad_id, loaded.unk_id) == (
        tok.kind, tok.vocab_size, tok.pad_id, tok.unk_id
    )  # fmt: skip
    got, want = loaded.encode_batch(TEXTS, max_len=16), tok.encode_batch(TEXTS, max_len=16)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_saved_folder_names_its_format(trained, tmp_path):
    trained["word"].save(tmp_path)
    meta = json.loads((tmp_path / tokenize.META_FILE).read_text())
    assert meta == {"format": tokenize.FORMAT, "kind": "word"}


def test_unknown_format_is_refused(trained, tmp_path):
    trained["word"].save(tmp_path)
    (tmp_path / tokenize.META_FILE).write_text(json.dumps({"format": "rnncore.tokenizer/99"}))
    with pytest.raises(ValueError, match=r"rnncore.tokenizer/99.*reads 'rnncore.tokenizer/1'"):
        Tokenizer.from_pretrained(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*never downloads"):
        Tokenizer.from_pretrained(tmp_path / "bert-base-uncased")


def test_folder_without_a_tokenizer_lists_what_it_found(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer.json or vocab.txt \(found: config.json\)"):
        Tokenizer.from_pretrained(tmp_path)


def test_bert_folder_with_only_vocab_txt(tmp_path):
    tok = Tokenizer.from_pretrained(_bert_folder(tmp_path / "bert"))
    assert (tok.kind, tok.vocab_size, tok.pad_id, tok.unk_id) == ("pretrained", 16, 0, 1)
    ids, lengths = tok.encode_batch(["The film was unwatchable!", "A great sequel, a GREAT film"])
    tokens = tok.hf.convert_ids_to_tokens(ids[0, : lengths[0]].tolist())
    assert tokens == ["the", "film", "was", "un", "##watch", "##able", "!"]  # no [CLS] / [SEP]
    assert lengths.tolist() == [7, 7]


def test_bert_folder_round_trips_through_save(tmp_path):
    tok = Tokenizer.from_pretrained(_bert_folder(tmp_path / "bert"))
    tok.save(tmp_path / "saved")
    loaded = Tokenizer.from_pretrained(tmp_path / "saved")
    texts = ["The film was unwatchable!", "A great sequel"]
    np.testing.assert_array_equal(loaded.encode_batch(texts)[0], tok.encode_batch(texts)[0])


def test_cased_bert_folder(tmp_path):
    tok = Tokenizer.from_pretrained(_bert_folder(tmp_path / "bert"), lowercase=False)
    ids, _ = tok.encode_batch(["The film"])
    assert ids.tolist() == [[tok.unk_id, 6]]


def test_foreign_tokenizer_json_without_a_pad_token_needs_one(trained, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    rust = tokenizers.Tokenizer.from_str(trained["word"].hf.backend_tokenizer.to_str())
    rust.no_padding()  # transformers would read a pad token from the padding settings
    transformers.PreTrainedTokenizerFast(tokenizer_object=rust, unk_token="[UNK]").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"no pad token.*pad_token="):
        Tokenizer.from_pretrained(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path, pad_token="[PAD]")
    assert (tok.kind, tok.pad_id) == ("pretrained", 0)


def test_lowercase_is_refused_for_a_tokenizer_json_folder(trained, tmp_path):
    trained["word"].save(tmp_path)
    with pytest.raises(ValueError, match="has its own normalizer"):
        Tokenizer.from_pretrained(tmp_path, lowercase=True)


# ---- padding, truncation, empty texts --------------------------------------------------------
def test_rows_are_right_padded_with_the_pad_id(tok):
    ids, lengths = tok.encode_batch(["Loved it.", TEXTS[10], "Dull."])
    assert ids.shape[1] == lengths.max() == lengths[1]
    steps = np.arange(ids.shape[1])
    assert (ids[steps >= lengths[:, None]] == tok.pad_id).all()
    assert (ids[steps < lengths[:, None]] != tok.pad_id).all()


def test_truncation_keeps_the_first_tokens(tok):
    full, full_lengths = tok.encode_batch(TEXTS)
    cut, lengths = tok.encode_batch(TEXTS, max_len=6)
    assert cut.shape == (len(TEXTS), 6)
    np.testing.assert_array_equal(lengths, np.minimum(full_lengths, 6))
    np.testing.assert_array_equal(cut, full[:, :6])


def test_max_len_above_every_row_pads_only_to_the_longest(tok):
    ids, lengths = tok.encode_batch(["Loved it.", "Dull."], max_len=500)
    assert ids.shape[1] == lengths.max() < 500


def test_huge_text_is_cut_to_max_len_and_matches_the_whole_encoding(tok):
    huge = " ".join(TEXTS) * 400  # about 1.5 million characters
    whole = tok.hf(huge[:20_000], add_special_tokens=False)["input_ids"][:32]
    ids, lengths = tok.encode_batch([huge, "Fine."], max_len=32)
    assert ids[0].tolist() == whole and lengths[0] == 32


def test_huge_text_whose_head_is_only_whitespace_is_still_encoded(tok):
    text = " " * 5000 + TEXTS[0]
    ids, lengths = tok.encode_batch([text], max_len=4)
    want, _ = tok.encode_batch([TEXTS[0]], max_len=4)
    if tok.kind == "bpe":  # byte-level BPE keeps whitespace runs as tokens
        assert lengths[0] == 4
    else:
        np.testing.assert_array_equal(ids, want)


def test_tokenizer_without_pre_tokenizer_encodes_huge_texts_whole():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    # No pre-tokenizer: the whole text is one word, so there is no safe place to cut it.
    rust = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]")
    )
    tok = Tokenizer(transformers.PreTrainedTokenizerFast(tokenizer_object=rust, pad_token="[PAD]"))
    ids, lengths = tok.encode_batch(["a" * 10_000, "a"], max_len=4)
    assert ids.tolist() == [[1], [2]] and lengths.tolist() == [1, 1]


def test_only_fast_tokenizers_can_be_wrapped():
    with pytest.raises(TypeError, match=r"PreTrainedTokenizerFast.*got object"):
        Tokenizer(object())


def test_empty_text_is_an_error_naming_the_row(tok):
    with pytest.raises(ValueError, match=r"text 1 gives no tokens.*2 such text.*on_empty='unk'"):
        tok.encode_batch(["Great.", "  \n\t", ""])


def test_empty_text_can_become_one_unk(tok):
    ids, lengths = tok.encode_batch(["Great fun.", "   "], on_empty="unk")
    assert lengths[1] == 1 and ids[1, 0] == tok.unk_id
    ids, lengths = tok.encode_batch(["", " "], on_empty="unk")
    assert ids.tolist() == [[tok.unk_id], [tok.unk_id]] and lengths.tolist() == [1, 1]


def test_special_token_strings_in_text_are_plain_text(tok):
    ids, lengths = tok.encode_batch(["[PAD] [UNK] [PAD]"])
    assert tok.pad_id not in ids[0, : lengths[0]]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [(lambda t: t.encode_batch("one text"), TypeError, "one string"),
     (lambda t: t.encode_batch(["ok", 3]), TypeError, "text 1 is int"),
     (lambda t: t.encode_batch(["ok"], max_len=0), ValueError, "max_len"),
     (lambda t: t.encode_batch(["ok"], on_empty="skip"), ValueError, "on_empty")],
)  # fmt: skip
def test_bad_encode_arguments(trained, call, error, match):
    with pytest.raises(error, match=match):
        call(trained["word"])


def test_empty_batch_gives_empty_arrays(trained):
    ids, lengths = trained["word"].encode_batch([])
    assert ids.shape == (0, 0) and lengths.shape == (0,)


# ---- spec checks -----------------------------------------------------------------------------
def test_matching_spec_passes(tok):
    tok.check_spec(_spec(tok.vocab_size))
    tok.check_spec(ModelSpec(input=tok.input_spec(embedding_dim=16)))
    tok.check_spec(tok.input_spec(embedding_dim=16))


def test_vocab_size_mismatch_says_both_sizes_and_the_fix(trained):
    tok = trained["word"]
    with pytest.raises(ValueError, match=rf"has {tok.vocab_size} ids.*is 1000: set input.vocab_size to "):
        tok.check_spec(_spec(1000))


def test_padding_mismatch_says_both_ids_and_the_fix(trained):
    tok = trained["word"]
    with pytest.raises(ValueError, match=r"pads with id 0 \('\[PAD\]'\).*is 3: set input.padding_idx to 0"):
        tok.check_spec(_spec(tok.vocab_size, padding_idx=3))
    with pytest.raises(ValueError, match="padding_idx is None"):
        tok.check_spec(_spec(tok.vocab_size, padding_idx=None))


def test_feature_specs_are_refused(trained):
    with pytest.raises(ValueError, match="only 'tokens' inputs"):
        trained["word"].check_spec(InputSpec(kind="features", feature_dim=4))


def test_encoded_batches_pass_the_batch_checks(tok):
    import rnncore

    ids, lengths = tok.encode_batch(TEXTS[:4], max_len=20)
    rnncore.prepare_batch(ModelSpec(input=tok.input_spec(8)), ids, lengths)


# ---- word labels -----------------------------------------------------------------------------
WORDS = [["The", "film", "was", "unwatchable", "!"], ["A", "great", "sequel"]]
LABELS = [[1, 2, 3, 4, 5], [6, 7, 8]]


@pytest.fixture
def bert(tmp_path) -> Tokenizer:
    return Tokenizer.from_pretrained(_bert_folder(tmp_path / "bert"))


def _label_per_word(batch: tokenize.WordBatch) -> list[list[int]]:
    """The aligned labels read back as predictions: what a perfect tagger's output maps to."""
    assert batch.labels is not None
    return [p.tolist() for p in words_from_subtokens(batch.labels, batch.word_ids)]


def test_only_the_first_subtoken_of_a_word_carries_its_label(bert):
    batch = bert.encode_words(WORDS, LABELS)
    assert bert.hf.convert_ids_to_tokens(batch.ids[0].tolist()) == [
        "the", "film", "was", "un", "##watch", "##able", "!"
    ]  # fmt: skip
    assert batch.word_ids.tolist() == [[0, 1, 2, 3, 3, 3, 4], [0, 1, 2, -1, -1, -1, -1]]
    assert batch.labels is not None
    assert batch.labels.tolist() == [[1, 2, 3, 4, -100, -100, 5], [6, 7, 8, -100, -100, -100, -100]]
    assert batch.lengths.tolist() == [7, 3]
    assert batch.ids[1, 3:].tolist() == [bert.pad_id] * 4


def test_label_all_subtokens_copies_the_label(bert):
    batch = bert.encode_words(WORDS, LABELS, label_all_subtokens=True, ignore_label=-1)
    assert batch.labels is not None
    assert batch.labels[0].tolist() == [1, 2, 3, 4, 4, 4, 5]
    assert batch.labels[1].tolist() == [6, 7, 8, -1, -1, -1, -1]


def test_predictions_map_back_to_words(bert):
    batch = bert.encode_words(WORDS, LABELS)
    assert _label_per_word(batch) == LABELS
    scores = np.eye(9)[np.where(batch.labels < 0, 0, batch.labels)]  # (B, T, 9) one-hot scores
    per_word = words_from_subtokens(scores, batch.word_ids)
    assert [s.argmax(-1).tolist() for s in per_word] == LABELS


def test_words_cut_by_max_len_are_dropped_from_the_predictions(bert):
    batch = bert.encode_words(WORDS, LABELS, max_len=4)
    assert batch.ids.shape == (2, 4)
    assert _label_per_word(batch) == [[1, 2, 3, 4], LABELS[1]]


def test_word_alignment_works_for_trained_tokenizers(tok):
    words = [s.split() for s in TEXTS[:5]]
    labels = [list(range(len(w))) for w in words]
    batch = tok.encode_words(words, labels)
    assert _label_per_word(batch) == labels


def test_label_count_must_match_word_count(bert):
    with pytest.raises(ValueError, match="row 1 has 3 words but labels of shape"):
        bert.encode_words(WORDS, [LABELS[0], [6, 7]])


@pytest.mark.parametrize("blank", ["", "  ", "\x00"])
def test_word_that_gives_no_tokens_is_an_error_or_one_unk(bert, blank):
    words = [["A", blank, "film"]]
    with pytest.raises(ValueError, match=re.escape(f"row 0, word 1 ({blank!r}) gives no tokens")):
        bert.encode_words(words, [[1, 2, 3]])
    batch = bert.encode_words(words, [[1, 2, 3]], on_empty="unk")
    assert batch.ids.tolist() == [[14, bert.unk_id, 6]]
    assert batch.word_ids.tolist() == [[0, 1, 2]]
    assert batch.labels is not None and batch.labels.tolist() == [[1, 2, 3]]


def test_blank_words_are_empty_for_every_kind(tok):
    with pytest.raises(ValueError, match="row 0, word 1"):
        tok.encode_words([["Fine", " ", "film"]])
    batch = tok.encode_words([["Fine", " ", "film"]], [[1, 2, 3]], on_empty="unk")
    assert batch.ids[0, batch.word_ids[0] == 1].tolist() == [tok.unk_id]
    assert _label_per_word(batch) == [[1, 2, 3]]


@pytest.mark.parametrize(
    ("words", "error", "match"),
    [(["The film"], TypeError, "row 0 is a string"),
     ([["The"], []], ValueError, "row 1 has no words"),
     ([["The", 3]], TypeError, "row 0, word 1 is int")],
)  # fmt: skip
def test_bad_word_rows(bert, words, error, match):
    with pytest.raises(error, match=match):
        bert.encode_words(words)


def test_string_labels_are_refused(bert):
    with pytest.raises(TypeError, match="integer ids"):
        bert.encode_words([["A"]], [["B-PER"]])


def test_preds_must_match_word_ids(bert):
    batch = bert.encode_words(WORDS)
    assert batch.labels is None
    with pytest.raises(ValueError, match="matching word_ids"):
        words_from_subtokens(np.zeros((2, 3)), batch.word_ids)


# ---- imports ---------------------------------------------------------------------------------
def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_importing_loads_no_text_library_and_using_it_loads_no_framework(tmp_path):
    code = (
        "import sys\n"
        "import rnncore.tokenize as t\n"
        "print(sorted(m for m in ('tokenizers', 'transformers') if m in sys.modules))\n"
        f"t.Tokenizer.train({TEXTS!r}, kind='word').encode_batch(['A fine film.'])\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules))\n"
    )
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "[]"]


def test_missing_text_extra_names_the_pip_command(monkeypatch):
    def no_transformers(name, *args, **kwargs):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(tokenize.importlib, "import_module", no_transformers)
    with pytest.raises(ImportError, match=r"needs tokenizers.*pip install 'rnncore\[text\]'"):
        Tokenizer.train(TEXTS)
