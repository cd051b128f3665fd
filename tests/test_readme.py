"""The README's Python example runs as written and does what its comments say."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def test_readme_example_runs_and_the_backends_agree(monkeypatch):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert block, "README has a python example"
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)
    np.testing.assert_allclose(scope["y_torch"], scope["y_ref"], atol=1e-5)
    np.testing.assert_allclose(scope["y_keras"], scope["y_ref"], atol=1e-5)
    assert os.path.exists(ROOT / "rnncore/examples/sentiment_bilstm.json")
