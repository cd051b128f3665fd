"""Small real datasets shipped inside rnncore, loadable without a download.

=================  ======================================================  =================
name               contents                                                returns
=================  ======================================================  =================
rotten_tomatoes    12,808 Rotten Tomatoes critic snippets, fresh / rotten  TextDataset
digits             1,797 8x8 handwritten digits, rows as 8 steps of 8      SequenceDataset
brown_pos          4,623 Brown corpus news sentences, original Brown tags  TaggedDataset
ner_iob2           500 Japanese sentences, IOB2 named entities             TaggedDataset
=================  ======================================================  =================

Where each file comes from, its licence and what was dropped: ``bundled/SOURCES.md``.
Each file is checked against the sha256 below when it is loaded, so an edited or damaged
copy is refused rather than silently trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

from ._files import DataError
from .containers import SequenceDataset, TaggedDataset, TextDataset
from .readers import read_conll, read_table
from .sequences import read_npz

BUNDLED_DIR = Path(__file__).with_name("bundled")


@dataclass(frozen=True)
class Bundled:
    """One shipped file: its name, sha256 and how many examples it holds."""

    file: str
    sha256: str
    examples: int


BUNDLED: dict[str, Bundled] = {
    "rotten_tomatoes": Bundled(
        "rotten_tomatoes.csv.gz", "93bc82f24f4ec72e78f17b024a0821efa8972ac1803cd321c6fc386a6e8573a9", 12808
    ),
    "digits": Bundled("digits.npz", "ac4c88e3aac26bb6198e8af3f784cd0be54513e08c5ce4ec60bfe3ee32931f58", 1797),
    "brown_pos": Bundled(
        "brown_pos.conll.gz", "0f4c2b22bbd946b64da21863b5600ba5fd8f761790bb4d7343f9cc1135c63380", 4623
    ),
    "ner_iob2": Bundled(
        "ner_iob2.conll.gz", "f41df778089984c146dc2b06f464e85c6e59f723e36c39bb33b2cb7656782d64", 500
    ),
}


def bundled_path(name: str, verify: bool = True) -> Path:
    """Path of a bundled data file, e.g. to read it with another reader; checks its sha256 by default."""
    if name not in BUNDLED:
        raise DataError(f"no bundled dataset {name!r}; choose one of {', '.join(sorted(BUNDLED))}")
    entry = BUNDLED[name]
    path = BUNDLED_DIR / entry.file
    if not path.is_file():
        raise DataError("bundled file is missing; reinstall rnncore (its wheel ships data/bundled/)", path)
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry.sha256:
            raise DataError(
                f"sha256 is {digest}, expected {entry.sha256}: the file was changed or damaged; reinstall "
                "rnncore, or if the change is meant, rebuild it with rnncore.data._make_bundled and update "
                "BUNDLED and bundled/SOURCES.md",
                path,
            )
    return path


@overload
def load_bundled(name: Literal["rotten_tomatoes"]) -> TextDataset: ...
@overload
def load_bundled(name: Literal["digits"]) -> SequenceDataset: ...
@overload
def load_bundled(name: Literal["brown_pos", "ner_iob2"]) -> TaggedDataset: ...
@overload
def load_bundled(name: str) -> TextDataset | TaggedDataset | SequenceDataset: ...
def load_bundled(name: str) -> TextDataset | TaggedDataset | SequenceDataset:
    """Load one of the bundled datasets (see the module docstring), in file order.

    Split it with `split(len(ds), seed=...)` and `ds.subset(indices)`. The digits come back
    as float32 pixels scaled from 0..16 to [0, 1], each image read as 8 rows of 8 features.

    Example:
        >>> ds = load_bundled("rotten_tomatoes")
        >>> len(ds), sorted(set(ds.labels))
        (12808, ['fresh', 'rotten'])
    """
    path = bundled_path(name)
    if name == "rotten_tomatoes":
        return read_table(path, "text", "label")
    if name == "digits":
        raw = read_npz(path)
        return SequenceDataset(raw.x / 16.0, raw.y, raw.lengths)
    # brown_pos: word<TAB>tag; ner_iob2: token<TAB>...<TAB>IOB2 tag (10 or 12 columns, tag last).
    return read_conll(path, token_column=0, tag_column=-1)
