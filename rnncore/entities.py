"""Entity spans of tag sequences, in the six tagging schemes and both modes of seqeval.

Two readings of a tag sequence are in use, and scores differ between them:

- **default** (conlleval's, and seqeval's default mode): chunks are found by the rules of
  the CoNLL `conlleval` script, which look only at prefixes and types and repair invalid
  sequences. `I-PER I-PER` after `O` is a PER entity even in IOB2, and `I-PER E-PER` is
  one in IOBES. The rules are the same for every scheme; the scheme only says which
  prefixes may occur. conlleval's rules cover B, I and E; seqeval's port adds S (a chunk
  of one), and BILOU's L and U are read as E and S.
- **strict** (seqeval's `mode="strict"`): an entity must start with its scheme's begin tag
  and, in schemes with an end tag, close with it; anything else belongs to no entity. So
  `I-ORG I-ORG` is no entity in strict IOB2, and `B-PER I-PER` without `E-PER` none in
  strict IOBES. The rules are seqeval's tables (`seqeval.scheme`), ported as data, with one
  correction: seqeval's IOE1 never starts an entity at `E-X` (its own source marks the
  case as unhandled), so it drops the single-token entity of valid IOE1 such as
  `O E-X I-X`; here IOE1 starts entities where IOE2 does, which reads valid IOE1 fully.

Tags are `PREFIX-TYPE` (`B-PER`) or `O`; a bare prefix (`B`) has type `_` as in seqeval.
A tag of another shape, or a prefix the scheme does not use, is an error: a sequence is
never silently read as holding no entity.

    >>> extract_entities(["I-PER", "E-PER", "O"], "IOBES")
    [('PER', 0, 2)]
    >>> extract_entities(["I-PER", "E-PER", "O"], "IOBES", mode="strict")
    []
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")
MODES = ("default", "strict")

# The prefixes each scheme writes, O included.
PREFIXES = {"IOB1": "BIO", "IOB2": "BIO", "IOE1": "IEO", "IOE2": "IEO", "IOBES": "BIESO", "BILOU": "BILUO"}

Span = tuple[str, int, int]


# ---------------------------------------------------------------------------------------------
# Tags


def parse_tag(tag: Any, scheme: str) -> tuple[str, str]:
    """(prefix, type) of one tag: ("B", "PER") for "B-PER", ("O", "") for "O".

    Raises:
        ValueError: the tag is not a string of the form O, P or P-TYPE with P a prefix of
            `scheme`.
    """
    allowed = PREFIXES[scheme]
    if isinstance(tag, str) and tag == "O":
        return "O", ""
    if (
        not isinstance(tag, str)
        or not tag
        or tag[0] not in allowed.replace("O", "")
        or (len(tag) > 1 and tag[1] != "-")
    ):
        expected = " or ".join(f"{p}-TYPE" for p in allowed if p != "O")
        raise ValueError(f"tag {tag!r} is not valid in {scheme}; expected O, {expected}")
    return tag[0], tag[2:] or "_"


def check_scheme(scheme: str, mode: str = "default") -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")


def infer_scheme(tags: Iterable[str]) -> str | None:
    """The scheme a tag inventory is written in, or None if the tags are not entity tags.

    Prefixes B and I give IOB2, I and E give IOE2, any of S/E beside B give IOBES, any of
    L/U give BILOU. IOB1 and IOE1 use the same prefixes as IOB2 and IOE2 and read the
    same in default mode; name them explicitly for strict mode.

        >>> infer_scheme(["O", "B-PER", "I-PER"])
        'IOB2'
        >>> infer_scheme(["NOUN", "VERB"]) is None
        True
    """
    prefixes = set()
    for tag in tags:
        if tag == "O":
            continue
        if not isinstance(tag, str) or len(tag) < 3 or tag[1] != "-" or tag[0] not in "BIESLU":
            return None
        prefixes.add(tag[0])
    if not prefixes:
        return None
    for scheme in ("IOB2", "IOE2", "IOBES", "BILOU"):
        if prefixes <= set(PREFIXES[scheme]):
            return scheme
    return None


# ---------------------------------------------------------------------------------------------
# Spans


def extract_entities(tags: Iterable[str], scheme: str = "IOB2", mode: str = "default") -> list[Span]:
    """The entity spans of one tag sequence.

    Args:
        tags: tag strings such as "B-PER", "I-PER", "O".
        scheme: one of SCHEMES: which prefixes may occur, and in strict mode how they chain.
        mode: "default" (conlleval's rules, as seqeval's default mode) or "strict" (seqeval's
            `mode="strict"`); see the module docstring.

    Returns:
        (type, start, end) per entity in order, end exclusive: tags[start:end] is the entity.

    Example:
        >>> extract_entities(["B-PER", "I-PER", "O", "I-LOC"])
        [('PER', 0, 2), ('LOC', 3, 4)]
        >>> extract_entities(["B-PER", "I-PER", "O", "I-LOC"], mode="strict")
        [('PER', 0, 2)]
    """
    check_scheme(scheme, mode)
    parsed = [parse_tag(tag, scheme) for tag in tags]
    if mode == "strict":
        return _strict_spans(parsed, _STRICT[scheme])
    return _conlleval_spans([(_AS_CONLLEVAL.get(prefix, prefix), type_) for prefix, type_ in parsed])


# The chunk rules know B, I, E and S; BILOU's last and unit tags play E's and S's parts.
_AS_CONLLEVAL = {"L": "E", "U": "S"}


def _conlleval_spans(parsed: list[tuple[str, str]]) -> list[Span]:
    spans = []
    prev_prefix, prev_type, start = "O", "", 0
    for i, (prefix, type_) in enumerate([*parsed, ("O", "")]):
        if _chunk_ends(prev_prefix, prefix, prev_type, type_):
            spans.append((prev_type, start, i))
        if _chunk_starts(prev_prefix, prefix, prev_type, type_):
            start = i
        prev_prefix, prev_type = prefix, type_
    return spans


def _chunk_ends(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's endOfChunk (with seqeval's S): did a chunk end on the previous tag?"""
    if prev == "O":
        return False
    return prev in "ES" or (prev in "BI" and tag in "BSO") or prev_type != type_


def _chunk_starts(prev: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's startOfChunk (with seqeval's S): does a chunk start on this tag?"""
    if tag == "O":
        return False
    return tag in "BS" or (prev in "ESO" and tag in "EI") or prev_type != type_


# ---------------------------------------------------------------------------------------------
# Strict mode: seqeval's pattern tables
#
# A pattern (previous prefixes, current prefixes, types) matches a pair of neighbouring tags
# when the previous tag's prefix is in the first string, the current one's in the second,
# and their types are the same ("same"), different ("diff") or either ("any"). An entity
# starts on a tag matching a start pattern, takes following tags while they match an
# inside pattern, and is kept if the tag after it matches an end pattern (a final O is
# appended to every sequence). Copied from seqeval 1.2.2 `seqeval/scheme.py`.

Pattern = tuple[str, str, str]
ANY = "BIOESLU"

_IOE_START = (("O", "IE", "any"), ("E", "IE", "any"), ("I", "IE", "diff"))
_STRICT: dict[str, dict[str, tuple[Pattern, ...]]] = {
    "IOB1": {
        "start": (("O", "I", "any"), ("I", "I", "diff"), ("B", "I", "any"), ("IB", "B", "same")),
        "inside": (("BI", "I", "same"),),
        "end": (
            ("I", "I", "diff"),
            ("I", "OB", "any"),
            ("B", "O", "any"),
            ("B", "I", "diff"),
            ("B", "B", "same"),
        ),
    },
    "IOB2": {
        "start": ((ANY, "B", "any"),),
        "inside": (("BI", "I", "same"),),
        "end": (("IB", "OB", "any"), ("IB", "I", "diff")),
    },
    "IOE1": {
        "start": _IOE_START,  # seqeval: (O, I), (I, I, diff), (E, I), (E, E, same); see above
        "inside": (("I", "IE", "same"),),
        "end": (("I", "I", "diff"), ("I", "O", "any"), ("I", "E", "diff"), ("E", "IE", "same")),
    },
    "IOE2": {
        "start": _IOE_START,
        "inside": (("I", "IE", "same"),),
        "end": (("E", ANY, "any"),),
    },
    "IOBES": {
        "start": ((ANY, "BS", "any"),),
        "inside": (("BI", "IE", "same"),),
        "end": (("SE", ANY, "any"),),
    },
    "BILOU": {
        "start": ((ANY, "BU", "any"),),
        "inside": (("BI", "IL", "same"),),
        "end": (("UL", ANY, "any"),),
    },
}


def _matches(patterns: tuple[Pattern, ...], prev: tuple[str, str], tag: tuple[str, str]) -> bool:
    return any(
        prev[0] in prev_prefixes
        and tag[0] in prefixes
        and (types == "any" or (types == "same") == (prev[1] == tag[1]))
        for prev_prefixes, prefixes, types in patterns
    )


def _strict_spans(parsed: list[tuple[str, str]], rules: dict[str, tuple[Pattern, ...]]) -> list[Span]:
    tags = [*parsed, ("O", "")]
    spans = []
    prev, i = ("O", ""), 0
    while i < len(tags):
        if _matches(rules["start"], prev, tags[i]):
            end = i + 1
            while _matches(rules["inside"], tags[end - 1], tags[end]):
                end += 1  # stops at the final O at the latest: no inside pattern takes O
            if _matches(rules["end"], tags[end - 1], tags[end]):
                spans.append((tags[i][1], i, end))
            i = end
        else:
            i += 1
        prev = tags[i - 1]
    return spans
