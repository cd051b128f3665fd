"""Prove backends compute the same function: outputs vs the oracle, gradients between backends.

Used by `rnncore parity` and by the test suite.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import numpy as np

from .api import build, device_of, get_weights, predict, value_and_grad
from .reference import reference_forward
from .registry import get_backend
from .spec import ModelSpec
from .tolerances import Diff, compare
from .weights import Weights, init_weights


def random_batch(
    spec: ModelSpec, batch: int = 8, max_len: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A right-padded batch with mixed lengths; includes a length-1 and a full-length row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=batch)
    lengths[0] = max_len
    if batch > 1:
        lengths[1] = 1
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    if spec.input.kind == "tokens":
        vocab, pad = spec.input.vocab_size, spec.input.padding_idx
        assert vocab is not None
        ids = rng.integers(0, vocab, size=(batch, max_len))
        if pad is not None and vocab > 1:
            ids = np.where(ids == pad, (pad + 1) % vocab, ids)  # real steps never hold the pad id
        inputs = np.where(valid, ids, 0 if pad is None else pad).astype(np.int64)
    else:
        assert spec.input.feature_dim is not None
        x = rng.standard_normal((batch, max_len, spec.input.feature_dim))
        inputs = (x * valid[:, :, None]).astype(spec.dtype)
    return inputs, lengths.astype(np.int64)


@dataclass(frozen=True)
class Check:
    what: str  # "outputs", "gradients", "weights"
    pair: str  # e.g. "torch vs oracle"
    diff: Diff


def _max_diff(diffs: list[Diff]) -> Diff:
    return Diff(max(d.max_abs for d in diffs), max(d.max_rel for d in diffs), all(d.ok for d in diffs))


def _exact(a: Weights, b: Weights) -> Diff:
    same = a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)
    gap = max((float(np.abs(a[k] - b[k]).max(initial=0.0)) for k in a if k in b), default=0.0)
    return Diff(gap, gap, same)


def parity_report(
    spec: ModelSpec,
    backends: tuple[str, ...] = ("torch", "tensorflow"),
    weights: Weights | None = None,
    batch: int = 8,
    max_len: int = 20,
    seed: int = 0,
    device: str | None = None,
    tf32: bool = False,
) -> list[Check]:
    """Build `spec` on every backend from one set of weights and compare them.

    Checks: each backend's outputs vs the numpy oracle; outputs and gradients (of a fixed
    random projection of the outputs, w.r.t. every canonical weight and feature inputs)
    between consecutive backends; the canonical weights read back from each backend are
    bit-identical to what went in.

    `device` places every model (see `rnncore.build`); on a GPU the comparisons use the GPU
    tolerances (`rnncore.tolerances.GPU_TOLERANCES`), and TensorFloat-32 stays off unless `tf32`
    (it rounds float32 products to 10 mantissa bits, far outside any float32 tolerance).
    """
    with contextlib.ExitStack() as numerics:
        for name in backends:
            numerics.enter_context(get_backend(name).tf32(tf32))
        return _checks(spec, backends, weights, batch, max_len, seed, device)


def _checks(
    spec: ModelSpec,
    backends: tuple[str, ...],
    weights: Weights | None,
    batch: int,
    max_len: int,
    seed: int,
    device: str | None,
) -> list[Check]:
    w = init_weights(spec, seed) if weights is None else weights
    inputs, lengths = random_batch(spec, batch, max_len, seed)
    expected = reference_forward(spec, w, inputs, lengths)
    cotangent = np.random.default_rng(seed + 1).standard_normal(expected.shape).astype(spec.dtype)
    checks: list[Check] = []
    results = {}
    gpu = False  # any model on a GPU: every comparison gets the GPU tolerances
    for name in backends:
        model = build(spec, backend=name, weights=w, device=device)
        gpu = gpu or device_of(model) != "cpu"
        checks.append(Check("weights", f"canonical -> {name} -> canonical", _exact(w, get_weights(model))))
        out = predict(model, inputs, lengths)
        diff = compare(out, expected, "outputs", spec.dtype, gpu=device_of(model) != "cpu")
        checks.append(Check("outputs", f"{name} vs oracle", diff))
        results[name] = value_and_grad(model, inputs, cotangent, lengths)
    for a, b in itertools.pairwise(backends):
        (out_a, grads_a, xgrad_a), (out_b, grads_b, xgrad_b) = results[a], results[b]
        checks.append(Check("outputs", f"{a} vs {b}", compare(out_a, out_b, "outputs", spec.dtype, gpu)))
        diffs = [compare(grads_a[k], grads_b[k], "gradients", spec.dtype, gpu) for k in grads_b]
        if xgrad_a is not None and xgrad_b is not None:
            diffs.append(compare(xgrad_a, xgrad_b, "gradients", spec.dtype, gpu))
        checks.append(Check("gradients", f"{a} vs {b}", _max_diff(diffs)))
    return checks


def format_report(checks: list[Check]) -> str:
    rows = [f"{'check':<10} {'pair':<42} {'max abs':>10} {'max rel':>10}  result"]
    for c in checks:
        verdict = "ok" if c.diff.ok else "FAIL"
        rows.append(f"{c.what:<10} {c.pair:<42} {c.diff.max_abs:>10.2e} {c.diff.max_rel:>10.2e}  {verdict}")
    return "\n".join(rows)
