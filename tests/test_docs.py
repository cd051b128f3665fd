"""The documentation cannot rot: the tutorials run and print what their pages say, the spec
reference is what the schema gives, every public name is in the API reference, and every page
is in the site's navigation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import rnncore

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def run_tutorial(name: str, work: Path) -> str:
    """Run docs/tutorials/NAME.py as a reader would, from the repository root; its stdout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends"), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(DOCS / "tutorials" / f"{name}.py"), str(work)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def train_scores(out: str) -> dict[str, float]:
    """The held-out metrics `rnncore train` printed."""
    line = next(line for line in out.splitlines() if line.startswith("held-out test split:"))
    return {k: float(v) for k, v in re.findall(r"(\w+) (\d+\.\d+)", line)}


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def assert_same_scores_on_keras(out: str) -> dict[str, float]:
    """`evaluate --backend tensorflow` of a torch-trained run gives the metrics training printed
    (to one example: float32 logits that differ by 1e-6 may still flip a tie on the test split)."""
    torch_scores, keras_scores = train_scores(out), json_lines(out)[0]
    assert set(torch_scores) <= set(keras_scores)
    for key, value in torch_scores.items():
        assert keras_scores[key] == pytest.approx(value, abs=0.006), key
    return keras_scores


def test_text_classification_tutorial(tmp_path):
    out = run_tutorial("text_classification", tmp_path)
    scores = assert_same_scores_on_keras(out)
    assert scores["accuracy"] > 0.58  # balanced classes: chance is 0.5
    predictions = [line.split("\t") for line in out.splitlines() if line.count("\t") == 2]
    assert [p[2] for p in predictions] == ["a warm, funny and moving film", "a tedious, lifeless mess"]
    assert predictions[0][0] == "fresh"
    page = (tmp_path / "why.html").read_text(encoding="utf-8")
    assert "funny" in page and "dull" in page
    assert (tmp_path / "run" / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tagging_tutorial(tmp_path):
    out = run_tutorial("tagging", tmp_path)
    assert "4623 sentences" in out
    scores = assert_same_scores_on_keras(out)
    assert scores["accuracy"] > 0.75  # token accuracy; 218 tags
    assert "pooling none" in out


def test_mnist_rows_tutorial(tmp_path):
    out = run_tutorial("mnist_rows", tmp_path)
    assert "sequences: x (1797, 8, 8)" in out
    scores = assert_same_scores_on_keras(out)
    assert scores["accuracy"] > 0.85  # 10 classes
    predicted, true = re.search(r"predicted (\[.*?\]), true (\[.*?\])", out).groups()
    agree = sum(p == t for p, t in zip(json.loads(predicted), json.loads(true), strict=True))
    assert agree >= 8


def test_spec_reference_is_generated_from_the_current_schema():
    sys.path.insert(0, str(DOCS / "scripts"))
    try:
        import spec_reference
    finally:
        sys.path.remove(str(DOCS / "scripts"))
    assert (DOCS / "spec-reference.md").read_text(encoding="utf-8") == spec_reference.page(), (
        "run python docs/scripts/spec_reference.py"
    )
    for field in ("encoder.hidden_size", "head.task", "input.padding_idx", "pooling"):
        assert f"| `{field}` |" in spec_reference.page()


def test_every_public_name_is_in_the_api_reference_with_a_docstring():
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = {line.rsplit(".", 1)[-1] for line in re.findall(r"^::: (\S+)$", page, re.MULTILINE)}
    public = set(rnncore.__all__) - {"__version__", "FORMAT"}  # values, named in the page's text
    assert public <= documented, sorted(public - documented)
    assert "__version__" in page and "FORMAT" in page
    for name in public:
        assert (getattr(rnncore, name).__doc__ or "").strip(), f"rnncore.{name} has no docstring"


def nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_is_in_the_navigation_and_every_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    on_disk = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(listed) == on_disk


def test_readme_is_short_and_its_links_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_ledger_keeps_every_sitting_with_its_date():
    ledger = (ROOT / "benchmarks" / "LEDGER.md").read_text(encoding="utf-8")
    for sitting in ("Sitting 5 ", "Sitting 7 ", "Sittings 16-18", "Sitting 20 ", "Sittings 41-47",
                    "Sitting 48 ", "Sittings 50-53"):  # fmt: skip
        assert sitting in ledger, sitting
    dated = 0
    for paragraph in ledger.split("\n\n"):
        lines = paragraph.splitlines()
        tagged = lines[0].startswith("*[written 2026-")
        body = lines[1] if tagged and len(lines) > 1 else lines[0]
        if body.startswith(("Sitting", "A `--full` run", "Measured on")):
            assert tagged, body[:80]
            dated += 1
    assert dated >= 10
