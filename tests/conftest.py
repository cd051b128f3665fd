"""Test-wide fixtures: backends by name, digits data files, and a bound on Keras' memory growth."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

BACKENDS = ("torch", "tensorflow")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def digits_npz(tmp_path: Path) -> Callable[[int], Path]:
    """`digits_npz(rows)`: the first `rows` of sklearn's digits as an .npz of 8-step sequences."""

    def write(rows: int) -> Path:
        from rnncore.data import load_bundled

        digits = load_bundled("digits").subset(np.arange(rows))
        path = tmp_path / f"digits-{rows}.npz"
        np.savez(path, x=digits.x, y=digits.y)
        return path

    return write


@pytest.fixture(autouse=True)
def _release_keras_state():
    """Keras on TensorFlow keeps graphs and names across model builds; drop them per test.

    Without this, hundreds of builds in one process grow to several GiB.
    """
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=True)
        gc.collect()
