"""Every numeric tolerance rnncore promises, in one place.

A comparison passes when, elementwise, |actual - expected| <= atol + rtol * |expected|
(numpy's `assert_allclose` rule): `atol` bounds small values, `rtol` large ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


# (what is compared, dtype) -> tolerance
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("outputs", "float32"): Tolerance(atol=1e-5, rtol=1e-5),
    ("outputs", "float64"): Tolerance(atol=1e-10, rtol=1e-10),
    ("gradients", "float32"): Tolerance(atol=1e-5, rtol=1e-4),
    ("gradients", "float64"): Tolerance(atol=1e-9, rtol=1e-9),
    # weights after the same training run on two backends (atol covers weights near zero)
    ("training", "float32"): Tolerance(atol=1e-6, rtol=1e-4),
    ("training", "float64"): Tolerance(atol=1e-11, rtol=1e-9),
    # an exported file (ONNX, TorchScript, SavedModel, TFLite) run by its own runtime vs the
    # in-memory model: runtimes fuse and reorder kernels, so float32 gets a little more room
    ("export", "float32"): Tolerance(atol=1e-5, rtol=1e-4),
    ("export", "float64"): Tolerance(atol=1e-9, rtol=1e-9),
    # token attributions (rnncore.explain) of the same model on two backends
    ("attributions", "float32"): Tolerance(atol=1e-5, rtol=1e-4),
    ("attributions", "float64"): Tolerance(atol=1e-10, rtol=1e-8),
}


# The same comparisons for a model run on a GPU (cuDNN's RNN kernels, cuBLAS), TF32 off. cuDNN
# sums the gate products in another order than the CPU kernels and fuses the four gate matmuls
# of an LSTM step into one, so float32 results move by a few ulps per step more than on a CPU.
# PROVISIONAL: chosen from cuDNN's documented float32 accuracy (no TF32), not yet measured
# here; `benchmarks/gpu_check.sh` measures the real gaps, and these must be set from its report
# once a GPU has run it. With TF32 on, float32 results differ by ~1e-3 relative, outside these:
# `rnncore parity` turns TF32 off.
GPU_TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("outputs", "float32"): Tolerance(atol=5e-5, rtol=1e-4),
    ("outputs", "float64"): Tolerance(atol=1e-9, rtol=1e-9),
    ("gradients", "float32"): Tolerance(atol=1e-4, rtol=1e-3),
    ("gradients", "float64"): Tolerance(atol=1e-8, rtol=1e-8),
    ("training", "float32"): Tolerance(atol=1e-5, rtol=1e-3),
    ("training", "float64"): Tolerance(atol=1e-10, rtol=1e-8),
    ("export", "float32"): Tolerance(atol=5e-5, rtol=1e-4),
    ("export", "float64"): Tolerance(atol=1e-9, rtol=1e-9),
    ("attributions", "float32"): Tolerance(atol=1e-4, rtol=1e-3),
    ("attributions", "float64"): Tolerance(atol=1e-9, rtol=1e-8),
}


def tolerance(kind: str, dtype: str | np.dtype, gpu: bool = False) -> Tolerance:
    """The named tolerance; `gpu` for results computed on a GPU (`GPU_TOLERANCES`)."""
    return (GPU_TOLERANCES if gpu else TOLERANCES)[(kind, np.dtype(dtype).name)]


@dataclass(frozen=True)
class Diff:
    max_abs: float
    max_rel: float
    ok: bool


def compare(
    actual: np.ndarray, expected: np.ndarray, kind: str, dtype: str | np.dtype, gpu: bool = False
) -> Diff:
    """Max abs / rel difference and whether it is inside the named tolerance (GPU's with `gpu`)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return Diff(float("inf"), float("inf"), False)
    tol = tolerance(kind, dtype, gpu)
    gap = np.abs(actual - expected)
    scale = np.abs(expected)
    max_abs = float(gap.max(initial=0.0))
    max_rel = float((gap / np.maximum(scale, np.finfo(np.float64).tiny)).max(initial=0.0))
    ok = bool(np.all(gap <= tol.atol + tol.rtol * scale)) and bool(np.isfinite(actual).all())
    return Diff(max_abs, max_rel, ok)


def assert_close(actual: np.ndarray, expected: np.ndarray, kind: str, dtype: str | np.dtype) -> None:
    """`np.testing.assert_allclose` with the named tolerance for `kind` and `dtype`."""
    tol = tolerance(kind, dtype)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=tol.atol, rtol=tol.rtol)
