"""Writes docs/spec-reference.md from the spec's JSON Schema (`rnncore.json_schema()`).

Run from the repository root: python docs/scripts/spec_reference.py [--check]
With --check it writes nothing and exits 1 if the page is not what the schema gives
(tests/test_docs.py runs that, so the page cannot drift from the schema).

Types, allowed values and which fields are required come from the schema; defaults from a spec
built with only the required fields; the one-line meanings from MEANINGS below, and the script
refuses a schema field without one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import rnncore

PAGE = Path(__file__).resolve().parents[1] / "spec-reference.md"

MEANINGS = {
    "format": "the format and its version; always this value",
    "input": "what a time step is: a token id through an embedding, or a vector of real-valued features",
    "input.kind": "`tokens` or `features`",
    "input.vocab_size": "number of token ids (rows of the embedding)",
    "input.embedding_dim": "width of the embedding",
    "input.padding_idx": "the id used for padding; its embedding row starts at zero; `null`: no padding id",
    "input.feature_dim": "width of each step's feature vector",
    "encoder": "the recurrent layers",
    "encoder.cell": "Elman RNN, LSTM or GRU (reset-after form)",
    "encoder.hidden_size": "units per direction per layer",
    "encoder.num_layers": "stacked layers",
    "encoder.bidirectional": "each layer also runs backward; the two directions are concatenated",
    "encoder.residual": "a layer adds its input to its output where the sizes match",
    "encoder.dropout": "dropout after every layer in training (never the frameworks' own RNN "
    "dropout arguments, whose semantics differ)",
    "encoder.nonlinearity": "the RNN cell's activation (ignored by LSTM and GRU)",
    "pooling": "`last`: forward half at the last valid step, backward half at step 0; "
    "`mean`/`max`/`attention` over valid steps only; `none`: one output per step (tagging)",
    "head": "Dense layers to the outputs; omitted: a head with the defaults below; `null`: no head, "
    "the model outputs the pooled features",
    "head.hidden": "widths of the hidden Dense layers, in order",
    "head.activation": "activation of the hidden layers (`gelu` is the exact form)",
    "head.negative_slope": "slope of `leaky_relu` below zero",
    "head.dropout": "dropout after each hidden layer's activation, in training",
    "head.num_outputs": "logits per example (or per step for tagging)",
    "head.crf": "tagging only: a linear-chain CRF over the per-step tag scores (transition, start and "
    "end scores; negative log-likelihood loss, Viterbi decoding)",
    "head.task": "how the logits are read: softmax classes, independent sigmoids, real values, "
    "or a tag per step",
    "dtype": "compute dtype of both backends and of the oracle",
}

REQUIRED_ONLY = {
    "tokens": {"input": {"kind": "tokens", "vocab_size": 10, "embedding_dim": 4}, "encoder": {}},
    "features": {"input": {"kind": "features", "feature_dim": 3}, "encoder": {}},
}


def allowed(schema: dict[str, Any]) -> str:
    """The values a field takes, in words, from its schema."""
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return ", ".join(f"`{v}`" for v in schema["enum"])
    if "oneOf" in schema:
        options = [allowed(s) for s in schema["oneOf"]]
        return " or ".join(dict.fromkeys(options))  # two object kinds read "object (below)" once
    kind = schema.get("type")
    words = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if kind == "array":
        words = f"list of {allowed(schema['items'])}"
    if kind == "object":
        return "object (below)"
    bounds = []
    if "minimum" in schema:
        bounds.append(f">= {schema['minimum']}")
    if "exclusiveMaximum" in schema:
        bounds.append(f"< {schema['exclusiveMaximum']}")
    return words + (" " + ", ".join(bounds) if bounds else "")


def default_of(path: str) -> str:
    """The value a spec built from the required fields only has at `path`, or '' where there is none."""
    for example in REQUIRED_ONLY.values():
        given = example
        for part in path.split("."):
            given = given.get(part, {}) if isinstance(given, dict) else {}
        if given != {} or path == "head":
            continue  # set in the example (required), or an object whose fields have their own rows
        built: Any = rnncore.ModelSpec.from_dict(example).to_dict()
        for part in path.split("."):
            if not isinstance(built, dict) or part not in built:
                built = None
                break
            built = built[part]
        if built is not None and not isinstance(built, dict):
            return f"`{json.dumps(built)}`"
    return ""


def rows(prefix: str, schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    lines = []
    for name, field in schema["properties"].items():
        path = f"{prefix}{name}"
        if path not in MEANINGS:
            raise SystemExit(f"{path}: in the schema but not in MEANINGS; add its meaning to {__file__}")
        need = "yes" if name in required else ""
        lines.append(f"| `{path}` | {allowed(field)} | {need} | {default_of(path)} | {MEANINGS[path]} |")
    return lines


def objects(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(title, field prefix, object schema) for each object the spec holds."""
    found = []
    for name, field in schema["properties"].items():
        for option in field.get("oneOf", [field]):
            if option.get("type") == "object":
                kind = option["properties"].get("kind", {}).get("const")
                title = f"`{name}`" + (f" with `kind: {kind}`" if kind else "")
                found.append((title, f"{name}.", option))
    return found


def page() -> str:
    schema = rnncore.json_schema()
    header = "| field | type and allowed values | required | default | meaning |\n|---|---|---|---|---|"
    parts = [
        "# Spec fields",
        "",
        "<!-- generated by docs/scripts/spec_reference.py from rnncore.json_schema(); do not edit -->",
        "",
        f"Every field of a `{rnncore.FORMAT}` spec file, generated from the JSON Schema that",
        "`rnncore schema` prints. Defaults are what a spec written with only the required fields",
        "gets. Unknown fields are refused. [The spec](spec.md) explains the model the fields describe.",
        "",
        "## Top level",
        "",
        header,
        *rows("", schema),
    ]
    for title, prefix, option in objects(schema):
        parts += ["", f"## {title}", "", header, *rows(prefix, option)]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    text = page()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is out of date: run python docs/scripts/spec_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
