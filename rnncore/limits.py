"""Budgets checked before work: every size rnncore refuses to exceed, named in one place.

A small hostile file must not make rnncore work for minutes or take gigabytes: a 187-byte
spec with ``num_layers: 300000000``, a 470-byte YAML "billion laughs", a 1 MB ``.csv.gz``
that inflates to a 1 GB line. So each reader compares the sizes it is told against these
limits *before* it allocates or expands anything, and refuses with a message that names the
value, the limit and how to raise it.

Every limit can be raised (or lowered) for one process with an environment variable,
``RNNCORE_LIMIT_<NAME>`` (e.g. ``RNNCORE_LIMIT_MAX_PARAMETERS=2000000000``), for the user
whose real model or data needs more. The defaults are far above anything the bundled tasks
use and far below what would exhaust a laptop. `docs/reliability.md` lists them.
"""

from __future__ import annotations

import os
import reprlib
from typing import Any

ENV_PREFIX = "RNNCORE_LIMIT_"

DEFAULTS: dict[str, int] = {
    # spec dimensions: a width beyond 2**16 or 1000 stacked layers is no recurrent network we serve
    "MAX_WIDTH": 1 << 16,  # hidden_size, embedding_dim, feature_dim, head widths, num_outputs
    "MAX_LAYERS": 1000,  # encoder.num_layers, and head.hidden layers
    "MAX_VOCAB": 10_000_000,  # input.vocab_size, and the largest id a tokenizer may hold
    "MAX_PARAMETERS": 500_000_000,  # 2 GB of float32 weights, 4 GB in float64
    # documents rnncore reads whole (specs, configs, run info, tokenizer files)
    "MAX_DOCUMENT_BYTES": 64 << 20,
    "MAX_NESTING": 64,  # JSON/YAML depth; a spec is 3 deep
    # data files
    "MAX_DECOMPRESSED_BYTES": 4 << 30,  # what a .gz/.bz2/.xz file may inflate to, at most
    "MAX_COMPRESSION_RATIO": 100,  # ... and at most this many times its own size (text: 3-10x)
    "MIN_DECOMPRESSED_ALLOWANCE": 64 << 20,  # a small file may always inflate this far
    "MAX_LINE_CHARS": 4 << 20,  # one JSONL line, one CSV field, one CoNLL line
    # weights files
    "MAX_TENSORS": 100_000,  # tensors in one safetensors file (a 1000-layer BiGRU has 8000)
    "MAX_SAFETENSORS_HEADER_BYTES": 16 << 20,
    # tokenizers: a regular expression whose repeated group repeats again can backtrack for
    # minutes on a short text (see `rnncore.tokenizer_checks`)
    "MAX_REGEX_STAR_HEIGHT": 1,
}


class LimitError(ValueError):
    """A size is beyond one of rnncore's budgets; the message names it and how to raise it."""


def limit(name: str) -> int:
    """The limit `name` (a key of `DEFAULTS`), from ``RNNCORE_LIMIT_<NAME>`` when that is set."""
    default = DEFAULTS[name]
    raw = os.environ.get(ENV_PREFIX + name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        message = f"{ENV_PREFIX}{name}={bounded(raw)} is not an integer; unset it or give one"
        raise LimitError(message) from None
    if value < 1:
        raise LimitError(f"{ENV_PREFIX}{name}={value}; a limit must be at least 1")
    return value


def how_to_raise(name: str) -> str:
    return f"set {ENV_PREFIX}{name} to raise the limit ({DEFAULTS[name]:,} by default) if this is intended"


def check(name: str, value: int, what: str) -> None:
    """Raise LimitError when `value` exceeds limit `name`; `what` says what was measured."""
    most = limit(name)
    if value > most:
        raise LimitError(f"{what} is {value:,}, above the limit of {most:,}; {how_to_raise(name)}")


_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def bounded(value: Any) -> str:
    """`repr(value)` cut to about 80 characters, so an error message never grows with its input."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        # str() of a huge int is slow, and refused past 4300 digits
        return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    return _REPR.repr(value)
