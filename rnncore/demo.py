"""`rnncore demo`: the main job on bundled data, end to end, on both backends.

Train a small BiLSTM sentiment classifier on the bundled Rotten Tomatoes snippets, evaluate it
on the held-out split, port the trained weights to the other backend, evaluate there, and
print accuracy / macro-F1 from both plus how far apart the two stacks' logits are.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .api import build, get_weights, spec_of
from .clioutput import progress_mode
from .registry import canonical_name
from .train.loop import evaluate, predict_batched
from .train.run import DEFAULT_TRAIN, load_run, read_dataset, split_dataset, train_run

DATA = "bundled:rotten_tomatoes"
OTHER = {"torch": "tensorflow", "tensorflow": "torch"}


def run_demo(backend: str, out: Path, epochs: int = 8, quiet: bool = False) -> int:
    backends = ["torch", "tensorflow"] if backend == "both" else [canonical_name(backend)]
    config = DEFAULT_TRAIN["text-classification"].with_overrides(epochs=epochs)
    rows = []
    for name in backends:
        run = out / name
        print(f"\n== training on {name}: BiLSTM, Rotten Tomatoes, up to {epochs} epochs -> {run}")
        start = time.perf_counter()
        train_run(task="text-classification", data=DATA, out=run, backend=name, config=config,
                  overwrite=True, progress=progress_mode(quiet))  # fmt: skip
        seconds = time.perf_counter() - start
        model, encoder, info = load_run(run)
        test = encoder.encode(
            split_dataset(read_dataset(DATA, info["task"]), config.seed)["test"], "the test split"
        )
        native = evaluate(model, test)
        ported = build(spec_of(model), backend=OTHER[name], weights=get_weights(model))
        ported_scores = evaluate(ported, test)
        logits, ported_logits = predict_batched(model, test), predict_batched(ported, test)
        gap = float(np.abs(logits - ported_logits).max())
        same = bool((logits.argmax(1) == ported_logits.argmax(1)).all())
        rows.append((name, OTHER[name], native, ported_scores, gap, same, seconds))
    print("\ntrained on   evaluated on   accuracy  macro_f1   (held-out test split, 1,281 snippets)")
    for trained, other, native, ported_scores, gap, same, seconds in rows:
        print(
            f"{trained:<12} {trained:<14} {native['accuracy']:8.4f}  {native['macro_f1']:8.4f}"
            f"   ({seconds:.0f} s)"
        )
        print(f"{trained:<12} {other:<14} {ported_scores['accuracy']:8.4f}  {ported_scores['macro_f1']:8.4f}")
        verdict = "identical predictions" if same else "PREDICTIONS DIFFER"
        print(f"   ported {trained} -> {other}: max |logit difference| {gap:.2e}, {verdict}")
    return 0 if all(row[5] for row in rows) else 1
