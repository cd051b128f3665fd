"""The parts both backends share: tokenizer, metrics, weight porting, length bucketing, imports.

Each figure that is a rate goes through the same interleaved, contention-accounted timing as
the grid (`timing.run_interleaved`), so it carries the same `contended` flags.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from .timing import Settings, run_interleaved

PORT_SPEC: dict[str, Any] = {
    # about 100M parameters: a 250k x 256 embedding (64M) and a 2-layer BiLSTM of 1024 (35.7M)
    "input": {"kind": "tokens", "vocab_size": 250_000, "embedding_dim": 256, "padding_idx": 0},
    "encoder": {"cell": "lstm", "hidden_size": 1024, "num_layers": 2, "bidirectional": True},
    "pooling": "last",
    "head": {"hidden": [], "num_outputs": 2, "task": "classification"},
}


def _summaries(series: dict[str, Any], settings: Settings) -> dict[str, dict[str, Any]]:
    return {name: s.summary(settings.min_quiet) for name, s in series.items()}


# ---- tokenizer --------------------------------------------------------------------------------
def tokenizer(settings: Settings, before_after: bool = True) -> dict[str, Any]:
    """encode_batch over the whole bundled Rotten Tomatoes set with a word-level tokenizer.

    `rust_batch_encoder` is the path `encode_batch` took before its Python fast path (the Rust
    batch encoder, then the same padding), timed interleaved with it as the before/after figure
    unless `before_after` is False (the quick mode: ~4 s); its ids are compared either way.
    """
    from rnncore.data.datasets import load_bundled
    from rnncore.tokenize import Tokenizer, _pad

    texts = load_bundled("rotten_tomatoes").texts
    started = time.perf_counter()
    tok = Tokenizer.train(texts, kind="word", vocab_size=20_000)
    train_s = time.perf_counter() - started
    ids, lengths = tok.encode_batch(texts)
    rust = tok._rust  # the wrapped Rust tokenizer, for the before figure only
    old_rows = [e.ids for e in rust.encode_batch_fast(texts, add_special_tokens=False)]
    old_ids, _ = _pad(old_rows, tok.pad_id)
    runners: dict[str, Callable[[], Any]] = {"encode_batch": lambda: tok.encode_batch(texts)}
    if before_after:
        runners["rust_batch_encoder"] = lambda: _pad(
            [e.ids for e in rust.encode_batch_fast(texts, add_special_tokens=False)], tok.pad_id
        )
    found = _summaries(run_interleaved(runners, settings), settings)
    tokens = int(lengths.sum())
    for summary in found.values():
        median = summary.get("median_s")
        summary["tokens_per_s"] = tokens / median if median else None
    return {
        "texts": len(texts),
        "tokens": tokens,
        "vocab_size": tok.vocab_size,
        "train_s": train_s,
        "same_ids_as_rust": bool(np.array_equal(ids, old_ids)),
        "target_tokens_per_s": 1e6,
        "results": found,
    }


# ---- metrics ----------------------------------------------------------------------------------
def metrics(settings: Settings, n: int = 1_000_000) -> dict[str, Any]:
    """The shared numpy metrics on 1M predictions of a 2-class model (what `evaluate` computes)."""
    from rnncore import metrics as m

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, n)
    logits = rng.standard_normal((n, 2)).astype(np.float32)
    y_pred = logits.argmax(axis=1)
    scores = logits[:, 1] - logits[:, 0]
    runners: dict[str, Callable[[], Any]] = {
        "accuracy": lambda: m.accuracy(y_true, y_pred),
        "precision_recall_f1_macro": lambda: m.precision_recall_f1(y_true, y_pred, average="macro"),
        "confusion_matrix": lambda: m.confusion_matrix(y_true, y_pred),
        "classification_report": lambda: m.classification_report(y_true, y_pred),
        "log_loss_from_logits": lambda: m.log_loss_from_logits(y_true, logits),
        "roc_auc_binary": lambda: m.roc_auc_binary(y_true, scores),
        "evaluate_set": lambda: (
            m.classification_report(y_true, y_pred),
            m.log_loss_from_logits(y_true, logits),
        ),
    }
    found = _summaries(run_interleaved(runners, settings), settings)
    for summary in found.values():
        median = summary.get("median_s")
        summary["meets_target"] = None if median is None else median < 0.1
    return {
        "predictions": n,
        "classes": 2,
        "target_s": 0.1,
        "evaluate_set": "classification_report + log_loss_from_logits, what rnncore.train.evaluate runs",
        "results": found,
    }


# ---- porting ----------------------------------------------------------------------------------
def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def porting(repeats: int = 2, backends: tuple[str, ...] = ("torch", "tensorflow")) -> dict[str, Any]:
    """Canonical weights of a ~100M-parameter spec in and out of each backend's native model."""
    import rnncore

    from . import cpu

    spec = rnncore.ModelSpec.from_dict(PORT_SPEC)
    init_s, weights = _best(lambda: rnncore.init_weights(spec, seed=0), 1)
    params = int(sum(w.size for w in weights.values()))
    nbytes = int(sum(w.nbytes for w in weights.values()))
    out: dict[str, Any] = {
        "spec": PORT_SPEC,
        "parameters": params,
        "bytes": nbytes,
        "init_weights_s": init_s,
        "target_s": 2.0,
        "memcpy_s": _best(lambda: [np.copy(w) for w in weights.values()], repeats)[0],
    }
    for backend in backends:
        before = cpu.sample()
        build_s, model = _best(partial(rnncore.build, spec, backend=backend, weights=weights), 1)
        set_s, _ = _best(partial(rnncore.set_weights, model, weights), repeats)
        get_s, back = _best(partial(rnncore.get_weights, model), repeats)
        other = cpu.other_cpus(before, cpu.sample())
        exact = all(np.array_equal(back[k], weights[k]) for k in weights)
        out[backend] = {
            "build_and_set_s": build_s,
            "set_weights_s": set_s,
            "get_weights_s": get_s,
            "set_gb_per_s": nbytes / set_s / 1e9,
            "get_gb_per_s": nbytes / get_s / 1e9,
            "round_trip_exact": exact,
            "other_cpus": other,
            "contended": other > 0.25,
        }
        del model, back
    return out


# ---- length bucketing -------------------------------------------------------------------------
def bucketing(
    settings: Settings, rows: int, backends: tuple[str, ...], settle_s: float = 0.0
) -> dict[str, Any]:
    """Valid tokens/s over the same Rotten Tomatoes rows: length-bucketed batches vs naive ones.

    Bucketed: `rnncore.data.splits.bucket_batches`, each batch cut to its own longest row
    (`Encoded.batch`, as the training loop does). Padded, the naive padded loop the target is
    set against: the rows in random batches, each padded to the set's longest row and run in
    full, every padded step computed (no lengths given). Unbucketed: the same random batches
    with their lengths, so a model that skips padding itself does (torch's padded runs are cut
    where rows end, packed ones stop there): what bucketing adds on top of that. One call = one
    pass over all the rows.

    Keras compiles a recurring batch shape with XLA once the graph has spent a compile's time on
    it, and bucketed batches come in ~30 shapes: on 2,048 rows the compiles fill training passes
    8-43 (2-5 s each, against 1.3 s after them). So before timing, each Keras plan makes passes
    until every batch's shape is past its compiles (`_past_compiles`), for at most `settle_s`
    (reported as `settle_s` and `settled`, as the grid reports its settling).
    """
    import rnncore
    from rnncore.data.datasets import load_bundled
    from rnncore.data.splits import bucket_batches, padding_fraction
    from rnncore.registry import get_backend
    from rnncore.tokenize import Tokenizer
    from rnncore.train.config import TrainConfig

    texts = load_bundled("rotten_tomatoes").texts
    tok = Tokenizer.train(texts, kind="word", vocab_size=20_000)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(texts), size=min(rows, len(texts)), replace=False)
    ids, lengths = tok.encode_batch([texts[i] for i in chosen], max_len=128)
    labels = rng.integers(0, 2, len(lengths))
    batch_size = 64
    buckets = bucket_batches(lengths, batch_size, seed=0)
    order = rng.permutation(len(lengths))
    naive = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    spec = rnncore.ModelSpec.from_dict(
        {"input": {"kind": "tokens", "vocab_size": tok.vocab_size, "embedding_dim": 128,
                   "padding_idx": tok.pad_id},
         "encoder": {"cell": "lstm", "hidden_size": 256, "num_layers": 1, "bidirectional": False},
         "pooling": "last", "head": {"hidden": [], "num_outputs": 2, "task": "classification"}}
    )  # fmt: skip
    width = ids.shape[1]
    out: dict[str, Any] = {
        "rows": len(lengths),
        "batch_size": batch_size,
        "valid_tokens": int(lengths.sum()),
        "mean_length": float(lengths.mean()),
        "max_length": int(width),
        "padding_fraction_bucketed": padding_fraction(lengths, buckets),
        "padding_fraction_naive": 1.0 - float(lengths.sum()) / (len(lengths) * width),
        "target_speedup": 1.5,
        "speedup_against": "padded: random batches padded to the set's longest row, every step computed",
        "model": "1-layer LSTM, hidden 256, embedding 128 (the reference, vocab of the tokenizer)",
    }
    for backend in backends:
        model = rnncore.build(spec, backend=backend, weights=rnncore.init_weights(spec, seed=0))
        trainer = get_backend(backend).make_trainer(model, TrainConfig(optimizer="adam", lr=1e-3))

        def bucketed_batches() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            found = []
            for index in buckets:
                steps = int(lengths[index].max())
                found.append((ids[index, :steps], lengths[index], labels[index]))
            return found

        full = np.full(batch_size, width, dtype=lengths.dtype)
        plans = {
            "bucketed": bucketed_batches(),
            "padded": [(ids[index], full[: len(index)], labels[index]) for index in naive],
            "unbucketed": [(ids[index], lengths[index], labels[index]) for index in naive],
        }
        for mode in ("forward", "train"):

            def run(plan: list[Any], mode: str = mode, model: Any = model, trainer: Any = trainer) -> None:
                for x, lens, y in plan:
                    if mode == "forward":
                        rnncore.predict(model, x, lens)
                    else:
                        trainer.step(x, lens, y, 1e-3)

            runners: dict[str, Callable[[], Any]] = {k: partial(run, p) for k, p in plans.items()}
            if backend == "tensorflow":
                runners = {
                    k: _past_compiles(call, model, trainer, mode, plans[k], settle_s)
                    for k, call in runners.items()
                }
            found = _summaries(run_interleaved(runners, settings), settings)
            for summary in found.values():
                median = summary.get("median_s")
                summary["valid_tokens_per_s"] = out["valid_tokens"] / median if median else None
            out[f"{backend}/{mode}"] = {
                **found,
                "speedup": _ratio(found["bucketed"], found["padded"]),
                "speedup_vs_unbucketed": _ratio(found["bucketed"], found["unbucketed"]),
            }
    return out


def _past_compiles(
    run: Callable[[], Any], model: Any, trainer: Any, mode: str, plan: list[Any], limit_s: float
) -> Callable[[], Any]:
    """`run` with a `settle()` that repeats it until every batch of `plan` has its final path or
    has had its XLA compiles (its race's trials have begun: those cost about what the kept path
    does, the compiles many times more), for at most `limit_s`."""
    from rnncore_tensorflow import runtime

    from .impl_tf import _Settling

    def states() -> list[tuple[bool, bool]]:
        """(path final, past its compiles) per batch."""
        if mode == "train":
            found = [(trainer.settled(x, lens), trainer.race(x, lens)) for x, lens, _ in plan]
        else:
            forwards = [(runtime._runner(model).forward_for(x, lens), x) for x, lens, _ in plan]
            found = [(forward.settled(x), forward.race(x)) for forward, x in forwards]
        return [(settled, settled or bool(race["trials_q25_ms"])) for settled, race in found]

    def done() -> bool:
        return all(past for _, past in states())

    def summary() -> dict[str, Any]:
        found = states()
        return {
            "batches": len(found),
            "final": sum(final for final, _ in found),
            "past_compiles": sum(past for _, past in found),
        }

    return _Settling(run, done, summary, limit_s)


def _ratio(fast: dict[str, Any], slow: dict[str, Any]) -> float | None:
    a, b = fast.get("valid_tokens_per_s"), slow.get("valid_tokens_per_s")
    return a / b if a and b else None


# ---- imports ----------------------------------------------------------------------------------
IMPORT_STEPS = {
    "numpy": "numpy", "rnncore": "rnncore", "torch": "torch", "rnncore torch backend": "rnncore_torch",
    "tensorflow": "tensorflow", "keras": "keras", "rnncore tensorflow backend": "rnncore_tensorflow",
}  # fmt: skip
FRAMEWORK_ROWS = {"torch": ("torch", "rnncore torch backend"),
                  "tensorflow": ("tensorflow", "keras", "rnncore tensorflow backend")}  # fmt: skip


def import_times(frameworks: list[str]) -> dict[str, Any]:
    """Seconds to import each piece, in order (each after the ones above it), in this process.

    The harness needs these imports anyway, and a fresh process to time them cost another ~8 s of
    the quick mode's 3 minutes. This process has imported only the standard library, numpy and
    the harness's own modules by now, so a module imported before the measurement (numpy; rnncore
    under `rnncore bench`) is null rather than a misleading ~0 (keras, imported by tensorflow
    just above it, is ~0, as in a fresh process). torch comes before TensorFlow
    (rnncore's documented order); `rnncore` is the numpy-only core, each backend row is what
    rnncore adds on top of its framework. Only the frameworks benchmarked are imported.
    """
    before = set(sys.modules)
    skipped = {row for fw, rows in FRAMEWORK_ROWS.items() if fw not in frameworks for row in rows}
    times: dict[str, float | None] = {}
    for name, module in IMPORT_STEPS.items():
        if name in skipped:
            continue
        if module in before:
            times[name] = None
            continue
        start = time.perf_counter()
        importlib.import_module(module)
        times[name] = time.perf_counter() - start
    note = (
        "this process, before anything else imports them; each figure is that import after the ones "
        "above it; null: imported before the measurement"
    )
    return {"seconds": times, "note": note}
