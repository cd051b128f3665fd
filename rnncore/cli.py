"""The `rnncore` command line (also `python -m rnncore`).

Exit codes: 0 success, 1 a parity check failed, 2 bad usage or bad input (argparse's
convention), 3 a backend's framework is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from . import __version__
from .batch import InputError
from .registry import BackendError, canonical_name
from .spec import ModelSpec, SpecError, json_schema
from .weights import WeightsError

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_BACKEND = 0, 1, 2, 3
DEFAULT_SPEC = "sentiment_bilstm.json"


def _load_spec(path: str | None, dtype: str | None) -> ModelSpec:
    if path is None:
        text = resources.files("rnncore").joinpath("examples", DEFAULT_SPEC).read_text(encoding="utf-8")
        spec = ModelSpec.from_json(text)
    else:
        if not Path(path).is_file():
            raise SpecError("spec", f"no such file: {path}")
        spec = ModelSpec.from_file(path)
    return spec.replace(dtype=dtype) if dtype else spec


def _backends(value: str) -> tuple[str, ...]:
    names = tuple(canonical_name(v.strip()) for v in value.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError("name at least one backend")
    return names


def cmd_parity(args: argparse.Namespace) -> int:
    from .parity import format_report, parity_report

    spec = _load_spec(args.spec, args.dtype)
    source = args.spec or f"bundled {DEFAULT_SPEC}"
    print(
        f"rnncore parity: {source} ({spec.encoder.cell}, {spec.encoder.num_layers} layer(s), "
        f"{'bi' if spec.encoder.bidirectional else 'uni'}directional, "
        f"pooling {spec.pooling}, {spec.dtype})"
    )
    print(
        f"batch {args.batch}, max length {args.max_len}, seed {args.seed}, "
        f"backends {', '.join(args.backends)}"
    )
    start = time.perf_counter()
    checks = parity_report(spec, args.backends, batch=args.batch, max_len=args.max_len, seed=args.seed)
    print(format_report(checks))
    ok = all(c.diff.ok for c in checks)
    print(f"{'all checks within tolerance' if ok else 'PARITY FAILED'} ({time.perf_counter() - start:.1f} s)")
    return EXIT_OK if ok else EXIT_MISMATCH


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    spec = _load_spec(args.spec, None)
    print(spec.to_json())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnncore",
        description="One recurrent-network spec, compiled to PyTorch and Keras, "
        "checked against a numpy oracle.",
    )
    parser.add_argument("--version", action="version", version=f"rnncore {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    parity = commands.add_parser(
        "parity",
        help="build a spec on every backend from the same weights and compare them with the oracle",
        description="Build SPEC on each backend from one set of weights, compare outputs with the numpy "
        "oracle and gradients between backends on random padded batches. Exit 0 when every check is "
        "within tolerance, 1 otherwise.",
    )
    parity.add_argument(
        "spec", nargs="?", help="spec file (.json/.yaml); default: the bundled BiLSTM classifier"
    )
    parity.add_argument("--dtype", choices=["float32", "float64"], help="override the spec's dtype")
    parity.add_argument("--batch", type=int, default=8, help="rows per batch (default 8)")
    parity.add_argument("--max-len", type=int, default=20, help="longest row; lengths are mixed (default 20)")
    parity.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default 0)")
    parity.add_argument(
        "--backends",
        type=_backends,
        default=("torch", "tensorflow"),
        help="comma-separated backends to compare (default torch,tensorflow)",
    )
    parity.set_defaults(run=cmd_parity)

    schema = commands.add_parser("schema", help="print the JSON Schema of spec files")
    schema.set_defaults(run=cmd_schema)

    validate = commands.add_parser("validate", help="check a spec file and print it in canonical form")
    validate.add_argument("spec", help="spec file (.json/.yaml)")
    validate.set_defaults(run=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "batch", 1) < 1 or getattr(args, "max_len", 1) < 1:
        parser.error("--batch and --max-len must be at least 1")
    try:
        return int(args.run(args))
    except (SpecError, WeightsError, InputError, OSError) as err:
        print(f"rnncore: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as err:
        print(f"rnncore: error: {err}", file=sys.stderr)
        return EXIT_BACKEND
