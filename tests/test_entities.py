"""Entity spans in six schemes and two modes, against seqeval's own behaviour.

seqeval (1.2.2) is the reference: its default mode (`get_entities`, a port of the CoNLL
`conlleval` script's chunk rules) for mode="default", and `seqeval.scheme.Tokens` with the
scheme's class for mode="strict". Checked on every sequence of up to three tags (a superset
of seqeval's own test cases, which are pairs of tags), on random sequences (hypothesis),
and by writing random entities in each scheme and reading them back.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import seqeval.scheme as seqeval_scheme
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from rnncore import metrics
from rnncore.entities import PREFIXES, SCHEMES, extract_entities, infer_scheme


class _IOE1StartsLikeIOE2(seqeval_scheme.IOE1):
    """seqeval's IOE1 with the one correction rnncore makes: entities start where IOE2's do.

    seqeval's IOE1 never starts an entity at E-X (its source marks IOE1 as not handling
    some cases), so it loses the single-token entity of valid IOE1 such as `O E-X I-X`.
    """

    start_patterns = seqeval_scheme.IOE2.start_patterns


def _seqeval_strict(tags: list[str], scheme: str) -> list[tuple[str, int, int]]:
    token_class = _IOE1StartsLikeIOE2 if scheme == "IOE1" else getattr(seqeval_scheme, scheme)
    return [(e.tag, e.start, e.end) for e in seqeval_scheme.Tokens(tags, token_class).entities]


def _seqeval_default(tags: list[str]) -> list[tuple[str, int, int]]:
    """conlleval's chunks as seqeval finds them, end made exclusive; L and U read as E and S."""
    as_iobes = [{"L": "E", "U": "S"}.get(tag[0], tag[0]) + tag[1:] for tag in tags]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about bare prefixes, which it accepts
        return [(type_, start, end + 1) for type_, start, end in get_entities(as_iobes)]


def _alphabet(scheme: str) -> list[str]:
    """Every tag shape of a scheme over two types, bare prefixes (type "_") included."""
    return ["O"] + [f"{p}{suffix}" for p in PREFIXES[scheme] if p != "O" for suffix in ("-PER", "-ORG", "")]


def _tag_sequences(scheme: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(_alphabet(scheme)), max_size=14)


# ---------------------------------------------------------------------------------------------
# Against seqeval


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_short_sequence_reads_as_seqeval_reads_it(scheme):
    checked = 0
    for length in range(4):
        for tags in map(list, itertools.product(_alphabet(scheme), repeat=length)):
            assert extract_entities(tags, scheme, mode="strict") == _seqeval_strict(tags, scheme), tags
            assert extract_entities(tags, scheme) == _seqeval_default(tags), tags
            checked += 1
    assert checked >= 400  # 1 + 7 + 49 + 343 for the seven tag shapes of IOB1


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_sequences_read_as_seqeval_reads_them(scheme, data):
    tags = data.draw(_tag_sequences(scheme))
    assert extract_entities(tags, scheme, mode="strict") == _seqeval_strict(tags, scheme)
    assert extract_entities(tags, scheme) == _seqeval_default(tags)


def test_ioe1_correction_is_the_only_departure_from_seqeval():
    valid_ioe1 = ["O", "E-PER", "I-PER", "O"]  # two touching PER entities: E- closes the first
    stock = seqeval_scheme.Tokens(valid_ioe1, seqeval_scheme.IOE1).entities
    assert [(e.tag, e.start, e.end) for e in stock] == [("PER", 2, 3)]  # seqeval loses one
    assert extract_entities(valid_ioe1, "IOE1", mode="strict") == [("PER", 1, 2), ("PER", 2, 3)]
    assert extract_entities(valid_ioe1, "IOE1") == [("PER", 1, 2), ("PER", 2, 3)]


@pytest.mark.parametrize("scheme", ["IOB2", "IOE2", "IOBES", "BILOU"])
def test_entity_scores_match_seqeval_strict_mode(scheme):
    from seqeval.metrics import f1_score

    sequences = [list(tags) for tags in itertools.product(_alphabet(scheme), repeat=2)]
    predictions = sequences[1:] + sequences[:1]  # each sequence scored against its neighbour
    ours = metrics.entity_precision_recall_f1(sequences, predictions, scheme=scheme, mode="strict")
    expected = f1_score(sequences, predictions, mode="strict", scheme=getattr(seqeval_scheme, scheme))
    assert ours["f1"] == pytest.approx(expected, rel=1e-12)
    assert 0 < ours["f1"] < 1


# ---------------------------------------------------------------------------------------------
# Writing entities in a scheme and reading them back


def _write(length: int, spans: list[tuple[str, int, int]], scheme: str) -> list[str]:
    """Valid tags of `scheme` for non-overlapping sorted spans."""
    tags = ["O"] * length
    starts = {start: type_ for type_, start, _ in spans}
    ends = {end: type_ for type_, _, end in spans}
    for type_, start, end in spans:
        tags[start:end] = [f"I-{type_}"] * (end - start)
        single = end - start == 1
        if scheme == "IOB2" or (scheme in ("IOBES", "BILOU") and not single):
            tags[start] = f"B-{type_}"
        if scheme == "IOB1" and ends.get(start) == type_:
            tags[start] = f"B-{type_}"  # B- only opens a chunk that touches one of its type
        if scheme == "IOE2" or (scheme == "IOBES" and not single):
            tags[end - 1] = f"E-{type_}"
        if scheme == "IOE1" and starts.get(end) == type_:
            tags[end - 1] = f"E-{type_}"  # E- only closes a chunk that touches one of its type
        if scheme == "BILOU":
            tags[end - 1] = f"{'U' if single else 'L'}-{type_}"
        if scheme == "IOBES" and single:
            tags[start] = f"S-{type_}"
    return tags


@st.composite
def _entities(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, int]]]:
    """A sentence length and the entities in it; entities may touch, of the same type or not."""
    pieces = draw(st.lists(st.tuples(st.sampled_from(["O", "PER", "ORG"]), st.integers(1, 3)), max_size=8))
    spans, position = [], 0
    for kind, length in pieces:
        if kind != "O":
            spans.append((kind, position, position + length))
        position += length
    return position, spans


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=150, deadline=None)
@given(drawn=_entities())
def test_valid_tags_read_back_as_the_entities_written(scheme, drawn):
    length, spans = drawn
    tags = _write(length, spans, scheme)
    assert extract_entities(tags, scheme) == spans
    assert extract_entities(tags, scheme, mode="strict") == spans


def test_written_schemes_are_the_textbook_ones():
    spans = [("PER", 0, 2), ("PER", 2, 3), ("ORG", 4, 5)]
    assert _write(5, spans, "IOB1") == ["I-PER", "I-PER", "B-PER", "O", "I-ORG"]
    assert _write(5, spans, "IOB2") == ["B-PER", "I-PER", "B-PER", "O", "B-ORG"]
    assert _write(5, spans, "IOE1") == ["I-PER", "E-PER", "I-PER", "O", "I-ORG"]
    assert _write(5, spans, "IOE2") == ["I-PER", "E-PER", "E-PER", "O", "E-ORG"]
    assert _write(5, spans, "IOBES") == ["B-PER", "E-PER", "S-PER", "O", "S-ORG"]
    assert _write(5, spans, "BILOU") == ["B-PER", "L-PER", "U-PER", "O", "U-ORG"]


# ---------------------------------------------------------------------------------------------
# Strict against default, and errors


def test_strict_iob2_needs_the_begin_tag():
    true, pred = [["B-ORG", "I-ORG", "O"]], [["I-ORG", "I-ORG", "O"]]
    assert metrics.entity_precision_recall_f1(true, pred)["f1"] == 1.0
    assert metrics.entity_precision_recall_f1(true, pred, mode="strict")["f1"] == 0.0


def test_iobes_without_its_begin_tag_is_an_entity_only_by_default():
    assert extract_entities(["I-PER", "E-PER"], "IOBES") == [("PER", 0, 2)]
    assert extract_entities(["I-PER", "E-PER"], "IOBES", mode="strict") == []
    assert extract_entities(["B-PER", "I-PER"], "BILOU") == [("PER", 0, 2)]
    assert extract_entities(["B-PER", "I-PER"], "BILOU", mode="strict") == []  # no L- closes it


@pytest.mark.parametrize(
    ("tag", "scheme"),
    [("E-PER", "IOB2"), ("B-PER", "IOE2"), ("S-PER", "BILOU"), ("L-PER", "IOBES"), ("PER", "IOB2"),
     ("O-PER", "IOB2"), ("BPER", "IOB2"), ("", "IOB2"), (None, "IOB2"), (3, "IOBES")],
)  # fmt: skip
def test_tags_the_scheme_does_not_write_are_refused(tag, scheme):
    for mode in ("default", "strict"):
        with pytest.raises(ValueError, match=f"tag {tag!r} is not valid in {scheme}; expected O, "):
            extract_entities(["O", tag], scheme, mode=mode)


def test_unknown_scheme_or_mode_is_refused():
    with pytest.raises(
        ValueError, match="scheme must be one of IOB1, IOB2, IOE1, IOE2, IOBES, BILOU; got 'BIO'"
    ):
        extract_entities(["O"], "BIO")
    with pytest.raises(ValueError, match="mode must be one of default, strict; got 'lenient'"):
        extract_entities(["O"], "IOB2", mode="lenient")


@pytest.mark.parametrize(
    ("tags", "scheme"),
    [(["O", "B-PER", "I-PER"], "IOB2"), (["I-PER", "O"], "IOB2"), (["I-LOC", "E-LOC"], "IOE2"),
     (["B-PER", "E-PER", "S-LOC", "O"], "IOBES"), (["S-LOC"], "IOBES"), (["U-LOC", "O"], "BILOU"),
     (["NOUN", "VERB"], None), (["O"], None), (["O", "B-PER", "PER"], None), (["B-PER", "S-X", "L-X"], None)],
)  # fmt: skip
def test_infer_scheme(tags, scheme):
    assert infer_scheme(tags) == scheme
