"""Grid points, the smoke/quick/full selections, and each point's FLOP count.

A point is one model shape and one batch shape; each point is timed for the forward pass (eval,
no gradients) and for a training step (forward + backward + Adam update). `masked` points have
variable lengths (the batch is padded to its longest row, `seq_len`); fixed points have none.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

CELLS = ("lstm", "gru", "rnn")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
MODES = ("forward", "train")
NUM_CLASSES = 2

# The grid
GRID_CELLS = CELLS
GRID_LAYERS = (1, 2)
GRID_BIDIRECTIONAL = (False, True)
GRID_SEQ = (32, 128, 512)
GRID_BATCH = (1, 64)
GRID_HIDDEN = (128, 512)


@dataclass(frozen=True)
class Point:
    cell: str
    layers: int
    bidirectional: bool
    seq_len: int
    batch: int
    hidden: int
    masked: bool = False
    vocab: int = 20_000
    embedding: int = 128
    tag: str = ""

    @property
    def key(self) -> str:
        direction = "bi" if self.bidirectional else "uni"
        lengths = "masked" if self.masked else "fixed"
        return (
            f"{self.cell}-{self.layers}L-{direction}-T{self.seq_len}-B{self.batch}-H{self.hidden}"
            f"-E{self.embedding}-V{self.vocab}-{lengths}"
        )

    @property
    def arch(self) -> tuple[Any, ...]:
        """What the model depends on: points sharing it share built models and traced functions."""
        return (self.cell, self.layers, self.bidirectional, self.hidden, self.vocab, self.embedding)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}

    def spec_dict(self) -> dict[str, Any]:
        """The rnncore spec of this point (dropout 0, `last` pooling, a linear 2-class head)."""
        return {
            "input": {"kind": "tokens", "vocab_size": self.vocab, "embedding_dim": self.embedding,
                      "padding_idx": 0},
            "encoder": {"cell": self.cell, "hidden_size": self.hidden, "num_layers": self.layers,
                        "bidirectional": self.bidirectional, "dropout": 0.0},
            "pooling": "last",
            "head": {"hidden": [], "num_outputs": NUM_CLASSES, "task": "classification", "dropout": 0.0},
        }  # fmt: skip

    def forward_flops_per_token(self) -> float:
        """Multiply-adds x 2 of the recurrent layers for one valid step of one row.

        Per layer and direction: the input projection (G*H x I) and the recurrent one (G*H x H),
        G gates. Gate nonlinearities, the embedding gather and the head are left out (< 1%).
        """
        directions = 2 if self.bidirectional else 1
        total = 0.0
        for layer in range(self.layers):
            width_in = self.embedding if layer == 0 else directions * self.hidden
            total += directions * 2.0 * GATES[self.cell] * self.hidden * (width_in + self.hidden)
        return total

    def flops(self, mode: str, valid_tokens: int) -> float:
        """FLOPs of one call on `valid_tokens` valid steps; a training step counts 3x the forward."""
        return self.forward_flops_per_token() * valid_tokens * (3.0 if mode == "train" else 1.0)


REFERENCE = Point("lstm", 1, False, 128, 64, 256, tag="reference")


def batch_arrays(point: Point, seed: int = 0) -> dict[str, np.ndarray]:
    """The one batch every implementation of a point gets: ids, lengths, labels.

    Ids are drawn from 2..vocab-1 (0 pads, 1 is unknown). Masked points draw lengths uniformly
    from seq_len/8..seq_len with one row at seq_len, and pad with 0 after each row's length.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, point.vocab, size=(point.batch, point.seq_len), dtype=np.int64)
    if point.masked:
        lengths = rng.integers(max(1, point.seq_len // 8), point.seq_len + 1, size=point.batch)
        lengths[0] = point.seq_len
        ids[np.arange(point.seq_len)[None, :] >= lengths[:, None]] = 0
    else:
        lengths = np.full(point.batch, point.seq_len)
    labels = rng.integers(0, NUM_CLASSES, size=point.batch, dtype=np.int64)
    return {"ids": ids, "lengths": lengths.astype(np.int64), "labels": labels}


def smoke_points() -> list[Point]:
    return [Point("lstm", 1, False, 8, 4, 16, vocab=200, embedding=16, tag="smoke")]


def quick_points() -> list[Point]:
    """A small set that still has every axis value but length 512 and hidden 512: the reference
    (LSTM, fixed and masked), batch-1 latency (GRU), and a masked 2-layer bidirectional RNN.

    Four points, not five: each costs ~25 s on 2 cores (settling the compiled Keras paths is
    part of it), and the mode's promise is under 3 minutes."""
    return [
        REFERENCE,
        replace(REFERENCE, masked=True),
        Point("gru", 1, False, 128, 1, 128, tag="latency"),
        Point("rnn", 2, True, 32, 64, 128, masked=True),
    ]


def full_points() -> list[Point]:
    """The issue's grid (cell x layers x direction x length x batch x hidden; fixed lengths, and
    masked ones where a batch has more than one row), ordered for a time budget:

    1. the reference, fixed and masked;
    2. every shape (length x batch x fixed/masked) of the smallest architecture, for the
       scaling plots;
    3. three shapes of every architecture (length 128 at batch 64, fixed and masked, length 32
       for hidden 512; length 32 at batch 1), architectures in `coverage_order`, so that every
       axis value comes early;
    4. every remaining point, architecture by architecture, cheapest shapes first.
    Points of one architecture stay together within a stage (they share built models and traced
    functions).
    """
    archs = coverage_order(list(itertools.product(GRID_CELLS, GRID_LAYERS, GRID_BIDIRECTIONAL, GRID_HIDDEN)))
    shapes = sorted(itertools.product(GRID_SEQ, GRID_BATCH), key=lambda s: s[0] * s[1])

    def cells(arch: tuple[Any, ...], chosen: list[tuple[int, int, bool]]) -> list[Point]:
        cell, layers, bi, hidden = arch
        return [Point(cell, layers, bi, seq, batch, hidden, masked=m) for seq, batch, m in chosen]

    every = [(seq, batch, m) for seq, batch in shapes for m in ((False, True) if batch > 1 else (False,))]

    def sample(arch: tuple[Any, ...]) -> list[tuple[int, int, bool]]:
        seq = 128 if arch[3] <= 128 else 32  # hidden 512 at length 128 is over the step budget when bi
        return [(seq, 64, False), (seq, 64, True), (32, 1, False)]

    points = [REFERENCE, replace(REFERENCE, masked=True)]
    points += cells(archs[0], every)
    for arch in archs[1:]:
        points += cells(arch, sample(arch))
    for arch in archs[1:]:
        points += cells(arch, [c for c in every if c not in sample(arch)])
    return points


def coverage_order(archs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Reorder so that each next item brings the most axis values not seen yet (ties: cheapest)."""
    left = sorted(archs, key=lambda a: (a[3], a[1], a[2], CELLS.index(a[0])))
    seen: list[set[Any]] = [set() for _ in archs[0]] if archs else []
    order = []
    while left:
        best = max(left, key=lambda a: sum(v not in s for v, s in zip(a, seen, strict=True)))
        left.remove(best)
        order.append(best)
        for v, s in zip(best, seen, strict=True):
            s.add(v)
    return order


FULL_BATCH = 64  # the batch at which a call runs at its best rate (the grid's largest)


def estimated_seconds(point: Point, mode: str, gflops: float) -> float:
    """A rough time per call at `gflops` sustained at batch 64 (used only to skip points over the
    budget). Smaller batches run in proportion slower: one row a step is matrix-vector work, and
    batch-1 steps measured 0.1-1.4% of the GEMM peak (batch 64: 10-55%)."""
    tokens = point.batch * point.seq_len
    return point.flops(mode, tokens) / (gflops * 1e9 * min(1.0, point.batch / FULL_BATCH))
