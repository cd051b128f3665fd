"""Helpers shared by the tests: the feature grid and small specs that cover it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from rnncore import ModelSpec

HIDDEN = 4
FEATURES = 3
EMBEDDING = 5
VOCAB = 23

# Every axis of the parity grid, with its values.
AXES: dict[str, tuple[Any, ...]] = {
    "cell": ("lstm", "gru", "rnn-tanh", "rnn-relu"),
    "layers": (1, 2, 3),
    "bidirectional": (False, True),
    "residual": (False, True),
    "pooling": ("last", "mean", "max", "attention", "none"),
    "head": ("none", "relu", "leaky_relu", "tanh", "gelu"),
    "input": ("tokens", "features"),
    "dtype": ("float32", "float64"),
}


def spec_for(point: dict[str, Any]) -> ModelSpec:
    """A small spec for one grid point.

    A residual one-layer spec makes the input as wide as the encoder output so that the
    residual applies; a residual deeper spec keeps it different, so that layer 0 runs
    without and later layers with the residual.
    """
    cell, _, nonlinearity = point["cell"].partition("-")
    bi = point["bidirectional"]
    width = HIDDEN * (2 if bi else 1) if point["residual"] and point["layers"] == 1 else None
    if point["input"] == "tokens":
        inp = {"kind": "tokens", "vocab_size": VOCAB, "embedding_dim": width or EMBEDDING, "padding_idx": 0}
    else:
        inp = {"kind": "features", "feature_dim": width or FEATURES}
    head = None
    if point["head"] != "none":
        task = "tagging" if point["pooling"] == "none" else "classification"
        head = {
            "hidden": [3],
            "activation": point["head"],
            "negative_slope": 0.2,
            "num_outputs": 2,
            "task": task,
        }
    return ModelSpec.from_dict(
        {
            "input": inp,
            "encoder": {
                "cell": cell,
                "hidden_size": HIDDEN,
                "num_layers": point["layers"],
                "bidirectional": bi,
                "residual": point["residual"],
                "nonlinearity": nonlinearity or "tanh",
            },
            "pooling": point["pooling"],
            "head": head,
            "dtype": point["dtype"],
        }
    )


def pairwise_points(axes: dict[str, tuple[Any, ...]] = AXES) -> list[dict[str, Any]]:
    """A small set of grid points in which every pair of values of any two axes occurs.

    Greedy all-pairs covering: deterministic, about 30 points for the grid above instead
    of the 4,800 of the full product. Interactions of three axes are covered by the
    focused tests (e.g. cell x pooling x bidirectional in test_parity.py).
    """
    names = list(axes)
    uncovered = {
        (a, va, b, vb) for a, b in itertools.combinations(names, 2) for va in axes[a] for vb in axes[b]
    }
    points: list[dict[str, Any]] = []
    while uncovered:
        best, best_gain = None, -1
        # seed each candidate with one uncovered pair, then fill the other axes greedily
        for a, va, b, vb in sorted(uncovered, key=repr)[:40]:
            candidate = {a: va, b: vb}
            for name in names:
                if name in candidate:
                    continue
                candidate[name] = max(axes[name], key=lambda v, n=name: _gain({**candidate, n: v}, uncovered))
            gain = _gain(candidate, uncovered)
            if gain > best_gain:
                best, best_gain = candidate, gain
        assert best is not None
        points.append({n: best[n] for n in names})
        uncovered -= set(_pairs(best))
    return points


def _pairs(point: dict[str, Any]) -> Iterator[tuple[str, Any, str, Any]]:
    names = [n for n in AXES if n in point]  # the order `pairwise_points` enumerates pairs in
    for a, b in itertools.combinations(names, 2):
        yield (a, point[a], b, point[b])


def _gain(partial: dict[str, Any], uncovered: set) -> int:
    return sum(1 for pair in _pairs(partial) if pair in uncovered)


def point_id(point: dict[str, Any]) -> str:
    return "-".join(
        [
            point["cell"],
            f"{point['layers']}L",
            "bi" if point["bidirectional"] else "uni",
            "res" if point["residual"] else "nores",
            point["pooling"],
            f"head_{point['head']}",
            point["input"],
            point["dtype"],
        ]
    )


def script_validation(monkeypatch: Any, metric: str, values: Sequence[float]) -> None:
    """Make epoch `i`'s validation `metric` read `values[i]` in every run trained in this process.

    Which epoch is best, and whether early stopping fires, then follow from the test's script
    and not from float rounding in training (a real metric moved the best epoch between CPUs).
    The other validation scores stay real. The epoch is known from the `start_epoch` that a
    run (fresh or resumed) hands to `fit`, and counted on from there.
    """
    from rnncore.train import loop
    from rnncore.train import run as run_module

    real_fit, real_evaluate = run_module.fit, loop.evaluate
    epoch = [0]

    def fit(*args: Any, start_epoch: int = 0, **kwargs: Any) -> Any:
        epoch[0] = start_epoch
        return real_fit(*args, start_epoch=start_epoch, **kwargs)

    def evaluate(*args: Any, **kwargs: Any) -> dict[str, float]:
        scores = real_evaluate(*args, **kwargs)
        scores[metric] = float(values[epoch[0]])
        epoch[0] += 1
        return scores

    monkeypatch.setattr(run_module, "fit", fit)
    monkeypatch.setattr(loop, "evaluate", evaluate)
