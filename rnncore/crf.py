"""A linear-chain CRF in plain numpy (float64): the oracle both backends' CRFs are tested against.

A path `y` of a row with `L` valid steps scores

    score(y) = start[y_0] + sum_t emissions[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t] + end[y_{L-1}]

(`transitions[i, j]` scores tag i followed by tag j, as pytorch-crf and AllenNLP store it).
The log-likelihood of the gold path is `score(gold) - log Z`, where `log Z` sums every path by
the forward algorithm in log space; decoding is Viterbi. Steps past a row's length take no part.
The gradients come from forward-backward marginals, written out rather than differentiated, so
that the backends' autodiff is checked against an independent derivation.

Constrained decoding: `allowed_transitions(labels, scheme)` says which tag pairs an IOB1, IOB2 or
IOBES tag set allows (and which tags may start or end a sentence); `decode` turns the forbidden
ones into minus infinity, for a CRF model and for a softmax tagger alike (Viterbi over its
log-probabilities, with zero transition scores).

    >>> ll = log_likelihood(emissions, tags, lengths, crf_parameters(weights))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .spec import ModelSpec

SCHEMES = ("IOB1", "IOB2", "IOBES")
# A decoded path holds this tag at padded steps (any tag would do: lengths say where rows end).
PAD_TAG = 0


@dataclass(frozen=True)
class CrfParameters:
    """transitions (K, K) from -> to, start (K,), end (K,), as float64 arrays."""

    transitions: np.ndarray
    start: np.ndarray
    end: np.ndarray


def crf_parameters(weights: Mapping[str, np.ndarray]) -> CrfParameters:
    """The CRF's canonical weights (`crf.transitions`, `crf.start`, `crf.end`) in float64."""
    return CrfParameters(
        np.asarray(weights["crf.transitions"], np.float64),
        np.asarray(weights["crf.start"], np.float64),
        np.asarray(weights["crf.end"], np.float64),
    )


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    # a slice that is all -inf sums to -inf (exp(-inf - -inf) would be nan)
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


def _valid(lengths: np.ndarray, steps: int) -> np.ndarray:
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def _alphas(emissions: np.ndarray, lengths: np.ndarray, crf: CrfParameters) -> np.ndarray:
    """Forward scores (B, T, K): log-sum of every path prefix ending in each tag at step t."""
    steps = emissions.shape[1]
    alpha = np.empty_like(emissions)
    alpha[:, 0] = crf.start + emissions[:, 0]
    for t in range(1, steps):
        alpha[:, t] = _logsumexp(alpha[:, t - 1, :, None] + crf.transitions, axis=1) + emissions[:, t]
    return alpha


def _betas(emissions: np.ndarray, lengths: np.ndarray, crf: CrfParameters) -> np.ndarray:
    """Backward scores (B, T, K): log-sum of every path suffix after each tag at step t."""
    beta = np.zeros_like(emissions)
    for row in range(emissions.shape[0]):
        last = int(lengths[row]) - 1
        beta[row, last] = crf.end
        for t in range(last - 1, -1, -1):
            ahead = emissions[row, t + 1] + beta[row, t + 1]
            beta[row, t] = _logsumexp(crf.transitions + ahead[None, :], axis=1)
    return beta


def _last(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return values[np.arange(len(lengths)), np.asarray(lengths) - 1]


def log_partition(emissions: np.ndarray, lengths: np.ndarray, crf: CrfParameters) -> np.ndarray:
    """log Z per row (B,): the log-sum of the scores of every tag path of the row's length."""
    e = np.asarray(emissions, np.float64)
    return _logsumexp(_last(_alphas(e, lengths, crf), lengths) + crf.end, axis=1)


def path_score(
    emissions: np.ndarray, tags: np.ndarray, lengths: np.ndarray, crf: CrfParameters
) -> np.ndarray:
    """score(tags) per row (B,), as the module docstring defines it."""
    e = np.asarray(emissions, np.float64)
    tags = np.asarray(tags)
    valid = _valid(lengths, e.shape[1])
    safe = np.where(valid, tags, 0)
    emitted = np.take_along_axis(e, safe[..., None], axis=2)[..., 0]
    moved = crf.transitions[safe[:, :-1], safe[:, 1:]]
    score = crf.start[safe[:, 0]] + (emitted * valid).sum(axis=1) + (moved * valid[:, 1:]).sum(axis=1)
    return score + crf.end[_last(safe, lengths)]


def log_likelihood(
    emissions: np.ndarray, tags: np.ndarray, lengths: np.ndarray, crf: CrfParameters
) -> np.ndarray:
    """log p(tags | emissions) per row (B,), float64.

    Args:
        emissions: (B, T, K) per-step tag scores (a tagger's logits), right padded.
        tags: (B, T) gold tag ids; steps past a row's length are ignored.
        lengths: (B,) valid steps per row, each >= 1.
        crf: the transition, start and end scores.
    """
    return path_score(emissions, tags, lengths, crf) - log_partition(emissions, lengths, crf)


def log_likelihood_grads(
    emissions: np.ndarray, tags: np.ndarray, lengths: np.ndarray, crf: CrfParameters, cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    """Gradients of `sum(log_likelihood * cotangent)` w.r.t. the emissions and the CRF weights.

    Each is (observed counts - expected counts under the model), weighted per row by the
    cotangent: one-hot gold tags minus the node marginals for emissions, start and end; gold
    tag pairs minus the pair marginals for the transitions. Keys: "emissions",
    "crf.transitions", "crf.start", "crf.end". Padded steps get zero gradient.
    """
    e = np.asarray(emissions, np.float64)
    tags, lengths = np.asarray(tags), np.asarray(lengths)
    cot = np.asarray(cotangent, np.float64)
    batch, steps, k = e.shape
    alpha, beta = _alphas(e, lengths, crf), _betas(e, lengths, crf)
    log_z = _logsumexp(_last(alpha, lengths) + crf.end, axis=1)
    valid = _valid(lengths, steps)
    nodes = np.exp(alpha + beta - log_z[:, None, None]) * valid[..., None]
    gold = np.eye(k)[np.where(valid, tags, 0)] * valid[..., None]
    grad_e = (gold - nodes) * cot[:, None, None]
    grad_t = np.zeros((k, k))
    for row in range(batch):
        for t in range(1, int(lengths[row])):
            pair = alpha[row, t - 1][:, None] + crf.transitions + (e[row, t] + beta[row, t])[None, :]
            grad_t -= cot[row] * np.exp(pair - log_z[row])
            grad_t[tags[row, t - 1], tags[row, t]] += cot[row]
    first, last = gold[:, 0] - nodes[:, 0], _last(gold - nodes, lengths)
    return {
        "emissions": grad_e,
        "crf.transitions": grad_t,
        "crf.start": (first * cot[:, None]).sum(axis=0),
        "crf.end": (last * cot[:, None]).sum(axis=0),
    }


def viterbi(emissions: np.ndarray, lengths: np.ndarray, crf: CrfParameters) -> tuple[np.ndarray, np.ndarray]:
    """The best tag path per row and its score: ((B, T) int64, (B,) float64).

    Ties go to the lowest tag id (numpy's argmax), at every step and at the end. Padded steps
    hold `PAD_TAG`. Forbidden moves may be -inf; a row with no allowed path scores -inf.
    """
    e = np.asarray(emissions, np.float64)
    batch, steps, _ = e.shape
    delta = crf.start + e[:, 0]
    back = np.zeros(e.shape, dtype=np.int64)
    best = np.empty_like(e)
    best[:, 0] = delta
    for t in range(1, steps):
        candidates = best[:, t - 1, :, None] + crf.transitions  # (B, from, to)
        back[:, t] = candidates.argmax(axis=1)
        best[:, t] = candidates.max(axis=1) + e[:, t]
    final = _last(best, lengths) + crf.end
    paths = np.full((batch, steps), PAD_TAG, dtype=np.int64)
    for row in range(batch):
        last = int(lengths[row]) - 1
        paths[row, last] = int(final[row].argmax())
        for t in range(last, 0, -1):
            paths[row, t - 1] = back[row, t, paths[row, t]]
    return paths, final.max(axis=1)


# ---------------------------------------------------------------------------------------------
# Constrained decoding


@dataclass(frozen=True)
class Allowed:
    """Which moves a tag scheme allows: transitions (K, K) from -> to, start (K,), end (K,)."""

    transitions: np.ndarray
    start: np.ndarray
    end: np.ndarray


def _split_tag(tag: str, scheme: str) -> tuple[str, str]:
    prefixes = "BI" if scheme in ("IOB1", "IOB2") else "BIES"
    if tag == "O":
        return "O", ""
    prefix, sep, kind = str(tag).partition("-")
    if not sep or prefix not in prefixes or not kind:
        raise ValueError(
            f"tag {tag!r} is not a {scheme} tag; expected O or one of {', '.join(prefixes)} + '-TYPE' "
            "(choose the scheme the labels use, or decode without constraints)"
        )
    return prefix, kind


def _follows(scheme: str, before: tuple[str, str], after: tuple[str, str]) -> bool:
    (b, b_kind), (a, a_kind) = before, after
    same = b_kind == a_kind
    if scheme == "IOB2":  # I-X continues B-X or I-X
        return a != "I" or (b in "BI" and same)
    if scheme == "IOB1":  # B-X only separates two X entities
        return a != "B" or (b in "BI" and same)
    inside = b in ("B", "I")  # IOBES: B-X and I-X need I-X or E-X next; the rest, a fresh start
    return (a in ("I", "E") and same) if inside else a in ("O", "B", "S")


def allowed_transitions(labels: Sequence[str], scheme: str) -> Allowed:
    """The moves `scheme` allows between `labels` (tag names indexed by tag id).

    IOB2: I-X only after B-X or I-X, never first. IOB1: B-X only after B-X or I-X (it splits two
    adjacent X entities), never first. IOBES: after B-X or I-X only I-X or E-X; after O, E-X or
    S-X only O, B-Y or S-Y; a sentence starts with O, B or S and ends with O, E or S.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
    parts = [_split_tag(tag, scheme) for tag in labels]
    pairs = np.array([[_follows(scheme, b, a) for a in parts] for b in parts], dtype=bool)
    if scheme == "IOBES":
        start = np.array([p in ("O", "B", "S") for p, _ in parts])
        end = np.array([p in ("O", "E", "S") for p, _ in parts])
    else:
        start = np.array([p != ("I" if scheme == "IOB2" else "B") for p, _ in parts])
        end = np.ones(len(parts), dtype=bool)
    return Allowed(pairs, start, end)


def constrained(crf: CrfParameters, allowed: Allowed) -> CrfParameters:
    """`crf` with every move `allowed` forbids set to -inf."""
    return CrfParameters(
        np.where(allowed.transitions, crf.transitions, -np.inf),
        np.where(allowed.start, crf.start, -np.inf),
        np.where(allowed.end, crf.end, -np.inf),
    )


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    return x - _logsumexp(x, axis=-1)[..., None]


def decode(
    spec: ModelSpec,
    weights: Mapping[str, np.ndarray],
    outputs: np.ndarray,
    lengths: np.ndarray,
    allowed: Allowed | None = None,
) -> np.ndarray:
    """A tagger's best tag paths (B, T) from its outputs (B, T, K): the definition of prediction.

    A CRF model decodes by Viterbi over its emissions and CRF weights; a softmax tagger takes
    each step's argmax, or, under `allowed`, the best allowed path by its summed
    log-probabilities (Viterbi with zero transition scores).
    """
    assert spec.head is not None and spec.head.task == "tagging"
    k = spec.head.num_outputs
    if spec.head.crf:
        crf = crf_parameters(weights)
        emissions = np.asarray(outputs, np.float64)
    else:
        if allowed is None:
            paths = np.asarray(outputs).argmax(axis=-1)
            return np.where(_valid(lengths, paths.shape[1]), paths, PAD_TAG).astype(np.int64)
        crf = CrfParameters(np.zeros((k, k)), np.zeros(k), np.zeros(k))
        emissions = log_softmax(outputs)
    if allowed is not None:
        crf = constrained(crf, allowed)
    return viterbi(emissions, lengths, crf)[0]
