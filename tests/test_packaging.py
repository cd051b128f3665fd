"""Import hygiene and the backend registry."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rnncore
from rnncore import registry


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_importing_rnncore_loads_no_framework(tmp_path):
    result = _python(
        "import sys, rnncore, rnncore.cli, rnncore.parity, rnncore.explain, rnncore.export, rnncore.port\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "print(heavy)",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_backends_folder_is_not_an_importable_package(tmp_path):
    # PyPI has an unrelated `backends` distribution; only the packages inside our folder install.
    result = _python("import rnncore_torch, rnncore_tensorflow\nimport backends", tmp_path)
    assert "No module named 'backends'" in result.stderr


def test_backends_are_registered_as_entry_points():
    from importlib.metadata import entry_points

    registered = {ep.name: ep.value for ep in entry_points(group="rnncore.backends")}
    assert registered == {"torch": "rnncore_torch", "tensorflow": "rnncore_tensorflow"}
    assert rnncore.available() == ["tensorflow", "torch"]


@pytest.mark.parametrize(
    ("alias", "name"),
    [("torch", "torch"), ("pytorch", "torch"), ("PyTorch", "torch"), ("tensorflow", "tensorflow"),
     ("tf", "tensorflow"), ("keras", "tensorflow")],
)  # fmt: skip
def test_backend_aliases(alias, name):
    assert registry.canonical_name(alias) == name
    assert name == rnncore.get_backend(alias).NAME


def test_unknown_backend_lists_the_choices():
    with pytest.raises(rnncore.BackendError, match=r"unknown backend 'jax'.*keras"):
        rnncore.get_backend("jax")


def test_missing_framework_names_the_extra_to_install(monkeypatch):
    def no_torch(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(registry.importlib, "import_module", no_torch)
    monkeypatch.setattr(registry, "_loaded", {})
    with pytest.raises(rnncore.BackendError, match=r"pip install 'rnncore\[torch\]'"):
        rnncore.get_backend("pytorch")


def test_foreign_models_are_refused():
    with pytest.raises(rnncore.BackendError, match="not a model built by rnncore"):
        rnncore.predict(object(), [[1, 2]])


def test_every_subpackage_is_listed_for_the_wheel():
    """setuptools ships only the packages pyproject names; an editable install hides a missing one."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "rnncore").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    found |= {init.parent.name for init in (root / "backends").glob("*/__init__.py")}
    assert found == listed


def test_the_tables_that_spare_framework_imports_match_the_backends():
    """The registry and `port` name formats and file kinds without importing a framework."""
    import rnncore_tensorflow.files
    import rnncore_torch.files

    from rnncore.port import KERAS_FILES, TORCH_FILES

    for name in registry.EXPORT_FORMATS:
        assert registry.EXPORT_FORMATS[name] == registry.get_backend(name).EXPORT_FORMATS
    assert TORCH_FILES == rnncore_torch.files.SUFFIXES
    assert KERAS_FILES == rnncore_tensorflow.files.SUFFIXES
