"""Import a hand-written native model (a torch.nn.Module, a Keras model) as spec + weights.

Each backend reads its own framework's layers (`rnncore_torch.native`,
`rnncore_tensorflow.native`) into a `NativeReading`; this module dispatches, and verifies
every import it can: the native model and the imported spec (run by the numpy oracle) see
the same probe batch (right padded, several lengths, B != T), and the native model sees it
twice in a row, so that state kept between calls (a `self.hidden` the forward updates)
shows as a second answer that differs from the first. An import that disagrees beyond the
output tolerance of `rnncore/tolerances.py` is refused with the measured difference: a
reading can be wrong (a declared `pooling=` the forward does not do, an op that is invisible
to the reader), the check cannot. Where the model cannot be called (a forward that takes
more than the input and the lengths), a warning says so and `NativeImport.card_notes()`
records "import not verified" for the model card.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from .reference import reference_forward
from .registry import backend_for_native
from .spec import ModelSpec
from .tolerances import Diff, compare, tolerance
from .weights import Weights, check_weights

# the probe batch: batch != steps, so a model that reads the axes the other way round fails
PROBE_BATCH, PROBE_STEPS = 5, 7
PROBE_CALLS = 2  # twice in a row: state kept between calls changes the second answer
OUTPUT_ACTIVATIONS = ("linear", "softmax", "sigmoid", "log_softmax")


class UnsupportedNativeModel(ValueError):
    """A native model has a layer or setting with no exact rnncore equivalent.

    rnncore refuses rather than approximates: `layer` names the layer, `reason` says why.
    """

    def __init__(self, layer: str, reason: str):
        self.layer = layer
        self.reason = reason
        super().__init__(f"{layer}: {reason}")


class ImportNotVerified(UserWarning):
    """The native model could not be called, so its import was not checked against it."""


@dataclass(frozen=True)
class NativeRun:
    """How to run the native model on an rnncore batch, or why it cannot be run.

    `call(inputs, lengths)` takes right-padded batch-first numpy inputs and int64 lengths and
    returns the native outputs, batch first. `activation` is what the native model applies
    to rnncore's logits; `honours_padding` is False when it runs over padded steps as
    ordinary ones (its spec then has every step valid).
    """

    call: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    activation: str = "linear"
    honours_padding: bool = True
    why_not: str = ""  # when call is None: why the model cannot be called
    # entered around the probe calls: puts back what the forward changes on the model
    preserving: Callable[[], AbstractContextManager[Any]] = nullcontext


@dataclass(frozen=True)
class NativeReading:
    """What a backend read from a native model: `name` names the model in errors."""

    name: str
    spec: ModelSpec
    weights: Weights
    run: NativeRun


@dataclass(frozen=True)
class NativeImport:
    """A checked import: spec, weights, and the probe's largest difference (None: not verified)."""

    spec: ModelSpec
    weights: Weights
    diff: Diff | None
    not_verified: str = ""  # why, when diff is None

    @property
    def verified(self) -> bool:
        return self.diff is not None

    def card_notes(self) -> list[str]:
        """Lines for the model card (`bundle.save(..., notes=...)`)."""
        if self.diff is None:
            return [f"import not verified: {self.not_verified}"]
        return [
            f"import verified: the native model and the import agree on a padded probe batch "
            f"(max abs diff {self.diff.max_abs:.2e}, called {PROBE_CALLS} times)"
        ]


def import_native(model: Any, **options: Any) -> NativeImport:
    """`from_native`, keeping the verification's outcome (for the model card)."""
    reading = backend_for_native(model).read_native(model, **options)
    weights = check_weights(reading.spec, reading.weights)
    return verify(NativeReading(reading.name, reading.spec, weights, reading.run))


def from_native(model: Any, **options: Any) -> tuple[ModelSpec, Weights]:
    """The spec and canonical weights of a hand-written torch or Keras model, verified.

    Options are backend specific (see `rnncore_torch.native.read_native` and
    `rnncore_tensorflow.native.read_native`); unknown layers raise `UnsupportedNativeModel`,
    and so does an import that computes something else than the model on a probe batch.

    Example:
        >>> spec, weights = rnncore.from_native(my_torch_classifier)
        >>> keras_model = rnncore.build(spec, backend="tensorflow", weights=weights)
    """
    found = import_native(model, **options)
    return found.spec, found.weights


def fold_normalization(
    weight: np.ndarray, bias: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A layer `y = W x + b` read after `x * scale + shift` (inference-mode batch norm), as one
    layer: `W' = W * scale` (per input column), `b' = b + W @ shift`. Computed in float64."""
    w = weight.astype(np.float64)
    folded = (w * scale[None, :]).astype(weight.dtype), (bias + w @ shift).astype(bias.dtype)
    return folded


# ---- verification ---------------------------------------------------------------------


def probe_batch(spec: ModelSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded inputs with lengths sorted longest first (packing with enforce_sorted=True
    accepts them), a full-length and a length-1 row among them."""
    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(1, PROBE_STEPS + 1, PROBE_BATCH))[::-1].copy()
    lengths[0], lengths[-1] = PROBE_STEPS, 1
    valid = np.arange(PROBE_STEPS)[None, :] < lengths[:, None]
    inp = spec.input
    if inp.kind == "tokens":
        assert inp.vocab_size is not None
        pad = 0 if inp.padding_idx is None else inp.padding_idx
        ids = rng.integers(0, inp.vocab_size, (PROBE_BATCH, PROBE_STEPS))
        if inp.padding_idx is not None and inp.vocab_size > 1:  # real steps never hold the pad id
            ids = np.where(ids == pad, (pad + 1) % inp.vocab_size, ids)
        return np.where(valid, ids, pad).astype(np.int64), lengths.astype(np.int64)
    assert inp.feature_dim is not None
    x = rng.standard_normal((PROBE_BATCH, PROBE_STEPS, inp.feature_dim)) * valid[:, :, None]
    return x.astype(spec.dtype), lengths.astype(np.int64)


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """What a native model with output `activation` returns for rnncore's `logits`."""
    if activation in ("softmax", "log_softmax"):
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        return log_probs if activation == "log_softmax" else np.exp(log_probs)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


def verify(reading: NativeReading) -> NativeImport:
    """Run the native model and the import on the probe batch; refuse when they differ."""
    spec, weights, run = reading.spec, reading.weights, reading.run
    if run.call is None:
        warnings.warn(
            f"{reading.name}: import not verified: {run.why_not}; check it with "
            "rnncore.reference_forward(spec, weights, inputs) against your model's outputs",
            ImportNotVerified,
            stacklevel=4,  # the caller of from_native
        )
        return NativeImport(spec, weights, None, run.why_not)
    inputs, lengths = probe_batch(spec)
    seen = lengths if run.honours_padding else np.full_like(lengths, PROBE_STEPS)
    expected = activate(reference_forward(spec, weights, inputs, seen), run.activation)
    with run.preserving():
        return _probe(reading, inputs, lengths, seen, expected)


def _probe(
    reading: NativeReading, inputs: np.ndarray, lengths: np.ndarray, seen: np.ndarray, expected: np.ndarray
) -> NativeImport:
    spec, weights, run = reading.spec, reading.weights, reading.run
    assert run.call is not None
    diffs = []
    for call in range(PROBE_CALLS):
        try:
            got = run.call(inputs, lengths)
        except UnsupportedNativeModel:
            raise
        except Exception as err:  # the user's forward: it may raise anything
            problem = f"calling it on a padded probe batch raised {type(err).__name__}: {err}"
            if call > 0:  # it ran once: the second call differs, which is state kept between calls
                raise UnsupportedNativeModel(
                    reading.name, f"{problem} on call {call + 1} only; the forward keeps state between calls"
                ) from err
            return verify(NativeReading(reading.name, spec, weights, NativeRun(None, why_not=problem)))
        diffs.append(_compare(spec, got, expected, seen))
    worst = max(range(PROBE_CALLS), key=lambda i: (not diffs[i].ok, diffs[i].max_abs))
    if not diffs[worst].ok:
        raise UnsupportedNativeModel(reading.name, _mismatch(spec, diffs, worst))
    return NativeImport(spec, weights, diffs[worst])


def _compare(spec: ModelSpec, got: np.ndarray, expected: np.ndarray, lengths: np.ndarray) -> Diff:
    got = np.asarray(got)
    if spec.per_step_output and got.shape == expected.shape:
        # padded steps: rnncore's are zero, a native tagger's whatever its forward left there
        valid = (np.arange(PROBE_STEPS)[None, :] < lengths[:, None])[:, :, None]
        got, expected = got * valid, expected * valid
    return compare(got, expected, "outputs", spec.dtype)


def _mismatch(spec: ModelSpec, diffs: list[Diff], worst: int) -> str:
    tol = tolerance("outputs", spec.dtype)
    if np.isinf(diffs[worst].max_abs):
        what = "outputs of another shape (or not finite)"
    else:
        what = f"outputs that differ by up to {diffs[worst].max_abs:.3g} (max abs diff)"
    why = "the reading misses part of the forward (an op the reader cannot see, or a declared pooling= "
    why += "that the forward does not do)"
    if diffs[0].ok:
        why = "its output changes from one call to the next: the forward keeps state between calls "
        why += "(e.g. updates self.hidden); rnncore models start every batch from zeros"
    return (
        f"the import computes another function: on a padded probe batch of {PROBE_BATCH} rows the "
        f"model and the import give {what} on call {worst + 1} of {PROBE_CALLS}, beyond the "
        f"{spec.dtype} tolerance (atol {tol.atol:g}, rtol {tol.rtol:g}); {why}"
    )
