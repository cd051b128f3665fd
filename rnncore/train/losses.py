"""Which loss each task trains with, and its numpy reference.

All losses take logits and average over what counts: examples, label entries, or valid
(non-padded, non-ignored) tokens.

- classification: softmax cross-entropy, labels int (B,);
- multilabel: sigmoid binary cross-entropy, labels 0/1 float (B, K), mean over B*K;
- regression: mean squared error, targets float (B, K);
- tagging: softmax cross-entropy over valid steps, labels int (B, T); steps past a row's
  length or labelled IGNORE_INDEX (-100) do not count;
- tagging with a CRF head: the negative log-likelihood of each row's tag path (`rnncore.crf`)
  over its labelled steps, summed over rows and divided by the number of labelled steps, so
  that its scale (and a good learning rate) stays that of the per-token loss. Steps labelled
  IGNORE_INDEX (a word's later sub-tokens) are left out of the chain: the CRF links each
  labelled step to the next labelled one (`labelled_first`), so it scores the word sequence.
"""

from __future__ import annotations

import numpy as np

from .. import crf
from ..batch import InputError, outside_range, prepare_batch, step_mask
from ..spec import ModelSpec

IGNORE_INDEX = -100
LOSSES = {
    "classification": "cross_entropy",
    "multilabel": "binary_cross_entropy",
    "regression": "mean_squared_error",
    "tagging": "masked_cross_entropy",
}
CRF_LOSS = "crf_negative_log_likelihood"


def loss_name(spec: ModelSpec) -> str:
    if spec.head is None:
        raise ValueError("a spec without a head has no loss; add a head to train it")
    return CRF_LOSS if spec.head.crf else LOSSES[spec.head.task]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def reference_loss(
    spec: ModelSpec,
    logits: np.ndarray,
    targets: np.ndarray,
    lengths: np.ndarray,
    weights: dict[str, np.ndarray] | None = None,
) -> float:
    """The loss in plain numpy: the definition the backends' losses are tested against.

    A CRF head's loss also needs the model's canonical `weights` (its transition scores).
    """
    name = loss_name(spec)
    if name == CRF_LOSS:
        if weights is None:
            raise ValueError("a CRF's loss needs the model's weights (its transition scores)")
        order, counts = labelled_first(targets, lengths)
        emissions = np.take_along_axis(logits, order[..., None], axis=1)
        tags = np.take_along_axis(targets, order, axis=1)
        ll = crf.log_likelihood(emissions, tags, np.maximum(counts, 1), crf.crf_parameters(weights))
        return float(-(ll * (counts > 0)).sum() / max(1, counts.sum()))
    if name == "cross_entropy":
        return float(-_log_softmax(logits)[np.arange(len(targets)), targets].mean())
    if name == "binary_cross_entropy":
        # log(1 + exp(-|x|)) form: no overflow for large logits
        x, y = logits, targets
        return float((np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))).mean())
    if name == "mean_squared_error":
        return float(((logits - targets) ** 2).mean())
    valid = (np.arange(targets.shape[1])[None, :] < lengths[:, None]) & (targets != IGNORE_INDEX)
    logp = _log_softmax(logits)
    picked = np.take_along_axis(logp, np.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
    return float(-(picked * valid).sum() / max(1, valid.sum()))


def check_training_batch(
    spec: ModelSpec, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A training batch checked against the model, before any backend sees it: (inputs,
    lengths, targets) as `prepare_batch` returns inputs and lengths.

    Frameworks report bad labels unevenly (torch raises, TensorFlow's graph raises, XLA-compiled
    code gathers out of range and trains on NaN), so the checks live here, once: every label of
    a counted example or step is a class of the head (tagging also allows IGNORE_INDEX), and
    targets have one row per example.
    """
    x, lengths_arr = prepare_batch(spec, inputs, lengths)
    y = np.asarray(targets)
    expected = _targets_shape(spec, x.shape[0], x.shape[1])
    if y.shape != expected:
        raise InputError(f"targets have shape {y.shape}; this model's loss needs {expected}")
    if loss_name(spec) in ("cross_entropy", "masked_cross_entropy", CRF_LOSS):
        if not np.issubdtype(y.dtype, np.integer):
            raise InputError(f"class labels must be integers; got dtype {y.dtype}")
        counted = y
        if y.ndim == 2:  # tagging: only labelled steps within a row's length count
            counted = y[(y != IGNORE_INDEX) & step_mask(lengths_arr, x.shape[1])]
        assert spec.head is not None  # loss_name raised otherwise
        classes = spec.head.num_outputs
        bad = outside_range(counted, classes)
        if bad is not None:
            raise InputError(
                f"label {bad} is not one of the head's {classes} classes (0..{classes - 1}); the "
                "label vocabulary and the spec's head.num_outputs disagree"
            )
    return x, lengths_arr, y


def labelled_first(targets: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a CRF reads a row: (order (B, T), counts (B,)); `order[b, :counts[b]]` are row b's
    labelled steps (within its length, not IGNORE_INDEX) in order, the other steps after them.

    Gathering a row's emissions and tags by `order` gives the chain the CRF scores, of length
    `counts[b]`; the backends compute the same permutation (a stable sort of "unlabelled").
    """
    keep = step_mask(lengths, targets.shape[1]) & (targets != IGNORE_INDEX)
    return np.argsort(~keep, axis=1, kind="stable"), keep.sum(axis=1)


def _targets_shape(spec: ModelSpec, batch: int, steps: int) -> tuple[int, ...]:
    assert spec.head is not None
    name = loss_name(spec)
    if name == "cross_entropy":
        return (batch,)
    if name in ("masked_cross_entropy", CRF_LOSS):
        return (batch, steps)
    return (batch, spec.head.num_outputs)
