"""The framework-neutral model spec: one immutable, validated description of a recurrent network.

A spec reads left to right like the network it describes::

    input (tokens -> embedding, or real-valued features)
      -> encoder: num_layers x {rnn, lstm, gru}, optionally bidirectional and residual,
         dropout after every layer
      -> pooling: last | mean | max | attention | none
      -> head (optional): hidden Dense layers -> logits
         (tagging may add a linear-chain CRF over the per-step logits: `head.crf`)

Every object is frozen and checked when it is created; a bad value raises `SpecError`
naming the field, the value and what is allowed.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .jsonfile import parse_json, parse_yaml, read_document, yaml_module
from .limits import bounded, how_to_raise, limit

FORMAT = "rnncore.model/1"

INPUT_KINDS = ("tokens", "features")
CELLS = ("rnn", "lstm", "gru")
NONLINEARITIES = ("tanh", "relu")
POOLINGS = ("last", "mean", "max", "attention", "none")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "gelu")
TASKS = ("classification", "multilabel", "regression", "tagging")
DTYPES = ("float32", "float64")

# Number of stacked gate blocks in W_ih / W_hh for each cell.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


class SpecError(ValueError):
    """A spec value is missing, has the wrong type, or makes no sense with the others."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


def _fail(path: str, value: Any, allowed: str) -> SpecError:
    return SpecError(path, f"got {bounded(value)}; expected {allowed}")


def _check_int(path: str, value: Any, minimum: int, most: str | None = None) -> None:
    """An integer >= `minimum`, and at most the limit named `most` (see `rnncore.limits`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, value, f"an integer >= {minimum}")
    if most is not None and value > limit(most):
        message = f"got {bounded(value)}, above the limit of {limit(most):,}; {how_to_raise(most)}"
        raise SpecError(path, message)


def _check_choice(path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(path, value, "one of " + ", ".join(repr(c) for c in choices))


def _check_rate(path: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise _fail(path, value, "a number in [0, 1)")


@dataclass(frozen=True)
class InputSpec:
    """What the network reads: token ids (embedded) or real-valued feature vectors per step."""

    kind: str = "tokens"
    vocab_size: int | None = None
    embedding_dim: int | None = None
    padding_idx: int | None = 0
    feature_dim: int | None = None

    def __post_init__(self) -> None:
        _check_choice("input.kind", self.kind, INPUT_KINDS)
        if self.kind == "tokens":
            _check_int("input.vocab_size", self.vocab_size, 1, "MAX_VOCAB")
            _check_int("input.embedding_dim", self.embedding_dim, 1, "MAX_WIDTH")
            if self.padding_idx is not None:
                _check_int("input.padding_idx", self.padding_idx, 0)
                assert self.vocab_size is not None
                if self.padding_idx >= self.vocab_size:
                    raise _fail(
                        "input.padding_idx",
                        self.padding_idx,
                        f"null or an id < vocab_size ({self.vocab_size})",
                    )
            if self.feature_dim is not None:
                raise SpecError("input.feature_dim", "only allowed with kind 'features'; remove it")
        else:
            _check_int("input.feature_dim", self.feature_dim, 1, "MAX_WIDTH")
            for name in ("vocab_size", "embedding_dim"):
                if getattr(self, name) is not None:
                    raise SpecError(f"input.{name}", "only allowed with kind 'tokens'; remove it")
            # padding_idx has a default for the tokens case; for features it means nothing.
            object.__setattr__(self, "padding_idx", None)

    @property
    def size(self) -> int:
        """Width of one step as the first encoder layer sees it."""
        size = self.embedding_dim if self.kind == "tokens" else self.feature_dim
        assert size is not None
        return size

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "tokens":
            return {
                "kind": "tokens",
                "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx,
            }
        return {"kind": "features", "feature_dim": self.feature_dim}


@dataclass(frozen=True)
class EncoderSpec:
    """A stack of recurrent layers; `dropout` is applied to every layer's output during training."""

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    residual: bool = False
    dropout: float = 0.0
    nonlinearity: str = "tanh"

    def __post_init__(self) -> None:
        _check_choice("encoder.cell", self.cell, CELLS)
        _check_int("encoder.hidden_size", self.hidden_size, 1, "MAX_WIDTH")
        _check_int("encoder.num_layers", self.num_layers, 1, "MAX_LAYERS")
        for name in ("bidirectional", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(f"encoder.{name}", getattr(self, name), "true or false")
        _check_rate("encoder.dropout", self.dropout)
        _check_choice("encoder.nonlinearity", self.nonlinearity, NONLINEARITIES)
        if self.cell != "rnn" and self.nonlinearity != "tanh":
            raise SpecError(
                "encoder.nonlinearity",
                f"{self.nonlinearity!r} is only for cell 'rnn'; {self.cell} cells use fixed activations",
            )

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class HeadSpec:
    """Dense layers on the pooled (or per-step) features, ending in `num_outputs` logits."""

    num_outputs: int = 2
    task: str = "classification"
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    negative_slope: float = 0.01
    dropout: float = 0.0
    # A linear-chain CRF over the per-step logits (tagging only): the logits become emission
    # scores, training maximises the tag path's likelihood and prediction is Viterbi decoding.
    crf: bool = False

    def __post_init__(self) -> None:
        _check_int("head.num_outputs", self.num_outputs, 1, "MAX_WIDTH")
        _check_choice("head.task", self.task, TASKS)
        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, (list, tuple)):
            raise _fail("head.hidden", self.hidden, "a list of layer widths, e.g. [128]")
        _check_int("head.hidden (its length)", len(self.hidden), 0, "MAX_LAYERS")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for i, width in enumerate(self.hidden):
            _check_int(f"head.hidden[{i}]", width, 1, "MAX_WIDTH")
        _check_choice("head.activation", self.activation, ACTIVATIONS)
        slope = self.negative_slope
        # `not slope >= 0` also refuses NaN; inf would turn every negative input into -inf
        if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0 <= slope < math.inf:
            raise _fail("head.negative_slope", slope, "a finite number >= 0")
        object.__setattr__(self, "negative_slope", float(slope))
        _check_rate("head.dropout", self.dropout)
        if not isinstance(self.crf, bool):
            raise _fail("head.crf", self.crf, "true or false")
        if self.crf and self.task != "tagging":
            raise SpecError(
                "head.crf",
                f"a CRF scores a tag for every step; it needs task 'tagging' (with pooling 'none'), "
                f"not {self.task!r}",
            )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hidden": list(self.hidden),
            "activation": self.activation,
            "negative_slope": self.negative_slope,
            "dropout": self.dropout,
            "num_outputs": self.num_outputs,
            "task": self.task,
        }
        if self.crf:  # written only when on: a spec without a CRF reads as it always did
            out["crf"] = True
        return out


def _sub_spec(cls: Any, path: str, value: Any) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise _fail(path, value, "an object")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known, key=str)  # YAML keys may be numbers: sort mixed types
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(known))}")
    return cls(**value)


@dataclass(frozen=True)
class ModelSpec:
    """A whole model. Build one from keyword arguments, a dict, or a JSON/YAML file.

    Example:
        >>> spec = ModelSpec.from_dict({
        ...     "input": {"kind": "tokens", "vocab_size": 100, "embedding_dim": 8},
        ...     "encoder": {"cell": "gru", "hidden_size": 16},
        ...     "pooling": "mean",
        ...     "head": {"num_outputs": 3}})
        >>> spec.encoder.output_size
        16
    """

    input: InputSpec = field(default_factory=lambda: InputSpec(vocab_size=1000, embedding_dim=64))
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    pooling: str = "last"
    head: HeadSpec | None = field(default_factory=HeadSpec)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", _sub_spec(InputSpec, "input", self.input))
        object.__setattr__(self, "encoder", _sub_spec(EncoderSpec, "encoder", self.encoder))
        if self.head is not None:
            object.__setattr__(self, "head", _sub_spec(HeadSpec, "head", self.head))
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("dtype", self.dtype, DTYPES)
        self._check_combination()
        self._check_size()

    def _check_size(self) -> None:
        """Refuse a model too big to build before anything allocates it: each dimension is
        bounded on its own, but their products (a vocabulary times an embedding, 1000 layers of
        width 65536) can still ask for terabytes."""
        count, most = self.parameter_count, limit("MAX_PARAMETERS")
        if count > most:
            gigabytes = count * np.dtype(self.dtype).itemsize / 1e9
            raise SpecError(
                "spec",
                f"the model has {count:,} parameters ({gigabytes:,.1f} GB of weights), above the "
                f"limit of {most:,}; make it smaller, or " + how_to_raise("MAX_PARAMETERS"),
            )

    @property
    def parameter_count(self) -> int:
        """How many numbers the weights hold (`rnncore.weights.canonical_shapes`, summed)."""
        enc = self.encoder
        gh = enc.gates * enc.hidden_size
        biases = 2 if enc.cell == "gru" else 1
        count = 0
        if self.input.kind == "tokens":
            assert self.input.vocab_size is not None and self.input.embedding_dim is not None
            count += self.input.vocab_size * self.input.embedding_dim
        for in_size in self.layer_input_sizes:
            count += enc.num_directions * gh * (in_size + enc.hidden_size + biases)
        if self.pooling == "attention":
            count += self.features_size
        if self.head is not None:
            widths = [self.features_size, *self.head.hidden, self.head.num_outputs]
            count += sum((n_in + 1) * n_out for n_in, n_out in itertools.pairwise(widths))
        return count

    def _check_combination(self) -> None:
        tagging = self.head is not None and self.head.task == "tagging"
        if tagging and self.pooling != "none":
            raise SpecError(
                "pooling",
                f"task 'tagging' labels every step, so pooling must be 'none', not {self.pooling!r}",
            )
        if self.pooling == "none" and self.head is not None and not tagging:
            raise SpecError(
                "head.task",
                f"pooling 'none' keeps one output per step; task {self.head.task!r} needs one per "
                "sequence: use task 'tagging' or choose a pooling",
            )
        enc = self.encoder
        if enc.residual and not any(self.residual_layers):
            raise SpecError(
                "encoder.residual",
                f"a residual needs a layer whose input size equals its output size; the only layer reads "
                f"{self.input.size} and writes {enc.output_size}: set embedding/feature size to "
                f"{enc.output_size}, add layers, or turn residual off",
            )

    @property
    def layer_input_sizes(self) -> tuple[int, ...]:
        """Input width of each encoder layer."""
        first = self.input.size
        return (first,) + (self.encoder.output_size,) * (self.encoder.num_layers - 1)

    @property
    def residual_layers(self) -> tuple[bool, ...]:
        """Which encoder layers add their input to their output (residual on and sizes match)."""
        out = self.encoder.output_size
        return tuple(self.encoder.residual and size == out for size in self.layer_input_sizes)

    @property
    def features_size(self) -> int:
        """Width of what the encoder + pooling hands to the head."""
        return self.encoder.output_size

    @property
    def per_step_output(self) -> bool:
        return self.pooling == "none"

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "input": self.input.to_dict(),
            "encoder": self.encoder.to_dict(),
            "pooling": self.pooling,
            "head": None if self.head is None else self.head.to_dict(),
            "dtype": self.dtype,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        if not isinstance(data, Mapping):
            raise _fail("spec", data, "an object with input, encoder, pooling, head, dtype")
        data = dict(data)
        fmt = data.pop("format", FORMAT)
        if fmt != FORMAT:
            raise _fail("format", fmt, f"{FORMAT!r} (this version of rnncore reads only that format)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)  # YAML keys may be numbers: sort mixed types
        if unknown:
            raise SpecError(str(unknown[0]), f"unknown field; allowed: format, {', '.join(sorted(known))}")
        for required in ("input", "encoder"):
            if required not in data:
                raise SpecError(required, "missing; every spec names its input and its encoder")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls.from_dict(parse_json(text, lambda message: SpecError("spec", message), "the spec"))

    @classmethod
    def from_file(cls, path: str | Path) -> ModelSpec:
        """Read a spec from a `.json`, `.yaml` or `.yml` file."""
        path = Path(path)

        def fail(message: str) -> SpecError:
            return SpecError("spec", message)

        text = read_document(path, fail)
        if path.suffix.lower() in (".yaml", ".yml"):
            return cls.from_dict(parse_yaml(text, fail, str(path)))
        return cls.from_dict(parse_json(text, fail, str(path)))

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON, or YAML when the file name ends in .yaml/.yml."""
        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            text = yaml_module().safe_dump(self.to_dict(), sort_keys=False)
        else:
            text = self.to_json() + "\n"
        path.write_text(text, encoding="utf-8")

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with some top-level fields changed (sub-specs may be given as dicts)."""
        data = self.to_dict()
        data.update(changes)
        return ModelSpec.from_dict(data)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a `rnncore.model/1` spec file."""

    def enum(values: tuple[str, ...]) -> dict[str, Any]:
        return {"enum": list(values)}

    positive = {"type": "integer", "minimum": 1}
    rate = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
    tokens = {
        "type": "object",
        "properties": {
            "kind": {"const": "tokens"},
            "vocab_size": positive,
            "embedding_dim": positive,
            "padding_idx": {"type": ["integer", "null"], "minimum": 0},
        },
        "required": ["kind", "vocab_size", "embedding_dim"],
        "additionalProperties": False,
    }
    features = {
        "type": "object",
        "properties": {"kind": {"const": "features"}, "feature_dim": positive},
        "required": ["kind", "feature_dim"],
        "additionalProperties": False,
    }
    encoder = {
        "type": "object",
        "properties": {
            "cell": enum(CELLS),
            "hidden_size": positive,
            "num_layers": positive,
            "bidirectional": {"type": "boolean"},
            "residual": {"type": "boolean"},
            "dropout": rate,
            "nonlinearity": enum(NONLINEARITIES),
        },
        "additionalProperties": False,
    }
    head = {
        "type": "object",
        "properties": {
            "hidden": {"type": "array", "items": positive},
            "activation": enum(ACTIVATIONS),
            "negative_slope": {"type": "number", "minimum": 0},
            "dropout": rate,
            "num_outputs": positive,
            "task": enum(TASKS),
            "crf": {"type": "boolean"},
        },
        "additionalProperties": False,
        # a CRF only over per-step tags
        "if": {"properties": {"crf": {"const": True}}, "required": ["crf"]},
        "then": {"properties": {"task": {"const": "tagging"}}, "required": ["task"]},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://rnncore.dev/schema/rnncore.model-1.json",
        "title": "rnncore model spec",
        "type": "object",
        "properties": {
            "format": {"const": FORMAT},
            "input": {"oneOf": [tokens, features]},
            "encoder": encoder,
            "pooling": enum(POOLINGS),
            "head": {"oneOf": [{"type": "null"}, head]},
            "dtype": enum(DTYPES),
        },
        "required": ["input", "encoder"],
        "additionalProperties": False,
    }
