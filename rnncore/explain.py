"""Token attributions that agree across frameworks: which input steps moved one output, and how much.

Three methods, all computed on the model's own backend through `rnncore.predict` and
`rnncore.value_and_grad`, so the same weights give the same attributions on PyTorch and Keras:

- ``"integrated_gradients"`` (default): the path integral of the gradient from a baseline to the
  input, times (input - baseline), summed over each step's vector. Its attributions add up to
  f(input) - f(baseline) (completeness); the gap left by the finite sum is reported per row.
- ``"grad_x_input"``: gradient times input at the input itself (one gradient call; exact
  completeness only for a linear model).
- ``"occlusion"``: f(input) - f(input with one step replaced by the baseline), one valid step at
  a time.

Choices, and why:

- Attributions are taken on the embedding *output* for token models: a gradient w.r.t. an integer
  id does not exist. The ids are embedded in numpy (`weights["embedding.weight"][ids]`) and the
  rest of the network is built once more as a features model (same encoder, pooling and head,
  `feature_dim = embedding_dim`) on the same backend, which returns input gradients. That copy
  is cached per model (a Keras build can take seconds) and gets the model's current weights on
  every call, so a model trained or changed in between is never explained with stale weights.
- The baseline is the zero vector at every valid step, with the row's length unchanged. For token
  models that is the padding id's embedding while that row is zero (`init_weights` zeroes it, and
  training leaves it so: padding gets no gradient), i.e. "every token replaced by padding"; for
  features it is zeros. It is the same whichever weights the table holds.
- Integrated gradients uses the trapezoid rule with `steps` intervals: gradients at the
  `steps + 1` points alpha = 0, 1/steps, ..., 1, ends weighted 1/2. Its error falls as
  1/steps^2 for smooth models (slower where max pooling or ReLU switch along the path), and the
  end points give f(baseline) and f(input) from the same
  calls, so the completeness gap compares numbers computed one way. All points of a batch are
  stacked into the batch dimension (in chunks bounded by `_ELEMENTS_PER_CALL`), so a call makes
  a handful of backend calls, not `steps`.
- The explained output is one scalar per row: `target` (default: the row's arg-max output, the
  predicted class) of the pooled outputs, or, for per-step outputs (tagging), `target` at step
  `position`. Scores are float64 (sums accumulate in float64 whatever the model's dtype), (B, T),
  exactly 0.0 at padded steps.

Example:
    >>> result = explain(model, ids)  # integrated gradients for the predicted class
    >>> result.scores  # (B, T) per-token attributions
    >>> result.completeness_gap  # (B,) sum(scores) - (f(x) - f(baseline)); shrinks with steps

Rendering: `render_terminal` (a `rich.text.Text`) and `render_html` (a self-contained page), and
`explain_texts` to explain raw texts with a training run or bundle folder.
"""

from __future__ import annotations

import html
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .api import build, get_weights, predict, set_weights, spec_of, value_and_grad
from .batch import InputError, prepare_batch, step_mask
from .registry import backend_of
from .spec import ModelSpec

METHODS = ("integrated_gradients", "grad_x_input", "occlusion")
# Input elements (rows x steps x width) per backend call: stacked IG points and occluded copies are
# split into chunks of about this size, bounding memory (~8 MB of float32 input) while keeping the
# number of calls small.
_ELEMENTS_PER_CALL = 1 << 21


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields, not results
class Attributions:
    """What `explain` returns; `scores` is the plain (B, T) array.

    Attributes:
        scores: float64 (B, T), one attribution per step, exactly 0.0 at padded steps.
        target: int64 (B,), the output index explained in each row.
        position: int64 (B,), the step explained in each row for per-step outputs; None otherwise.
        value: float64 (B,), f(input): the explained output at the input.
        baseline_value: float64 (B,), f(baseline): the same output with every valid step zeroed.
        completeness_gap: float64 (B,), scores.sum(1) - (value - baseline_value); integrated
            gradients drives it to 0 as `steps` grows, the other methods make no such promise.
        lengths: int64 (B,), valid steps per row.
        method: one of `METHODS`.
        steps: trapezoid intervals for integrated gradients, None for the other methods.
    """

    scores: np.ndarray
    target: np.ndarray
    position: np.ndarray | None
    value: np.ndarray
    baseline_value: np.ndarray
    completeness_gap: np.ndarray
    lengths: np.ndarray
    method: str
    steps: int | None


# ---- the features view of a model -------------------------------------------------------------
def features_spec(spec: ModelSpec) -> ModelSpec:
    """The same network reading `(B, T, embedding_dim)` vectors instead of token ids.

    Example:
        >>> features_spec(token_spec).input.feature_dim == token_spec.input.embedding_dim
        True
    """
    if spec.input.kind == "features":
        return spec
    return spec.replace(input={"kind": "features", "feature_dim": spec.input.embedding_dim})


# token model -> its features copy; weak, so that a dropped model frees its copy
_FEATURE_MODELS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def features_view(model: Any) -> tuple[Any, np.ndarray | None]:
    """(a features model computing `model` after its embedding, the embedding table or None).

    A features model is returned as it is (table None). For a token model, the copy is built once
    on the model's own backend, cached, and loaded with the model's current weights on each call.
    With explicit lengths it computes exactly what the token model computes from the embedded ids.

    Example:
        >>> fmodel, table = features_view(token_model)
        >>> predict(fmodel, table[ids], lengths)  # == predict(token_model, ids, lengths)
    """
    spec = spec_of(model)
    if spec.input.kind == "features":
        return model, None
    weights = get_weights(model)
    table = weights.pop("embedding.weight")
    fmodel = _FEATURE_MODELS.get(model)
    if fmodel is None:
        backend = backend_of(model)
        fmodel = build(
            features_spec(spec), backend=backend.NAME, weights=weights, device=backend.device_of(model)
        )
        _FEATURE_MODELS[model] = fmodel
    else:
        set_weights(fmodel, weights)
    return fmodel, table


# ---- explain --------------------------------------------------------------------------------
def explain(
    model: Any,
    inputs: np.ndarray,
    lengths: np.ndarray | None = None,
    method: str = "integrated_gradients",
    target: int | np.ndarray | None = None,
    steps: int = 50,
    position: int | np.ndarray | None = None,
) -> Attributions:
    """Per-step attributions of one output per row, for a model built by either backend.

    Args:
        model: a model from `rnncore.build` (or `rnncore.load`).
        inputs: `(B, T)` token ids or `(B, T, F)` features, right padded.
        lengths: `(B,)` valid steps; None derives them as `predict` does (from `padding_idx`).
        method: "integrated_gradients", "grad_x_input" or "occlusion".
        target: the output index to explain, one int or one per row; None: each row's arg-max.
        steps: trapezoid intervals for integrated gradients (gradients at steps + 1 points).
        position: for per-step outputs (tagging) the step to explain, one int or one per row;
            must be None for pooled outputs.
    Returns:
        `Attributions`; `.scores` is the (B, T) float64 array, 0.0 at padded steps.
    Example:
        >>> r = explain(model, ids, method="integrated_gradients", steps=100)
        >>> r.scores.sum(1) - (r.value - r.baseline_value)  # == r.completeness_gap, ~0
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "integrated_gradients" and (
        isinstance(steps, bool) or not isinstance(steps, int) or steps < 1
    ):
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    spec = spec_of(model)
    x, lengths = prepare_batch(spec, inputs, lengths)
    fmodel, table = features_view(model)
    mask = step_mask(lengths, x.shape[1])
    # Padded steps are zeroed: the network ignores them, and zeros keep every stacked copy clean.
    feats = (table[x] if table is not None else x) * mask[:, :, None].astype(spec.dtype)
    outputs = predict(fmodel, feats, lengths)
    pos = _positions(spec, position, lengths)
    tgt = _targets(target, outputs if pos is None else outputs[np.arange(len(pos)), pos])
    probe = _Probe(fmodel, lengths, pos, tgt)
    if method == "integrated_gradients":
        scores, value, base = _integrated_gradients(probe, feats, steps)
    elif method == "grad_x_input":
        scores, value, base = _grad_x_input(probe, feats)
    else:
        scores, value, base = _occlusion(probe, feats)
    scores = np.where(mask, scores, 0.0)
    return Attributions(
        scores=scores,
        target=tgt,
        position=pos,
        value=value,
        baseline_value=base,
        completeness_gap=scores.sum(axis=1) - (value - base),
        lengths=lengths,
        method=method,
        steps=steps if method == "integrated_gradients" else None,
    )


def _positions(spec: ModelSpec, position: int | np.ndarray | None, lengths: np.ndarray) -> np.ndarray | None:
    """Checked per-row steps for per-step outputs; None for pooled outputs."""
    if not spec.per_step_output:
        if position is not None:
            raise InputError("position is only for per-step outputs (pooling 'none', e.g. tagging)")
        return None
    if position is None:
        raise InputError("this model has one output per step: say which step to explain with position=")
    pos = np.broadcast_to(np.asarray(position), lengths.shape)
    if not np.issubdtype(pos.dtype, np.integer):
        raise InputError(f"position must be integer steps, one or one per row; got {pos.dtype}")
    bad = np.flatnonzero((pos < 0) | (pos >= lengths))
    if bad.size:
        row = int(bad[0])
        raise InputError(
            f"row {row}: position {int(pos[row])} is not a valid step (length {int(lengths[row])})"
        )
    return pos.astype(np.int64)


def _targets(target: int | np.ndarray | None, picked: np.ndarray) -> np.ndarray:
    """Checked per-row output indices; the arg-max of `picked` (B, K) when None."""
    if target is None:
        return np.asarray(picked.argmax(axis=1), dtype=np.int64)
    tgt = np.broadcast_to(np.asarray(target), picked.shape[:1])
    if not np.issubdtype(tgt.dtype, np.integer):
        raise InputError(f"target must be integer output indices, one or one per row; got {tgt.dtype}")
    outputs = picked.shape[1]
    bad = np.flatnonzero((tgt < 0) | (tgt >= outputs))
    if bad.size:
        row = int(bad[0])
        raise InputError(f"row {row}: target {int(tgt[row])} is not an output index 0..{outputs - 1}")
    return tgt.astype(np.int64)


@dataclass(frozen=True, eq=False)
class _Probe:
    """The explained scalar of each row: `fmodel`'s output `target` (at step `position`).

    Its methods take stacked inputs `x` (N, T, F) and `rows` (N,), the batch row each stacked
    copy belongs to (its length, target and position); each makes one backend call.
    """

    fmodel: Any
    lengths: np.ndarray
    position: np.ndarray | None
    target: np.ndarray

    def _index(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        n = np.arange(len(rows))
        if self.position is None:
            return n, self.target[rows]
        return n, self.position[rows], self.target[rows]

    def values(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float64 (N,): the explained output."""
        return predict(self.fmodel, x, self.lengths[rows])[self._index(rows)].astype(np.float64)

    def gradients(self, x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float64 values (N,) and the gradients (N, T, F) of the explained output."""
        spec = spec_of(self.fmodel)
        width = spec.head.num_outputs if spec.head is not None else spec.features_size
        shape = (len(rows), x.shape[1], width) if spec.per_step_output else (len(rows), width)
        cotangent = np.zeros(shape, dtype=x.dtype)
        cotangent[self._index(rows)] = 1.0
        out, _, grad = value_and_grad(self.fmodel, x, cotangent, self.lengths[rows])
        assert grad is not None, "a features model always returns input gradients"
        return out[self._index(rows)].astype(np.float64), grad.astype(np.float64)

    def values_of_all(self, feats: np.ndarray) -> np.ndarray:
        """float64 (B,): the explained output of whole batches `feats` (B, T, F), in chunks."""
        out = np.empty(feats.shape[0])
        for idx in _chunks(feats.shape[0], feats[0].size):
            out[idx] = self.values(feats[idx], idx)
        return out


def _chunks(total: int, row_size: int) -> list[np.ndarray]:
    """Consecutive index arrays over `total` stacked rows, each about `_ELEMENTS_PER_CALL` elements."""
    size = max(1, _ELEMENTS_PER_CALL // max(1, row_size))
    return [np.arange(i, min(i + size, total)) for i in range(0, total, size)]


def _integrated_gradients(
    probe: _Probe, feats: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trapezoid-rule IG from the zero baseline; all (point, row) pairs stacked, point-major."""
    batch = feats.shape[0]
    alphas = np.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] /= 2.0
    values = np.empty((steps + 1, batch))
    mean_grad = np.zeros(feats.shape)
    # The stacked copies are made chunk by chunk: all of them at once would be (steps + 1) x the batch.
    for idx in _chunks((steps + 1) * batch, feats[0].size):
        k, rows = np.divmod(idx, batch)
        x = (alphas[k, None, None] * feats[rows]).astype(feats.dtype)
        values[k, rows], grads = probe.gradients(x, rows)
        np.add.at(mean_grad, rows, weights[k, None, None] * grads)
    scores = np.einsum("btf,btf->bt", feats.astype(np.float64), mean_grad)
    return scores, values[-1], values[0]


def _grad_x_input(probe: _Probe, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient at the input times (input - zero baseline), summed over each step's vector."""
    values = np.empty(feats.shape[0])
    scores = np.empty(feats.shape[:2])
    for idx in _chunks(feats.shape[0], feats[0].size):
        values[idx], grads = probe.gradients(feats[idx], idx)
        scores[idx] = np.einsum("btf,btf->bt", feats[idx].astype(np.float64), grads)
    return scores, values, probe.values_of_all(np.zeros_like(feats))


def _occlusion(probe: _Probe, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f(input) - f(input with step t zeroed), for every valid step t; the copies are stacked."""
    values = probe.values_of_all(feats)
    occ_rows, occ_steps = np.nonzero(step_mask(probe.lengths, feats.shape[1]))
    scores = np.zeros(feats.shape[:2])
    for idx in _chunks(len(occ_rows), feats[0].size):
        rows, steps = occ_rows[idx], occ_steps[idx]
        x = feats[rows]  # fancy indexing copies: the batch itself is left alone
        x[np.arange(len(idx)), steps] = 0.0
        scores[rows, steps] = values[rows] - probe.values(x, rows)
    return scores, values, probe.values_of_all(np.zeros_like(feats))


# ---- texts ----------------------------------------------------------------------------------
class ExplainedText(NamedTuple):
    """One explained text: display tokens, their scores, the predicted label, the completeness gap."""

    tokens: list[str]
    scores: np.ndarray
    label: str
    completeness_gap: float


def token_strings(tokenizer: Any, ids: Sequence[int] | np.ndarray) -> list[str]:
    """Display strings for token ids, one per id: "gripping", "##ing", "caf" (a BPE piece), "[UNK]".

    Each id is decoded on its own (byte-level BPE pieces become readable text) and stripped of
    the word-start space; a piece that decodes to nothing visible keeps its raw vocabulary form.
    """
    hf = tokenizer.hf
    raw = hf.convert_ids_to_tokens([int(i) for i in ids])
    return [hf.convert_tokens_to_string([tok]).strip() or tok for tok in raw]


def explain_texts(
    run_or_bundle: str | Path,
    texts: Sequence[str],
    backend: str | None = None,
    method: str = "integrated_gradients",
    steps: int = 50,
    device: str | None = None,
) -> list[ExplainedText]:
    """Explain the predicted class of each text with a text-classification run or bundle folder
    (on `device`, see `rnncore.build`).

    Rows hold the tokens as the tokenizer cut them (truncated to the run's max_len), one score per
    token, the predicted label and the completeness gap. Feed them to `render_html` as they are.

    Example:
        >>> rows = explain_texts("runs/sentiment", ["a gripping, patient film"])
        >>> print(render_html(rows))
    """
    from .train.run import RunError, _check_usable, load_run

    model, encoder, info = load_run(run_or_bundle, backend, device)
    _check_usable(run_or_bundle, encoder)
    if info["task"] != "text-classification":
        raise RunError(
            f"{run_or_bundle} is a {info['task']} run; explaining texts needs a text-classification run"
        )
    ids, lengths = encoder.encode_texts(list(texts))
    result = explain(model, ids, lengths, method=method, steps=steps)
    names = encoder.labels.labels
    return [
        ExplainedText(
            token_strings(encoder.tokenizer, ids[i, :n]),
            result.scores[i, :n].copy(),
            names[int(result.target[i])],
            float(result.completeness_gap[i]),
        )
        for i, n in enumerate(lengths)
    ]


# ---- rendering ------------------------------------------------------------------------------
_POSITIVE = (26, 152, 80)  # green
_NEGATIVE = (215, 48, 39)  # red


def _shade(score: float, scale: float) -> tuple[tuple[int, int, int], bool] | None:
    """(background rgb, dark text?) blending white to green/red by |score| / scale; None if 0."""
    if scale <= 0 or score == 0 or not np.isfinite(score):
        return None
    strength = min(abs(score) / scale, 1.0)
    full = _POSITIVE if score > 0 else _NEGATIVE
    rgb = (
        round(255 + (full[0] - 255) * strength),
        round(255 + (full[1] - 255) * strength),
        round(255 + (full[2] - 255) * strength),
    )
    return rgb, strength < 0.6  # dark text stays readable on the pale shades


def _scale(scores: np.ndarray) -> float:
    finite = np.abs(scores[np.isfinite(scores)])
    return float(finite.max(initial=0.0))


def render_terminal(tokens: list[str], scores: np.ndarray) -> Any:
    """A `rich.text.Text` of the tokens, shaded green (positive) or red (negative) by |score|/max.

    Example:
        >>> from rich.console import Console
        >>> Console().print(render_terminal(["a", "great", "film"], np.array([0.0, 2.1, 0.3])))
    """
    from rich.text import Text  # imported here: rnncore loads numpy only at import time

    scores = np.asarray(scores, dtype=np.float64)[: len(tokens)]
    scale = _scale(scores)
    text = Text()
    for i, (token, score) in enumerate(zip(tokens, scores, strict=True)):
        if i:
            text.append(" ")
        shade = _shade(float(score), scale)
        if shade is None:
            text.append(token)
        else:
            (r, g, b), dark = shade
            text.append(token, style=f"{'black' if dark else 'white'} on rgb({r},{g},{b})")
    return text


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; line-height: 2; color: #222; }}
.row {{ margin: 0 0 1em 0; padding-bottom: 0.5em; border-bottom: 1px solid #ddd; }}
.label {{ font-weight: bold; margin-right: 1em; }}
.tok {{ padding: 0.15em 0.2em; border-radius: 0.25em; }}
.legend {{ color: #666; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="legend">Green: pushes towards the label shown; red: pushes away from it. Shade: |score| relative
to the largest in its row. Hover a token for its score.</p>
{rows}
</body>
</html>
"""


def _html_token(token: str, score: float, scale: float) -> str:
    shade = _shade(score, scale)
    style = ""
    if shade is not None:
        (r, g, b), dark = shade
        style = f' style="background-color: rgb({r}, {g}, {b}); color: {"#000" if dark else "#fff"}"'
    return f'<span class="tok"{style} title="{score:+.4g}">{html.escape(token)}</span>'


def render_html(rows: Sequence[Sequence[Any]], title: str = "rnncore explain") -> str:
    """A self-contained HTML page (inline CSS, no scripts or external assets) of explained rows.

    Each row is (tokens, scores, predicted label, ...): `explain_texts` rows fit as they are.
    Tokens and labels are HTML-escaped; colours as in `render_terminal`.

    Example:
        >>> Path("explain.html").write_text(render_html(explain_texts(run, texts)), encoding="utf-8")
    """
    parts = []
    for row in rows:
        tokens, scores, label = row[0], np.asarray(row[1], dtype=np.float64), row[2]
        scores = scores[: len(tokens)]
        scale = _scale(scores)
        spans = " ".join(_html_token(t, float(s), scale) for t, s in zip(tokens, scores, strict=True))
        parts.append(f'<div class="row"><span class="label">{html.escape(str(label))}</span>{spans}</div>')
    return _PAGE.format(title=html.escape(title), rows="\n".join(parts))
