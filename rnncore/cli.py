"""The `rnncore` command line (also `python -m rnncore`).

Exit codes: 0 success, 1 a check failed (parity, an export's check, a training loss that
became NaN or infinite), 2 bad usage or bad input (argparse's convention), 3 a backend's
framework is missing, 70 a bug in rnncore (one line, the traceback filed: `rnncore.boundary`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__
from .batch import InputError
from .boundary import json_text, print_error, report_unexpected
from .clioutput import progress_mode, quiet_framework_logs, show_warning, wrote
from .device import Device, DeviceError, describe, device_for, parse_device
from .entities import SCHEMES
from .memory import keep_freed_memory
from .registry import EXPORT_FORMATS, BackendError, canonical_name, expect_one_framework
from .spec import ModelSpec, SpecError, json_schema
from .train.distributed import DEFAULT_TIMEOUT_S
from .weights import WeightsError
from .wording import cli_wording

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_BACKEND = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
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


def _device(value: str) -> Device:
    try:
        return parse_device(value)
    except DeviceError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_device_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--device", type=_device, default=Device("auto"),
                         help="auto (a GPU when the framework sees one, else the CPU), cpu, cuda or "
                         "cuda:N (default auto)")  # fmt: skip


def _placed(backend: str, requested: Device) -> tuple[Device, str]:
    """(the device `backend` runs on for `requested`, how to say so); cuda without a GPU raises."""
    from .registry import get_backend

    module = get_backend(backend)
    placed = device_for(module, requested)
    assert placed is not None
    return placed, describe(requested, placed, module.FRAMEWORK)


def cmd_parity(args: argparse.Namespace) -> int:
    from .parity import format_report, parity_report

    spec = _load_spec(args.spec, args.dtype)
    source = args.spec or f"bundled {DEFAULT_SPEC}"
    devices = ", ".join(f"{name} {_placed(name, args.device)[1]}" for name in args.backends)
    print(
        f"rnncore parity: {source} ({spec.encoder.cell}, {spec.encoder.num_layers} layer(s), "
        f"{'bi' if spec.encoder.bidirectional else 'uni'}directional, "
        f"pooling {spec.pooling}, {spec.dtype})"
    )
    print(
        f"batch {args.batch}, max length {args.max_len}, seed {args.seed}, devices: {devices}"
        f"{', TF32 allowed' if args.tf32 else ''}"
    )
    start = time.perf_counter()
    checks = parity_report(spec, args.backends, batch=args.batch, max_len=args.max_len, seed=args.seed,
                           device=str(args.device), tf32=args.tf32)  # fmt: skip
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


TRAIN_FLAGS = ("epochs", "batch_size", "lr", "max_len", "seed")
DATA_FLAGS = ("task", "data", "valid", "test", "text_column", "label_column", "backend")


def _train_config(args: argparse.Namespace, recorded: dict[str, Any] | None) -> Any:
    from .runinfo import resume_config
    from .train import TrainConfig
    from .train.run import DEFAULT_TRAIN

    overrides = {flag: getattr(args, flag) for flag in TRAIN_FLAGS}
    file_config = TrainConfig.from_file(args.config) if args.config else None
    if recorded is not None:  # --resume: the run's own settings; flags must agree (but --epochs)
        return resume_config(recorded["train"], file_config, overrides)
    return (file_config or DEFAULT_TRAIN[args.task]).with_overrides(**overrides)


def _train_settings(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """The run's data settings: from the flags, or with --resume from RUN/run.json."""
    from . import runinfo

    recorded = runinfo.recorded(args.out, data_given=bool(args.data)) if args.resume else None
    settings = runinfo.resolve({flag: getattr(args, flag) for flag in DATA_FLAGS}, recorded)
    args.task, args.backend = settings.task, settings.backend
    return settings, recorded


def cmd_train(args: argparse.Namespace) -> int:
    from .train import distributed
    from .train.run import BUNDLED_PREFIX, DEFAULT_DATA, RunError, train_run

    settings, recorded = _train_settings(args)
    backend = canonical_name(settings.backend)
    if args.precision != "float32":
        raise RunError(
            f"--precision {args.precision}: mixed-precision training (autocast) is not available yet; "
            "train in the spec's dtype (float32 or float64) without --precision"
        )
    role = _training_role(args, backend)
    data = settings.data or BUNDLED_PREFIX + DEFAULT_DATA[settings.task]
    spec = ModelSpec.from_file(args.spec) if args.spec else None
    config = _train_config(args, recorded)
    if role == "launch":
        distributed.worker_device(str(args.device))  # refused here once, not in every process
        return _launch_training(args, backend, data, config)
    # a worker joins its run first: TensorFlow's strategy must exist before any TensorFlow op
    launched = bool(os.environ.get(distributed.WORKER_ENV))  # by a launcher: die with it
    worker = None
    device: Device = args.device
    if role == "worker":
        worker = distributed.start_worker(backend, args.dist_timeout, launched, str(args.device))
    else:
        device, said = _placed(backend, args.device)
        print(
            f"rnncore train: {args.task} on {data}, backend {args.backend}, device {said}, "
            f"{config.epochs} epoch(s) -> {args.out}"
        )
    with distributed.joined(worker):
        scores = train_run(
            task=args.task, data=data, out=args.out, backend=args.backend, spec=spec, config=config,
            valid=settings.valid, test=settings.test, columns=settings.columns, overwrite=args.overwrite,
            resume=args.resume, progress=progress_mode(args.quiet), distributed=worker,
            reader=_reader_request(args, settings.columns, recorded),
            report=lambda block: print(block, flush=True), device=device, use_crf=args.crf,
            constrain=args.constrain_decoding,
        )  # fmt: skip
    if worker is None or worker.rank == 0:
        where = f"test file {settings.test}" if settings.test else "internal test split (10% of --data)"
        print(f"{where}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        wrote(_run_files(Path(args.out)))
    return EXIT_OK


def _run_files(run: Path) -> list[tuple[str, str | Path]]:
    from .train.run import latest_checkpoint

    files: list[tuple[str, str | Path]] = [
        ("the trained model (a bundle: config.json, model.safetensors, labels, tokenizer/)", run),
        ("what the run remembers (data, columns, settings): `--resume` reads it", run / "run.json"),
        ("loss and validation scores per epoch", run / "history.json"),
    ]
    if (run / "history.png").is_file():
        files.append(("the same, plotted", run / "history.png"))
    last = latest_checkpoint(run)
    if last is not None:
        files.append(("the newest checkpoint", last))
    return files


def _reader_request(
    args: argparse.Namespace, columns: tuple[str, str], recorded: dict[str, Any] | None = None
) -> Any:
    """How to read --data: the flags, over the reader a resumed run recorded (if any)."""
    from .data.formats import ReaderRequest, request_from

    given = {
        "data_format": args.data_format,
        "tag_column": args.tag_column,
        "token_column": args.token_column,
    }
    reader = (recorded or {}).get("reader")
    if isinstance(reader, dict) and reader.get("format") not in (None, "bundled"):
        return request_from(reader, text_column=columns[0], label_column=columns[1], **given)
    return ReaderRequest(text_column=columns[0], label_column=columns[1], **given)


def _training_role(args: argparse.Namespace, backend: str) -> str:
    """'single' (one process), 'launch' (start the processes) or 'worker' (one of them)."""
    from .train import distributed
    from .train.run import RunError

    torch_flags = args.nproc > 1 or args.nnodes > 1 or args.master_addr or args.master_port
    if backend == "tensorflow" and torch_flags:
        raise RunError("--nproc/--nnodes/--master-* launch torchrun; on TensorFlow use --workers N")
    if backend == "torch" and args.workers > 1:
        raise RunError("--workers starts TensorFlow workers; on torch use --nproc N (and --nnodes)")
    if args.node_rank >= args.nnodes:
        raise RunError(f"--node-rank {args.node_rank} is outside --nnodes {args.nnodes} (0 .. nnodes-1)")
    if args.nnodes > 1 and not args.master_addr:
        raise RunError("several machines need --master-addr: the address of node 0, the same on every node")
    if os.environ.get(distributed.WORKER_ENV):
        return "worker"  # started by a launcher below
    if backend == "tensorflow" and args.workers > 1 and "TF_CONFIG" in os.environ:
        size = distributed.tf_cluster_size(os.environ["TF_CONFIG"])
        if size != args.workers:
            raise RunError(f"TF_CONFIG describes {size} workers but --workers is {args.workers}")
        return "worker"  # one worker of the user's own cluster
    if args.nproc * args.nnodes > 1 or args.workers > 1:
        return "launch"
    return "single"


def _launch_training(args: argparse.Namespace, backend: str, data: str, config: Any) -> int:
    """Start every process of this machine (torchrun, or one per TensorFlow worker) and wait."""
    from .train import distributed
    from .train.run import check_run_folder

    if args.node_rank == 0:  # where rank 0 writes; checked once here, not in N processes
        check_run_folder(Path(args.out), args.overwrite, args.resume)
    env = distributed.worker_env(args.argv)  # every process runs this same command, as a worker
    program = list(distributed.WORKER_PROGRAM)
    if backend == "torch":
        local = args.nnodes == 1 and not args.master_addr
        port = args.master_port or (distributed.free_ports(1)[0] if local else 29500)
        command = distributed.torchrun_command(
            program, nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
            master_addr=args.master_addr or distributed.LOOPBACK, master_port=port,
        )  # fmt: skip
        jobs = [(command, distributed.torch_env(env, args.nproc, local))]
        how = f"torchrun + DistributedDataParallel, {args.nproc} process(es) x {args.nnodes} machine(s)"
    else:
        jobs = distributed.local_tf_jobs(program, args.workers, env)
        how = f"MultiWorkerMirroredStrategy, {args.workers} workers on 127.0.0.1"
    print(
        f"rnncore train: {args.task} on {data}, backend {backend}, {config.epochs} epoch(s), "
        f"global batch {config.batch_size} -> {args.out} ({how})",
        flush=True,  # before the workers' output
    )
    return distributed.run_processes(jobs)


def interrupted(args: argparse.Namespace) -> str:
    """One line for Ctrl-C: for `train`, the checkpoint kept and the command that continues."""
    if args.command != "train":
        return "interrupted"
    from .train.run import latest_checkpoint

    last = latest_checkpoint(Path(args.out))
    again = shlex.join(["rnncore", "train", "--out", args.out, "--resume"])
    if last is None:
        return "interrupted before the first checkpoint; nothing to resume. Start again with --overwrite"
    done = int(last.name.split("-")[1])
    return f"interrupted; kept checkpoint {last} ({done} epoch(s) done). Continue with: {again}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .train.run import evaluate_run

    columns = None
    if args.text_column or args.label_column:
        columns = (args.text_column or "text", args.label_column or "label")
    mode = "strict" if args.strict else "default"
    scores = evaluate_run(
        args.run, args.data, args.split, args.backend, columns, args.tag_column,
        scheme=args.scheme, mode=mode, device=str(args.device), constrain=args.constrain_decoding,
    )  # fmt: skip
    if args.json:
        print(json_text(scores))
        return EXIT_OK
    for key, value in scores.items():
        if key != "tagging":
            print(f"{key:>12}  {value:.4f}")
    if "tagging" in scores:
        from .train.tagging import format_tagging_report

        print("\n".join(["", *format_tagging_report(scores["tagging"])]))
    return EXIT_OK  # writes nothing: no summary


def _texts(args: argparse.Namespace, verb: str, run: str | None = None) -> list[str]:
    """The texts on the command line, then those of --data: the lines of a text file, or the
    text column of a .csv/.tsv/.jsonl file as `run` read its training data."""
    from .train.run import table_texts

    texts = list(args.texts)
    table = table_texts(run, args.data) if run and args.data else None
    if table is not None:
        texts += table
    elif args.data:
        texts += [line for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise InputError(f"give a text to {verb}, or --data FILE with one text per line")
    return texts


def cmd_predict(args: argparse.Namespace) -> int:
    from .train.run import predict_texts

    texts = _texts(args, "classify", run=args.run)
    for row in predict_texts(args.run, texts, args.backend, str(args.device)):
        if args.json:
            print(json_text(row))
        else:
            print(f"{row['label']}\t{max(row['probabilities'].values()):.3f}\t{row['text']}")
    return EXIT_OK


def _spec_option(path: str | None) -> ModelSpec | None:
    return None if path is None else _load_spec(path, None)


def cmd_port(args: argparse.Namespace) -> int:
    from .port import port

    checks = port(args.source, args.to, args.out, spec=_spec_option(args.spec), overwrite=args.overwrite)
    print(f"rnncore port: {args.source} -> {args.out} ({canonical_name(args.to)})")
    width = max(len(c.what) for c in checks)
    for check in checks:
        verdict = "ok" if check.diff.ok else "FAILED"
        print(f"  {check.what:<{width}}  max abs diff {check.diff.max_abs:.2e}  {verdict}")
    wrote([(f"the model as a {canonical_name(args.to)} bundle, with its model card README.md", args.out)])
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .appfiles import write_app_files
    from .bundle import load
    from .export import export
    from .registry import backend_for_format

    model = load(args.model, backend=backend_for_format(args.format).NAME)  # built where it exports
    result = export(model, args.out, args.format, overwrite=args.overwrite)
    print(result.summary())
    side = write_app_files(args.model, result)
    wrote([(f"the model as {args.format}", result.path), *side])
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain_texts, render_html, render_terminal

    texts = _texts(args, "explain", run=args.model)
    rows = explain_texts(args.model, texts, backend=args.backend, method=args.method, steps=args.steps,
                         device=str(args.device))  # fmt: skip
    try:
        from rich.console import Console
        from rich.markup import escape
    except ImportError:
        raise BackendError("coloured output needs rich: pip install 'rnncore[explain]'") from None
    console = Console(highlight=False)
    for row in rows:
        console.print(f"[bold]{escape(row.label)}[/]", render_terminal(row.tokens, row.scores),
                      f"[dim](completeness gap {row.completeness_gap:.1e})[/]")  # fmt: skip
    if args.html:
        Path(args.html).write_text(render_html(rows), encoding="utf-8")
        wrote([("the attributions as a self-contained HTML page", args.html)])
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    status = run_demo(args.backend, Path(args.out), epochs=args.epochs, quiet=args.quiet)
    names = ["torch", "tensorflow"] if args.backend == "both" else [canonical_name(args.backend)]
    wrote([(f"the run trained on {name}", Path(args.out) / name) for name in names])
    return status


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, a flag's
    False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def _per_task(field: str) -> str:
    """'(default: 8 for text-classification, ...)': the task's starting point (DEFAULT_TRAIN)."""
    from .train.run import DEFAULT_TRAIN

    values = {task: getattr(config, field) for task, config in DEFAULT_TRAIN.items()}
    if len(set(values.values())) == 1:
        return f"(default: {next(iter(values.values()))})"
    return "(default: " + ", ".join(f"{value} for {task}" for task, value in values.items()) + ")"


def _add_train_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--config", help="training config JSON (rnncore.train/1); flags below override it")
    command.add_argument("--epochs", type=int, help=f"passes over the training data {_per_task('epochs')}")
    command.add_argument("--batch-size", type=int, help=f"examples per step {_per_task('batch_size')}")
    command.add_argument("--lr", type=float, help=f"learning rate {_per_task('lr')}")
    command.add_argument(
        "--max-len", type=int, help=f"longest sequence kept, in tokens or steps {_per_task('max_len')}"
    )
    command.add_argument(
        "--seed", type=int, help=f"seed for the split, weights and batch order {_per_task('seed')}"
    )


def _add_constrain_option(command: argparse.ArgumentParser, text: str) -> None:
    from .crf import SCHEMES

    command.add_argument("--constrain-decoding", choices=SCHEMES, metavar="SCHEME",
                         help=f"{text}; one of {', '.join(SCHEMES)}")  # fmt: skip


def _tag_column(value: str) -> str | int:
    from .data.formats import parse_tag_column

    try:
        return parse_tag_column(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--tag-column {value!r}: ")) from None


def _add_reader_options(command: argparse.ArgumentParser) -> None:
    """How to read --data; by default the file decides (rnncore.data.formats)."""
    from .data.formats import FORMATS

    command.add_argument("--tag-column", type=_tag_column,
                         help="tagging: the tag, a CoNLL-U field (UPOS, XPOS, DEPREL, ...; default UPOS) "
                         "or a CoNLL column index (default -1, the last)")  # fmt: skip
    command.add_argument("--token-column", type=int,
                         help="tagging, CoNLL columns: the token's column index (default 0)")  # fmt: skip
    command.add_argument("--data-format", choices=FORMATS,
                         help="read --data as this layout, not the one its name and lines show")  # fmt: skip


def _count(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _index(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def _add_parallel_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group(
        "several processes", "--batch-size stays the global batch: each process trains on its share"
    )
    group.add_argument("--nproc", type=_count, default=1,
                       help="torch: processes on this machine, DistributedDataParallel under torchrun "
                       "(gloo on CPUs, NCCL with one GPU per process)")  # fmt: skip
    group.add_argument("--nnodes", type=_count, default=1, help="torch: machines taking part (default 1)")
    group.add_argument("--node-rank", type=_index, default=0, help="torch: this machine's index (default 0)")
    group.add_argument("--master-addr", help="torch: address of node 0 (default 127.0.0.1 on one machine)")
    group.add_argument("--master-port", type=_count,
                       help="torch: port on node 0 (default: a free one; 29500 across machines)")  # fmt: skip
    group.add_argument("--workers", type=_count, default=1,
                       help="tensorflow: MultiWorkerMirroredStrategy workers; started here on 127.0.0.1, "
                       "or, with TF_CONFIG set, this process is one of them")  # fmt: skip
    group.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                       help="seconds a process waits for the others at a collective before failing "
                       f"(default {DEFAULT_TIMEOUT_S:.0f})")  # fmt: skip


def benchmarks_checkout() -> Path | None:
    """The source checkout holding `benchmarks/`, if rnncore runs from one (an editable install).

    The harness is not part of the wheel: it needs hand-written baselines, plots and a quiet
    machine, none of which a user of the library wants installed.
    """
    root = Path(__file__).resolve().parent.parent
    markers = ("pyproject.toml", "benchmarks/cli.py", "benchmarks/grid.py")
    return root if all((root / marker).is_file() for marker in markers) else None


def cmd_bench(bench_args: list[str]) -> int:
    """`rnncore bench ARGS...` = `python -m benchmarks ARGS...` from the checkout."""
    root = benchmarks_checkout()
    if root is None:
        print(
            "rnncore: error: the benchmark harness lives in rnncore's source repository "
            "(benchmarks/), which this installation does not include: clone the repository, "
            "`pip install -e .` there, then run `rnncore bench` (or `python -m benchmarks` from its root)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    # a subprocess, so that the harness's own imports and thread settings start from scratch
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.call(
        [sys.executable, "-m", "benchmarks", *bench_args], env={**os.environ, "PYTHONPATH": path}
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnncore",
        description="One recurrent-network spec, compiled to PyTorch and Keras, "
        "checked against a numpy oracle.",
    )
    parser.add_argument("--version", action="version", version=f"rnncore {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="also show the frameworks' own log lines and warnings")  # fmt: skip

    class Commands:  # every command: defaults in --help, and --verbose
        @staticmethod
        def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
            if kwargs.get("add_help", True):
                kwargs.setdefault("parents", [common])
            return subparsers.add_parser(name, formatter_class=_HelpFormatter, **kwargs)

    commands = Commands()

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
    _add_device_option(parity)
    parity.add_argument("--tf32", action="store_true",
                        help="allow TensorFloat-32 on GPUs (off by default: it is outside float32's "
                        "tolerances)")  # fmt: skip
    parity.set_defaults(handler=cmd_parity)

    schema = commands.add_parser("schema", help="print the JSON Schema of spec files")
    schema.set_defaults(handler=cmd_schema)

    validate = commands.add_parser("validate", help="check a spec file and print it in canonical form")
    validate.add_argument("spec", help="spec file (.json/.yaml)")
    validate.set_defaults(handler=cmd_validate)

    backend_choices = ["torch", "pytorch", "tensorflow", "tf", "keras"]
    train = commands.add_parser("train", help="train a model on a backend and write a run folder")
    # data settings default to None: with --resume, what is not given comes from run.json
    train.add_argument("--backend", choices=backend_choices, help="framework (default: torch)")
    train.add_argument("--task", choices=["text-classification", "sequence-classification", "tagging"],
                       help="what to learn (default: text-classification)")  # fmt: skip
    train.add_argument("--data", help="CSV/TSV/JSONL/class folders, CoNLL, .npz, or bundled:NAME "
                       "(default: the bundled set for the task)")  # fmt: skip
    train.add_argument("--valid", help="validation data (default: 10%% of --data)")
    train.add_argument("--test", help="test data scored at the end (default: an internal test split, "
                       "10%% of --data)")  # fmt: skip
    train.add_argument("--text-column", help="text column or JSONL field (default: text)")
    train.add_argument("--label-column", help="label column or JSONL field (default: label)")
    _add_reader_options(train)
    train.add_argument("--spec", help="model spec file (default: a sensible model for the task)")
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint, with the data and "
                       "settings it recorded; --epochs N trains it up to N epochs")  # fmt: skip
    train.add_argument("--quiet", action="store_true",
                       help="no progress (a bar per epoch on a terminal, else a line per epoch)")  # fmt: skip
    train.add_argument("--crf", action="store_true",
                       help="tagging: a CRF output layer (tag-path loss, Viterbi decoding)")  # fmt: skip
    _add_constrain_option(train, "tagging: decode only tag sequences legal in SCHEME (remembered by the run)")
    _add_train_options(train)
    _add_device_option(train)
    train.add_argument("--precision", choices=["float32", "bf16", "fp16"], default="float32",
                       help="float32 (default); bf16/fp16 mixed precision is not available yet")  # fmt: skip
    _add_parallel_options(train)
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="metrics of a trained run on data")
    evaluate.add_argument("run", help="run folder written by `rnncore train`, or any model bundle")
    evaluate.add_argument("--data", help="data to score (default: the run's --test file, or the internal "
                          "split --split of its training data)")  # fmt: skip
    evaluate.add_argument("--split", choices=["train", "valid", "test"], default="test",
                          help="which split of the training data (default test)")  # fmt: skip
    evaluate.add_argument(
        "--backend", choices=backend_choices, help="framework (default: the one it trained on)"
    )
    evaluate.add_argument("--text-column", help="text column or JSONL field of --data (default: the run's)")
    evaluate.add_argument("--label-column", help="label column or JSONL field of --data (default: the run's)")
    evaluate.add_argument("--tag-column", type=_tag_column,
                          help="tagging: CoNLL-U field or CoNLL column (default: the run's)")  # fmt: skip
    evaluate.add_argument("--json", action="store_true", help="print one JSON object of metrics")
    evaluate.add_argument("--scheme", choices=SCHEMES, help="tagging: entity scheme (default: from the tags)")
    evaluate.add_argument(
        "--strict", action="store_true", help="tagging: seqeval's strict entities, not conlleval's"
    )
    _add_device_option(evaluate)
    _add_constrain_option(
        evaluate, "tagging: decode only tag sequences legal in SCHEME (default: as trained)"
    )
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser("predict", help="classify texts with a trained run")
    predict.add_argument("run", help="run folder written by `rnncore train`, or any model bundle")
    predict.add_argument("texts", nargs="*", help="texts to classify")
    predict.add_argument("--data", help="a file with one text per line")
    predict.add_argument(
        "--backend", choices=backend_choices, help="framework (default: the one it trained on)"
    )
    predict.add_argument("--json", action="store_true", help="one JSON object per text")
    _add_device_option(predict)
    predict.set_defaults(handler=cmd_predict)

    port = commands.add_parser(
        "port",
        help="move a trained model to the other framework, checked against the source",
        description="Read SOURCE (a bundle folder, a torch state_dict file with --spec, a Keras .keras file, "
        "or a .weights.h5 file with --spec), rebuild it on the target framework, compare outputs with the "
        "source and the numpy oracle on a padded batch, and write a bundle. Exit 1 if a check fails "
        "(nothing is written).",
    )
    port.add_argument("source", help="bundle folder, .pt/.pth state_dict, .keras or .weights.h5 file")
    port.add_argument("--to", required=True, choices=backend_choices, help="framework to port to")
    port.add_argument("--out", required=True, help="bundle folder to write")
    port.add_argument("--spec", help="the model's spec file (for a state_dict or a weights-only file)")
    port.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    port.set_defaults(handler=cmd_port)

    export = commands.add_parser(
        "export",
        help="write a model as ONNX, TorchScript, SavedModel or TFLite, checked against the model",
        description="Export MODEL (a bundle or run folder from either framework) and run the exported file "
        "with its own runtime on a padded batch; print the max abs diff against the in-memory model. "
        "Exit 1 (and remove the file) if it exceeds the tolerance.",
    )
    export.add_argument("model", help="bundle or run folder")
    export.add_argument(
        "--format",
        required=True,
        choices=[fmt for formats in EXPORT_FORMATS.values() for fmt in formats],
        help="onnx/torchscript come from PyTorch, savedmodel/tflite from TensorFlow",
    )
    export.add_argument(
        "--out", required=True, help="file (onnx, torchscript, tflite) or folder (savedmodel)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing file or folder")
    export.set_defaults(handler=cmd_export)

    explain = commands.add_parser(
        "explain",
        help="show which tokens drove a text classifier's decision",
        description="Attribute each prediction of MODEL (a run or bundle folder) to its tokens and print "
        "them shaded green (for the predicted class) or red (against it); --html writes the same as a page.",
    )
    explain.add_argument("model", help="run folder written by `rnncore train`, or any text-classifier bundle")
    explain.add_argument("texts", nargs="*", help="texts to explain")
    explain.add_argument("--data", help="a file with one text per line")
    explain.add_argument(
        "--method",
        choices=["integrated_gradients", "grad_x_input", "occlusion"],
        default="integrated_gradients",
        help="attribution method (default integrated_gradients)",
    )
    explain.add_argument("--steps", type=int, default=50, help="integrated-gradients steps (default 50)")
    explain.add_argument(
        "--backend", choices=backend_choices, help="framework (default: the one that trained it)"
    )
    explain.add_argument("--html", help="also write a self-contained HTML page here")
    _add_device_option(explain)
    explain.set_defaults(handler=cmd_explain)

    # listed for --help only: main() hands everything after `bench` to the harness before
    # argparse sees it (a REMAINDER positional would not take a leading --option)
    commands.add_parser(
        "bench",
        add_help=False,  # --help is the harness's own
        help="run the cross-framework benchmarks (from a source checkout; see `rnncore bench --help`)",
    )

    demo = commands.add_parser(
        "demo", help="the main job: train a BiLSTM sentiment classifier, port it, compare the backends"
    )
    demo.add_argument("--backend", choices=["both", *backend_choices], default="both",
                      help="train on this backend, or on both one after the other")  # fmt: skip
    demo.add_argument("--out", default="runs/demo", help="where to write the runs (default runs/demo)")
    demo.add_argument("--epochs", type=int, default=8, help="most training epochs; stops early (default 8)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=cmd_demo)
    parser.set_defaults(subparsers=subparsers.choices)
    return parser


def entry() -> int:
    """The process's entry point (the `rnncore` script, `python -m rnncore`, and the processes a
    distributed run launches): it owns the process, so it lets the C allocator keep freed
    memory for reuse (`rnncore.memory`) before `main` runs anything. Not for `bench`, whose
    figures are taken with the allocator as every other program gets it. For the same reason
    it may promise that the process uses one framework (`ONE_FRAMEWORK_COMMANDS`); a caller
    of `main` inside its own process may use both."""
    if sys.argv[1:2] != ["bench"]:
        keep_freed_memory()
    if sys.argv[1:2] and sys.argv[1] in ONE_FRAMEWORK_COMMANDS:
        expect_one_framework()
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["bench"]:
        return cmd_bench(given[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command = args.subparsers.get(args.command, parser)  # its usage, not the top-level one
    if extra and getattr(args, "texts", None) is not None and not any(e.startswith("-") for e in extra):
        # argparse hands `predict RUN --json "a text"` the text as leftover (a positional list
        # after an option); it is still a text to classify
        args.texts = [*args.texts, *extra]
    elif extra:
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    for flag in ("batch", "max_len", "epochs", "batch_size", "steps"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            command.error(f"--{flag.replace('_', '-')} must be at least 1")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a launcher runs again
    # a launcher's processes inherit its stderr: it must stay the terminal, not /dev/null
    quiet = not args.verbose and not _launches_processes(args)
    with cli_wording(), quiet_framework_logs(quiet), _warnings_as_lines():
        return _run(args)


# build a model on one backend and nothing else: TensorFlow need not wait for torch's import
ONE_FRAMEWORK_COMMANDS = ("evaluate", "predict", "explain", "export")


def _launches_processes(args: argparse.Namespace) -> bool:
    from .train import distributed

    if args.command != "train" or os.environ.get(distributed.WORKER_ENV):
        return False
    return bool(args.nproc * args.nnodes > 1 or args.workers > 1)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    shown = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        yield
    finally:
        warnings.showwarning = shown


def _run(args: argparse.Namespace) -> int:
    from .export import ExportError
    from .port import PortError

    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"rnncore: {interrupted(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ExportError, PortError) as err:  # the result does not compute what the model does
        print_error(err)
        return EXIT_MISMATCH
    except (SpecError, WeightsError, InputError, OSError, ValueError) as err:
        print_error(err)
        return EXIT_USAGE
    except BackendError as err:
        print_error(err)
        return EXIT_BACKEND
    except FloatingPointError as err:  # training diverged: not bad input, a failed run
        print_error(err)
        return EXIT_MISMATCH
    except MemoryError:
        print_error("out of memory: the model or the data is larger than this machine can hold; make "
                    "it smaller (rnncore's size limits are in docs/reliability.md)")  # fmt: skip
        return EXIT_MISMATCH
    except RecursionError:
        print_error("the input is nested too deeply to read")
        return EXIT_USAGE
    except Exception as err:  # the boundary: a bug, reported in one line with its traceback filed
        return report_unexpected(err, args.command)
