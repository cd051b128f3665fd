"""Keras 3 on its torch backend: the multi-backend anchor, run in its own process.

Keras picks its backend once per process, so the harness starts this module with
`KERAS_BACKEND=torch` and reads back what it writes:

    python -m benchmarks.keras_torch JOB.json RESULT.json

It times the same hand-written Keras model as the TensorFlow baseline (`keras_models.build`),
compiled with Adam and sparse cross-entropy from logits, through Keras' own batch API:
`predict_on_batch` and `train_on_batch`, with the same thread settings and the same timing and
contention accounting as the main process (one implementation, so nothing to interleave).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from .grid import Point, batch_arrays
from .timing import Settings, run_interleaved


def main(argv: list[str]) -> int:
    job_path, result_path = argv
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    import torch

    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(job["inter_op_threads"])
    torch.set_flush_denormal(True)  # as the main process (`cli.flush_denormals`)
    start = time.perf_counter()
    import keras

    import_s = time.perf_counter() - start
    if keras.backend.backend() != "torch":
        raise SystemExit(f"KERAS_BACKEND is {keras.backend.backend()!r}; run with KERAS_BACKEND=torch")
    from . import keras_models

    settings = Settings(**job["settings"])
    fields = {f.name for f in dataclasses.fields(Point)}
    results: list[dict[str, Any]] = []
    for raw in job["points"]:
        point = Point(**{k: v for k, v in raw.items() if k in fields})
        arrays = batch_arrays(point)
        keras.utils.set_random_seed(0)
        model = keras_models.build(point, point.masked)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        ids, labels = arrays["ids"], arrays["labels"]
        for mode in job["modes"]:
            call: Callable[[], Any] = (
                partial(model.predict_on_batch, ids)
                if mode == "forward"
                else partial(model.train_on_batch, ids, labels)
            )
            series = run_interleaved({"keras_torch": call}, settings)
            results.append(
                {
                    "point": point.key,
                    "mode": mode,
                    "summary": series["keras_torch"].summary(settings.min_quiet),
                }
            )
    out = {
        "keras_backend": keras.backend.backend(),
        "import_keras_s": import_s,
        "versions": {"keras": keras.__version__, "torch": torch.__version__},
        "threads": {
            "torch_intra_op": torch.get_num_threads(),
            "torch_inter_op": torch.get_num_interop_threads(),
        },
        "results": results,
    }
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "torch")
    raise SystemExit(main(sys.argv[1:]))
