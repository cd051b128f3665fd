"""Test-wide fixtures: backends by name, and a bound on Keras' memory growth."""

from __future__ import annotations

import gc
import sys

import pytest

BACKENDS = ("torch", "tensorflow")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _release_keras_state():
    """Keras on TensorFlow keeps graphs and names across model builds; drop them per test.

    Without this, hundreds of builds in one process grow to several GiB.
    """
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=True)
        gc.collect()
