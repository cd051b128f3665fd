"""The README's examples run as written and do what their comments say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def quick_tour() -> str:
    """The README's quick-tour block: the first bash block under "## Quick tour"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick tour\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "the README's quick tour has a bash block"
    return block.group(1)


def test_readme_quick_tour_runs_as_written(tmp_path):
    """Train on PyTorch, evaluate on Keras, predict, port, export, explain: each command as the
    README prints it, `rnncore` being this interpreter's `python -m rnncore`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends"), env.get("PYTHONPATH", "")])
    prelude = f'set -euo pipefail\nrnncore() {{ "{sys.executable}" -m rnncore "$@"; }}\n'
    done = subprocess.run(["bash", "-c", prelude + quick_tour()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    trained = float(re.search(r"held-out test split: accuracy (\d\.\d+)", out).group(1))
    on_keras = float(re.search(r"^ +accuracy +(\d\.\d+)$", out, re.MULTILINE).group(1))
    # the same model scored on the other framework (a tie among ~1,066 test texts may flip)
    assert on_keras == pytest.approx(trained, abs=0.0015)
    assert trained > 0.6
    labels = [line.split("\t")[0] for line in out.splitlines() if line.count("\t") == 2]
    assert len(labels) == 2 and set(labels) <= {"fresh", "rotten"}
    assert re.search(r"vs numpy oracle +max abs diff \S+ +ok", out)
    for written in ("runs/rt/model.safetensors", "runs/rt/history.png", "runs/rt-keras/config.json",
                    "rt.tflite", "why.html"):  # fmt: skip
        assert (tmp_path / written).stat().st_size > 0, written
