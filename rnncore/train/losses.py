"""Which loss each task trains with, and its numpy reference.

All losses take logits and average over what counts: examples, label entries, or valid
(non-padded, non-ignored) tokens.

- classification: softmax cross-entropy, labels int (B,);
- multilabel: sigmoid binary cross-entropy, labels 0/1 float (B, K), mean over B*K;
- regression: mean squared error, targets float (B, K);
- tagging: softmax cross-entropy over valid steps, labels int (B, T); steps past a row's
  length or labelled IGNORE_INDEX (-100) do not count.
"""

from __future__ import annotations

import numpy as np

from ..spec import ModelSpec

IGNORE_INDEX = -100
LOSSES = {
    "classification": "cross_entropy",
    "multilabel": "binary_cross_entropy",
    "regression": "mean_squared_error",
    "tagging": "masked_cross_entropy",
}


def loss_name(spec: ModelSpec) -> str:
    if spec.head is None:
        raise ValueError("a spec without a head has no loss; add a head to train it")
    return LOSSES[spec.head.task]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def reference_loss(spec: ModelSpec, logits: np.ndarray, targets: np.ndarray, lengths: np.ndarray) -> float:
    """The loss in plain numpy: the definition the backends' losses are tested against."""
    name = loss_name(spec)
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
