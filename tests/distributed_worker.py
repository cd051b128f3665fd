"""One process of the distributed-training tests: 20 steps on a fixed case, weights to a file.

Run by torchrun (torch) or as one TF_CONFIG worker (tensorflow):
`python tests/distributed_worker.py BACKEND OUT.npz`. `case()` is shared with the test, which
trains the same case in one process to compare.

The case is built to hit every path of the split: tagging (the loss averages over valid
tokens, which differ per rank), ignored labels, batches of 7 rows (4 + 3 on two ranks) and a
last batch of one row (the second rank trains on a stand-in row with weight 0); clipping is
active, so it must act on the averaged gradient.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

ROWS = 7 * 19 + 1  # 20 batches of 7, the last of 1 row: 20 steps in one epoch
TIMEOUT_S = 120.0  # no collective in the tests waits longer than this for a peer


def case() -> tuple[Any, Any, Any, Any]:
    """(spec, config, data, initial weights)."""
    import rnncore
    from rnncore.train import TrainConfig
    from rnncore.train.loop import Encoded

    spec = rnncore.ModelSpec.from_dict(
        {
            "input": {"kind": "tokens", "vocab_size": 30, "embedding_dim": 4, "padding_idx": 0},
            "encoder": {"cell": "gru", "hidden_size": 5, "bidirectional": True},
            "pooling": "none",
            "head": {"hidden": [4], "activation": "tanh", "num_outputs": 3, "task": "tagging"},
        }
    )
    config = TrainConfig(optimizer="adam", lr=0.02, clip_norm=0.5, epochs=1, batch_size=7, seed=3)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 10, size=ROWS)
    ids = rng.integers(1, 30, size=(ROWS, 9)) * (np.arange(9)[None, :] < lengths[:, None])
    targets = np.where(rng.random((ROWS, 9)) < 0.2, -100, ids % 3)  # a fifth of the labels ignored
    data = Encoded(ids.astype(np.int64), lengths.astype(np.int64), targets.astype(np.int64), per_step=True)
    return spec, config, data, rnncore.init_weights(spec, seed=1)


def train(backend: str, worker: Any = None) -> tuple[dict[str, np.ndarray], list[float]]:
    """Final weights and per-step losses, on one process (`worker` None) or as one of many."""
    import rnncore
    from rnncore.train.loop import fit

    spec, config, data, weights = case()
    losses: list[float] = []
    if worker is None:
        model = rnncore.build(spec, backend=backend, weights=weights)
        trainer = rnncore.get_backend(backend).make_trainer(model, config)
    else:
        with worker.scope():
            model = rnncore.build(spec, backend=backend, weights=weights)
        trainer = worker.make_trainer(model, config)
    step = trainer.step

    def recording_step(*args: Any) -> float:
        losses.append(step(*args))
        return losses[-1]

    trainer.step = recording_step
    fit(model, data, config, trainer=trainer, progress=False, shard=None if worker is None else worker.shard)
    return rnncore.get_weights(model), losses


def main(backend: str, out: str) -> None:
    from rnncore.train.distributed import joined, start_worker

    # first: TensorFlow's strategy must exist before any op; die with the launcher
    worker = start_worker(backend, TIMEOUT_S, die_with_parent=True)
    with joined(worker):
        weights, losses = train(backend, worker)
        if worker.rank == 0:
            np.savez(out, losses=np.array(losses), world_size=worker.world_size, **weights)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
