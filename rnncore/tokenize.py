"""The one tokenizer every backend shares: text -> right-padded int64 ids, word labels -> sub-token labels.

`Tokenizer` wraps a `transformers.PreTrainedTokenizerFast` (built on Hugging Face `tokenizers`). Train one
locally from your texts, or load any tokenizer folder from disk; encoding hands back numpy arrays that
`rnncore.prepare_batch` and every backend accept as they are.

Choices, and why:

- A trained tokenizer's special tokens are `[PAD]` (id 0) and `[UNK]` (id 1) only, so a spec's
  `padding_idx` is 0 (a loaded one keeps its own; `check_spec` compares). Sequences never
  get `[CLS]`/`[SEP]`, not even from a pretrained BERT folder: a recurrent encoder reads the whole sequence
  and pools it itself, so it has no use for them.
- Special-token strings inside the text (a review quoting "[PAD]") are encoded as ordinary text. Otherwise
  user data could inject the padding id in the middle of a row.
- An empty or whitespace-only text gives no tokens; a length-0 row has no last step and no mean, so it is
  an error (naming the row) unless you ask for `on_empty="unk"`, which encodes it as one `[UNK]`.
- Tagging uses the first-sub-token rule: a word's label sits on its first sub-token and the others get
  `ignore_label` (-100, what `torch.nn.CrossEntropyLoss` skips by default), so each word counts once in
  the loss whatever its length. `words_from_subtokens` reads predictions back from the same positions.
- Encoding runs the Rust tokenizer's batch encoder (parallel over texts) and pads in numpy: the padded
  `return_tensors="np"` path of transformers pads every encoding in Rust and copies it through Python
  lists, at a third to a half of the speed.
- Word-level and WordPiece tokenizers with BERT's normalizer and pre-tokenizer (`word`, `wordpiece`, BERT
  `vocab.txt` folders) encode most texts in Python instead, three to four times faster than the Rust
  batch encoder (which tracks alignments for every character): both steps act on one character at a
  time, so a table of what the Rust tokenizer itself does with each of a few hundred common characters
  (asked once), a regular expression and a cached per-word lookup give the same ids. A text with any
  character outside the table goes to Rust as before.
- With `max_len`, a huge text is tokenized from a head of `max_len * 16` characters when that provably
  gives the same first `max_len` tokens, so time and memory stay bounded by `max_len`, not the text.
- WordPiece training can assign different vocabularies from one run to the next when pair counts tie
  (huggingface/tokenizers#1794); byte-level BPE and word-level training are repeatable. Either way, save
  the tokenizer next to the model: its ids are only meaningful with that exact vocabulary.

Needs the `text` extra (`pip install 'rnncore[text]'`); importing this module loads numpy only.

Example:
    >>> tok = Tokenizer.train(texts, kind="wordpiece", vocab_size=8000)
    >>> ids, lengths = tok.encode_batch(["A gripping, patient film."], max_len=64)
    >>> spec = ModelSpec(input=tok.input_spec(embedding_dim=64), ...)
"""

from __future__ import annotations

import importlib
import json
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from .jsonfile import read_json
from .limits import check
from .spec import InputSpec, ModelSpec
from .tokenizer_checks import check_tokenizer_folder

FORMAT = "rnncore.tokenizer/1"
KINDS = ("wordpiece", "bpe", "word")
ON_EMPTY = ("error", "unk")
PAD, UNK = "[PAD]", "[UNK]"
# Trainers give special tokens the first ids in list order: [PAD] -> 0, [UNK] -> 1.
SPECIAL_TOKENS = (PAD, UNK)
META_FILE = "rnncore_tokenizer.json"
# Bytes every byte-level BPE vocabulary starts from, before any merge.
_BYTE_ALPHABET = 256
# A huge text is first encoded from a head of `max_len * this` characters; English tokens average about
# four characters, so the head almost always holds enough tokens (if not, the whole text is encoded).
_HEAD_CHARS_PER_TOKEN = 16
# Characters the Python fast path may see (see `_FastWords`): printable ASCII with tab/newline/return,
# Latin-1 letters and signs, and typographic punctuation (dashes, quotes, ellipsis).
_FAST_CANDIDATES = "\t\n\r" + "".join(
    map(chr, [*range(0x20, 0x7F), *range(0xA0, 0x100), *range(0x2010, 0x2028)])
)
# The per-word cache of WordPiece ids is cleared past this many words (unknown words are unbounded).
_WORD_CACHE_LIMIT = 1 << 19


class WordBatch(NamedTuple):
    """Sub-token ids for a batch of word lists, with what is needed to map back to words.

    ids: int64 (B, T), right padded with the pad id.
    lengths: int64 (B,), valid steps per row.
    labels: int64 (B, T) word labels moved onto sub-tokens (`ignore_label` elsewhere), or None.
    word_ids: int64 (B, T), the index of the word each sub-token came from; -1 on padding.
    """

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    word_ids: np.ndarray


def _require(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        if (getattr(err, "name", None) or "").split(".")[0] != name:
            raise
        raise ImportError(
            f"rnncore.tokenize needs {name}, which is not installed: pip install 'rnncore[text]'"
        ) from err


class Tokenizer:
    """Text in, right-padded numpy ids out; one object for training, saving, loading and encoding.

    Build one with `Tokenizer.train` or `Tokenizer.from_pretrained`, or wrap a fast tokenizer you
    already hold with `Tokenizer(hf_tokenizer)`. Change the wrapped tokenizer through a new `Tokenizer`:
    this object keeps its own copy of the Rust tokenizer for encoding.
    """

    def __init__(self, hf: Any, *, kind: str = "pretrained") -> None:
        """Wrap a `transformers.PreTrainedTokenizerFast` that has a pad token."""
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(
                f"Tokenizer wraps a fast tokenizer (transformers.PreTrainedTokenizerFast); got "
                f"{type(hf).__name__}"
            )
        if hf.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token, and batches are padded; load it with "
                "Tokenizer.from_pretrained(folder, pad_token='...')"
            )
        self._hf = hf
        self.kind = kind
        # A private copy: transformers switches padding and truncation on its backend per call, and
        # those settings would leak into our encoding.
        self._rust = _require("tokenizers").Tokenizer.from_str(backend.to_str())
        self._rust.no_padding()
        self._rust.no_truncation()
        self._rust.encode_special_tokens = True
        self._fast: _FastWords | bool | None = False  # False: not looked at yet
        # max id + 1, not the entry count: an embedding table must hold every id, holes included.
        self._vocab_size = max(self._rust.get_vocab(with_added_tokens=True).values()) + 1
        check("MAX_VOCAB", self._vocab_size, "the tokenizer's vocabulary size (its largest id + 1)")

    # ---- building ------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        kind: str = "wordpiece",
        vocab_size: int = 8000,
        lowercase: bool = True,
        min_frequency: int = 2,
    ) -> Tokenizer:
        """Train a tokenizer on `texts` (locally, in about a second for ten thousand sentences).

        Args:
            texts: the training texts (any iterable of strings; a generator is fine).
            kind: "wordpiece" (BERT normalizer and pre-tokenizer, `##` continuations), "bpe" (byte-level,
                so no text is ever unknown) or "word" (one id per word, punctuation split off).
            vocab_size: the most ids to keep, [PAD] and [UNK] included; a small corpus may yield fewer,
                so size the spec from `tokenizer.vocab_size`. "bpe" needs at least 258 (256 bytes + 2).
            lowercase: lowercase the text first ("wordpiece" then also strips accents, as BERT uncased).
            min_frequency: how often a word ("word") or merge ("wordpiece", "bpe") must occur to be kept.

        Returns:
            A Tokenizer whose [PAD] is id 0 and [UNK] id 1.
        """
        if kind not in _BUILDERS:
            raise ValueError(f"kind: got {kind!r}; expected one of {', '.join(map(repr, KINDS))}")
        smallest = len(SPECIAL_TOKENS) + (_BYTE_ALPHABET if kind == "bpe" else 1)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
            raise ValueError(f"vocab_size: got {vocab_size!r}; kind {kind!r} needs an integer >= {smallest}")
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
            raise ValueError(f"min_frequency: got {min_frequency!r}; expected an integer >= 0")
        if isinstance(texts, str):
            raise TypeError("texts is one string; pass a list (or other iterable) of texts")
        tokenizers = _require("tokenizers")
        rust, trainer = _BUILDERS[kind](tokenizers, vocab_size, lowercase, min_frequency)
        rust.train_from_iterator(_checked_texts(texts), trainer=trainer)
        hf = _require("transformers").PreTrainedTokenizerFast(
            tokenizer_object=rust, pad_token=PAD, unk_token=UNK
        )
        return cls(hf, kind=kind)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, lowercase: bool | None = None, pad_token: str | None = None
    ) -> Tokenizer:
        """Load a tokenizer from a local folder; nothing is ever downloaded.

        Args:
            folder: a folder with `tokenizer.json` (what `save` and transformers' `save_pretrained`
                write) or a BERT-style `vocab.txt`.
            lowercase: for a `vocab.txt` folder, whether the vocabulary is uncased (default True, as
                bert-base-uncased). A `tokenizer.json` carries its own normalizer, so it is refused there.
            pad_token: pad with this token instead of the tokenizer's own; needed when it names none
                (GPT-2 style). Added to the vocabulary if it is not there.
        """
        path = Path(folder)
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise FileNotFoundError(
                f"tokenizer folder {str(path)!r} {what}; pass a local folder holding tokenizer.json or a "
                "BERT vocab.txt (rnncore never downloads tokenizers)"
            )
        check_tokenizer_folder(path)  # ids and patterns within budget, before Rust reads them
        transformers = _require("transformers")
        options: dict[str, Any] = {"local_files_only": True}
        if (path / "tokenizer.json").is_file():
            if lowercase is not None:
                raise ValueError(
                    f"lowercase: {path / 'tokenizer.json'} has its own normalizer; leave lowercase unset"
                )
            fast = transformers.PreTrainedTokenizerFast
            hf = _loaded(path, lambda: fast.from_pretrained(str(path), **options))
        elif (path / "vocab.txt").is_file():
            # BertTokenizerFast(vocab_file=...) silently builds a 5-token tokenizer under transformers 5;
            # from_pretrained on the folder reads the whole vocabulary.
            options["do_lower_case"] = True if lowercase is None else lowercase
            hf = _loaded(path, lambda: transformers.BertTokenizerFast.from_pretrained(str(path), **options))
        else:
            found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
            raise FileNotFoundError(f"{str(path)!r} holds no tokenizer.json or vocab.txt (found: {found})")
        if pad_token is not None and hf.pad_token != pad_token:
            hf.add_special_tokens({"pad_token": pad_token})
        return cls(hf, kind=_read_kind(path))

    def save(self, folder: str | Path) -> None:
        """Write `tokenizer.json` (+ transformers' config) and rnncore's format file to `folder`."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self._hf.save_pretrained(str(path))
        meta = {"format": FORMAT, "kind": self.kind}
        (path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    # ---- facts ---------------------------------------------------------------------
    @property
    def hf(self) -> Any:
        """The wrapped `transformers` tokenizer (for decoding, inspecting tokens and the like)."""
        return self._hf

    @property
    def vocab_size(self) -> int:
        """Rows the embedding table needs: the largest id + 1."""
        return self._vocab_size

    @property
    def pad_id(self) -> int:
        return int(self._hf.pad_token_id)

    @property
    def unk_id(self) -> int | None:
        unk = self._hf.unk_token_id
        return None if unk is None else int(unk)

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, pad_id={self.pad_id})"

    def input_spec(self, embedding_dim: int) -> InputSpec:
        """A token `InputSpec` that matches this tokenizer (vocab size and padding id)."""
        return InputSpec(
            kind="tokens", vocab_size=self.vocab_size, embedding_dim=embedding_dim, padding_idx=self.pad_id
        )

    def check_spec(self, spec: ModelSpec | InputSpec) -> None:
        """Raise ValueError, saying what differs and how to fix, unless `spec` reads this tokenizer's ids."""
        inp = spec.input if isinstance(spec, ModelSpec) else spec
        if inp.kind != "tokens":
            raise ValueError(f"spec input.kind is {inp.kind!r}; a tokenizer feeds only 'tokens' inputs")
        problems = []
        if inp.vocab_size != self.vocab_size:
            problems.append(
                f"the tokenizer has {self.vocab_size} ids (0..{self.vocab_size - 1}) but spec "
                f"input.vocab_size is {inp.vocab_size}: set input.vocab_size to {self.vocab_size}"
            )
        if inp.padding_idx != self.pad_id:
            problems.append(
                f"the tokenizer pads with id {self.pad_id} ({self._hf.pad_token!r}) but spec "
                f"input.padding_idx is {inp.padding_idx}: set input.padding_idx to {self.pad_id}"
            )
        if problems:
            raise ValueError(
                "tokenizer and spec disagree: "
                + "; ".join(problems)
                + " (tokenizer.input_spec(embedding_dim) builds a matching input spec)"
            )

    # ---- encoding ------------------------------------------------------------------
    def encode_batch(
        self, texts: Sequence[str], max_len: int | None = None, *, on_empty: str = "error"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts into a right-padded id matrix.

        Args:
            texts: a list of strings.
            max_len: keep at most this many tokens per text (the rest is dropped); None keeps all.
                The matrix is as wide as its longest row, so at most `max_len`.
            on_empty: what a text that gives no tokens (empty, whitespace only) becomes: "error" raises
                ValueError naming the row; "unk" makes it one [UNK] token (length 1).

        Returns:
            ids int64 (B, T) padded with `pad_id`, and lengths int64 (B,).

        Example:
            >>> ids, lengths = tok.encode_batch(["Loved it.", "Not for me, sadly."], max_len=32)
        """
        batch = _checked_batch(texts)
        _check_max_len(max_len)
        _check_on_empty(on_empty)
        rows = self._encode_whole(batch) if max_len is None else self._encode_truncated(batch, max_len)
        ids, lengths = _pad(rows, self.pad_id)
        return self._fill_empty_rows(ids, lengths, on_empty)

    def encode_words(
        self,
        words: Sequence[Sequence[str]],
        word_labels: Sequence[Sequence[int]] | None = None,
        *,
        label_all_subtokens: bool = False,
        max_len: int | None = None,
        ignore_label: int = -100,
        on_empty: str = "error",
    ) -> WordBatch:
        """Encode pre-split words (for tagging) and move word labels onto sub-tokens.

        Args:
            words: one list of words per sentence.
            word_labels: one integer label per word, or None for inputs only.
            label_all_subtokens: copy a word's label onto every sub-token instead of the first only
                (labels are copied as they are: a "B-" tag stays "B-" on continuations).
            max_len: keep at most this many sub-tokens per row; words past the cut are dropped.
            ignore_label: the label of sub-tokens that carry none and of padding.
            on_empty: what a word that gives no tokens (an empty string, a control character) becomes:
                "error" raises ValueError naming row and word; "unk" makes it one [UNK] token.

        Returns:
            A `WordBatch` (ids, lengths, labels, word_ids); feed `word_ids` to `words_from_subtokens`
            to read one prediction per word.
        """
        word_rows = _checked_word_rows(words)
        _check_max_len(max_len)
        _check_on_empty(on_empty)
        labels = None if word_labels is None else _checked_labels(word_labels, word_rows)
        unblanked = [[_blank_to_empty(w) for w in row] for row in word_rows]
        encodings = self._rust.encode_batch(unblanked, is_pretokenized=True, add_special_tokens=False)
        rows = [e.ids for e in encodings]
        wids = [[-1 if w is None else w for w in e.word_ids] for e in encodings]
        self._fill_empty_words(rows, wids, word_rows, on_empty)
        if max_len is not None:
            rows = [r[:max_len] for r in rows]
            wids = [w[:max_len] for w in wids]
        ids, lengths = _pad(rows, self.pad_id)
        word_ids, _ = _pad(wids, -1)
        aligned = None
        if labels is not None:
            aligned = _align_labels(labels, word_ids, label_all_subtokens, ignore_label)
        return WordBatch(ids, lengths, aligned, word_ids)

    # ---- helpers -------------------------------------------------------------------
    def _encode_whole(self, texts: list[str]) -> list[list[int]]:
        """Every token id of each text: the Python fast path where it applies, Rust for the rest."""
        if self._fast is False:
            self._fast = _FastWords.for_tokenizer(self._rust)
        fast = self._fast
        if not isinstance(fast, _FastWords):
            return [e.ids for e in self._rust.encode_batch_fast(texts, add_special_tokens=False)]
        rows = [fast.encode(t) for t in texts]
        rest = [i for i, row in enumerate(rows) if row is None]
        if rest:
            encoded = self._rust.encode_batch_fast([texts[i] for i in rest], add_special_tokens=False)
            for i, encoding in zip(rest, encoded, strict=True):
                rows[i] = encoding.ids
        return rows  # type: ignore[return-value]  # every None was replaced

    def _encode_truncated(self, texts: list[str], max_len: int) -> list[list[int]]:
        """Encode texts, keeping the first `max_len` tokens, without tokenizing all of a huge text.

        A text longer than the head budget is encoded from its head only. Every pre-token (word) of the
        head but the last is tokenized exactly as in the whole text; if those hold `max_len` tokens they
        are the answer, otherwise that text is encoded whole. Tokenizers without a pre-tokenizer have no
        such word boundaries, so their texts are always encoded whole.
        """
        budget = max_len * _HEAD_CHARS_PER_TOKEN
        can_cut = self._rust.pre_tokenizer is not None
        is_long = [can_cut and len(t) > budget for t in texts]
        short = [t for t, cut in zip(texts, is_long, strict=True) if not cut]
        encoded = iter(self._encode_whole(short))
        rows = [[] if cut else next(encoded)[:max_len] for cut in is_long]
        long_rows = [i for i, cut in enumerate(is_long) if cut]
        # encode_batch, not _fast: the word ids are needed, and only the full encoding has them.
        heads = self._rust.encode_batch([texts[i][:budget] for i in long_rows], add_special_tokens=False)
        for i, head in zip(long_rows, heads, strict=True):
            word_ids = head.word_ids
            stable = word_ids.index(word_ids[-1]) if word_ids else 0
            whole = self._rust.encode(texts[i], add_special_tokens=False) if stable < max_len else head
            rows[i] = whole.ids[:max_len]
        return rows

    def _fill_empty_rows(
        self, ids: np.ndarray, lengths: np.ndarray, on_empty: str
    ) -> tuple[np.ndarray, np.ndarray]:
        empty = np.flatnonzero(lengths == 0)
        if empty.size == 0:
            return ids, lengths
        if on_empty == "error":
            raise ValueError(
                f"text {int(empty[0])} gives no tokens (empty, blank, or only characters the tokenizer "
                f"drops; {empty.size} such text(s) in this batch): drop it, or pass on_empty='unk' to "
                "encode it as one [UNK] token"
            )
        unk = self._required_unk_id()
        if ids.shape[1] == 0:
            ids = np.full((ids.shape[0], 1), self.pad_id, dtype=np.int64)
        ids[empty, 0] = unk
        lengths[empty] = 1
        return ids, lengths

    def _fill_empty_words(
        self, rows: list[list[int]], wids: list[list[int]], words: list[list[str]], on_empty: str
    ) -> None:
        """Give each word that produced no tokens one [UNK] in place (or raise), editing the rows."""
        for r, (row, row_wids) in enumerate(zip(rows, wids, strict=True)):
            seen = set(row_wids) - {-1}
            if len(seen) == len(words[r]):
                continue
            missing = sorted(set(range(len(words[r]))) - seen)
            if on_empty == "error":
                raise ValueError(
                    f"row {r}, word {missing[0]} ({words[r][missing[0]]!r}) gives no tokens: drop it, or "
                    "pass on_empty='unk' to encode it as one [UNK] token"
                )
            unk = self._required_unk_id()
            for w in missing:
                # Word ids rise along the row, so the new token goes before the first later word.
                at = next((i for i, x in enumerate(row_wids) if x > w), len(row_wids))
                row.insert(at, unk)
                row_wids.insert(at, w)

    def _required_unk_id(self) -> int:
        unk = self.unk_id
        if unk is None:
            raise ValueError("on_empty='unk' needs an unknown token, and this tokenizer has none")
        return unk


class _FastWords:
    """Python encoding for BertNormalizer + BertPreTokenizer + WordLevel/WordPiece tokenizers.

    Both BERT steps act on each character alone: the normalizer removes or maps it (clean-up, accent
    stripping, lowercasing) and the pre-tokenizer treats it as a space, a character of a word, or
    punctuation that stands alone. The table is filled by asking the Rust tokenizer about each candidate
    character, so it holds the tokenizer's own behaviour, not a re-implementation; a character with any
    other answer (removed, several characters, CJK padded with spaces) stays out of the table, and a text
    holding a character outside it is left to Rust. Words then map to ids one by one, as the model does
    (WordLevel: the vocabulary or [UNK]; WordPiece: its own split of the word, cached).
    """

    def __init__(self, rust: Any, table: dict[str, str], spaces: set[str], roles: dict[str, str]) -> None:
        known = sorted({*table, *spaces})
        self._outside = re.compile("[^" + "".join(map(re.escape, known)) + "]")
        # ASCII texts (most) through str.lower or as they are when that is what the table does
        self._ascii = _normalizer({c: n for c, n in table.items() if c.isascii()})
        self._other = _normalizer(table)
        word = "".join(re.escape(n) for n in sorted(roles) if roles[n] == "word")
        alone = "".join(re.escape(n) for n in sorted(roles) if roles[n] == "alone")
        parts = [f"[{word}]+" if word else "", f"[{alone}]" if alone else ""]
        # characters in neither class are spaces: findall skips them
        self._split = re.compile("|".join(p for p in parts if p) or "(?!)").findall
        self._model = rust.model
        self._ids: dict[str, int] | None = None
        self._unk = 0
        if type(rust.model).__name__ == "WordLevel":
            self._ids = dict(rust.get_vocab(with_added_tokens=False))
            self._unk = self._ids[rust.model.unk_token]
        self._pieces: dict[str, list[int]] = {}

    @classmethod
    def for_tokenizer(cls, rust: Any) -> _FastWords | None:
        """The fast path for `rust`, or None when its pipeline is not one this class reproduces."""
        kinds = (type(rust.normalizer).__name__, type(rust.pre_tokenizer).__name__, type(rust.model).__name__)
        if kinds[:2] != ("BertNormalizer", "BertPreTokenizer") or kinds[2] not in ("WordLevel", "WordPiece"):
            return None
        # Added tokens are matched in the raw text before anything else; special ones are not when
        # encode_special_tokens is set, so only tokenizers whose added tokens are all special qualify.
        added = rust.get_added_tokens_decoder().values()
        if not rust.encode_special_tokens or not all(t.special for t in added):
            return None
        if kinds[2] == "WordLevel" and rust.model.unk_token not in rust.get_vocab(with_added_tokens=False):
            return None
        table: dict[str, str] = {}  # character -> its normalized form, in a word or standing alone
        spaces: set[str] = set()  # characters that end up as word separators
        roles: dict[str, str] = {}  # normalized form -> "word" or "alone"
        for c in _FAST_CANDIDATES:
            n = rust.normalizer.normalize_str(c)
            if len(n) != 1 or unicodedata.category(n).startswith("M"):
                continue
            role = _role(rust, n)
            if role == "space":
                spaces.add(c)
            elif role is not None:
                table[c], roles[n] = n, role
        if spaces & set(table.values()):
            return None  # a space that is also some character's normal form: not per character
        return cls(rust, table, spaces, roles) if table else None

    def encode(self, text: str) -> list[int] | None:
        """The ids of `text`, or None when it holds a character outside the table."""
        if self._outside.search(text):
            return None
        text = self._ascii(text) if text.isascii() else self._other(text)
        words = self._split(text)
        if self._ids is not None:
            get, unk = self._ids.get, self._unk
            return [get(w, unk) for w in words]
        out: list[int] = []
        pieces = self._pieces
        for w in words:
            ids = pieces.get(w)
            if ids is None:
                if len(pieces) >= _WORD_CACHE_LIMIT:
                    pieces.clear()
                ids = pieces[w] = [t.id for t in self._model.tokenize(w)]
            out += ids
        return out


def _normalizer(table: dict[str, str]) -> Callable[[str], str]:
    """A function that maps each character of a text as `table` says (texts hold table characters only)."""
    if all(c == n for c, n in table.items()):
        return str  # the identity, for str arguments
    if all(c.lower() == n for c, n in table.items()):
        return str.lower
    return operator.methodcaller("translate", str.maketrans(table))  # picklable, unlike a lambda


def _role(rust: Any, n: str) -> str | None:
    """What the pre-tokenizer does with the normalized character `n`: space, word, alone, or None."""
    between = [p for p, _ in rust.pre_tokenizer.pre_tokenize_str(f"x{n}x")]
    twice = [p for p, _ in rust.pre_tokenizer.pre_tokenize_str(n + n)]
    if between == ["x", "x"] and twice == []:
        return "space"
    if between == [f"x{n}x"] and twice == [n + n]:
        return "word"
    if between == ["x", n, "x"] and twice == [n, n]:
        return "alone"
    return None


def words_from_subtokens(preds: np.ndarray, word_ids: np.ndarray) -> list[np.ndarray]:
    """One prediction per word, read at each word's first sub-token (the first-sub-token rule).

    Args:
        preds: per-step predictions (B, T) or scores (B, T, ...) from a tagging model.
        word_ids: `WordBatch.word_ids` from `Tokenizer.encode_words`.

    Returns:
        For each row, the predictions of its words in order: `out[b][i]` belongs to word `i`. Words cut
        off by `max_len` are missing, so a row may be shorter than its word list.

    Example:
        >>> batch = tok.encode_words([["A", "gripping", "film"]])
        >>> tags = words_from_subtokens(model_scores.argmax(-1), batch.word_ids)
    """
    preds = np.asarray(preds)
    word_ids = np.asarray(word_ids)
    if word_ids.ndim != 2 or preds.shape[:2] != word_ids.shape:
        raise ValueError(
            f"preds must have shape (B, T, ...) matching word_ids {word_ids.shape}; got {preds.shape}"
        )
    first = _first_subtokens(word_ids)
    return [preds[b][first[b]] for b in range(word_ids.shape[0])]


# ---- training recipes ----------------------------------------------------------------------
def _wordpiece(tokenizers: ModuleType, vocab_size: int, lowercase: bool, min_frequency: int) -> Any:
    rust = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token=UNK))
    # BERT's: clean control characters, split CJK characters, strip accents when lowercasing.
    rust.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=lowercase)
    rust.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    rust.decoder = tokenizers.decoders.WordPiece()
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    return rust, trainer


def _byte_bpe(tokenizers: ModuleType, vocab_size: int, lowercase: bool, min_frequency: int) -> Any:
    normalizers = tokenizers.normalizers
    # BPE over bytes: every string is covered by the 256 byte tokens, so no model-level [UNK] exists
    # ([UNK] stays in the vocabulary for on_empty='unk').
    rust = tokenizers.Tokenizer(tokenizers.models.BPE())
    # NFC so that composed and decomposed accents give the same bytes.
    steps = [normalizers.NFC(), normalizers.Lowercase()] if lowercase else [normalizers.NFC()]
    rust.normalizer = normalizers.Sequence(steps)
    # A space before every word, the first included, so a word encodes alike at the start of a text,
    # inside it, and as a lone word in encode_words.
    byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=True)
    rust.pre_tokenizer = byte_level
    rust.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return rust, trainer


def _word_level(tokenizers: ModuleType, vocab_size: int, lowercase: bool, min_frequency: int) -> Any:
    rust = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token=UNK))
    rust.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=lowercase)
    # Words and punctuation apart, as for WordPiece, so "film," and "film" share an id.
    rust.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    trainer = tokenizers.trainers.WordLevelTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    return rust, trainer


_BUILDERS = {"wordpiece": _wordpiece, "bpe": _byte_bpe, "word": _word_level}


# ---- checks and array plumbing -------------------------------------------------------------
def _loaded(path: Path, load: Callable[[], Any]) -> Any:
    """`load()`, where a damaged tokenizer file becomes a ValueError naming the folder (transformers
    and the Rust tokenizers raise KeyError, JSON errors, bare Exception and more)."""
    try:
        return load()
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a tokenizer folder that can be read ({first})") from None


def _read_kind(path: Path) -> str:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        return "pretrained"
    meta = read_json(meta_path, ValueError, FORMAT)
    return str(meta.get("kind", "pretrained"))


def _checked_texts(texts: Iterable[str]) -> Iterator[str]:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}; expected str")
        yield text


def _checked_batch(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts is one string; pass a list of texts (e.g. [text])")
    return [_blank_to_empty(t) for t in _checked_texts(texts)]


def _blank_to_empty(text: str) -> str:
    # Byte-level BPE turns whitespace into tokens; a blank text or word must count as empty in every kind.
    return "" if text.isspace() else text


def _checked_word_rows(words: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(words, str):
        raise TypeError("words is one string; pass a list of word lists, e.g. [['A', 'fine', 'film']]")
    rows = []
    for r, row in enumerate(words):
        if isinstance(row, str):
            raise TypeError(
                f"row {r} is a string; encode_words takes lists of words (use encode_batch for raw text)"
            )
        row = list(row)
        if not row:
            raise ValueError(f"row {r} has no words; drop empty sentences before encoding")
        for w, word in enumerate(row):
            if not isinstance(word, str):
                raise TypeError(f"row {r}, word {w} is {type(word).__name__}; expected str")
        rows.append(row)
    return rows


def _checked_labels(word_labels: Sequence[Sequence[int]], words: list[list[str]]) -> list[np.ndarray]:
    if len(word_labels) != len(words):
        raise ValueError(f"word_labels has {len(word_labels)} rows but words has {len(words)}")
    labels = []
    for r, (row, row_words) in enumerate(zip(word_labels, words, strict=True)):
        arr = np.asarray(row)
        if arr.shape != (len(row_words),):
            raise ValueError(
                f"row {r} has {len(row_words)} words but labels of shape {arr.shape}; "
                "give exactly one label per word"
            )
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"row {r}: labels must be integer ids; got dtype {arr.dtype}")
        labels.append(arr.astype(np.int64))
    return labels


def _check_max_len(max_len: int | None) -> None:
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"max_len: got {max_len!r}; expected None or an integer >= 1")


def _check_on_empty(on_empty: str) -> None:
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty: got {on_empty!r}; expected one of {', '.join(map(repr, ON_EMPTY))}")


def _pad(rows: Sequence[Sequence[int]] | Sequence[np.ndarray], fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad ragged integer rows into an int64 matrix as wide as the longest row."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    out = np.full((len(rows), width), fill, dtype=np.int64)
    out[np.arange(width) < lengths[:, None]] = flat
    return out, lengths


def _first_subtokens(word_ids: np.ndarray) -> np.ndarray:
    """True where a word's first sub-token sits (a real token whose word differs from the step before)."""
    before = np.pad(word_ids[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    return (word_ids >= 0) & (word_ids != before)


def _align_labels(
    labels: list[np.ndarray], word_ids: np.ndarray, all_subtokens: bool, ignore_label: int
) -> np.ndarray:
    carries = (word_ids >= 0) if all_subtokens else _first_subtokens(word_ids)
    table, _ = _pad(labels, ignore_label)  # (B, most words)
    rows = np.broadcast_to(np.arange(len(labels))[:, None], word_ids.shape)
    out = np.full(word_ids.shape, ignore_label, dtype=np.int64)
    out[carries] = table[rows[carries], word_ids[carries]]
    return out
