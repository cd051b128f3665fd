"""Which backend packages exist, found through entry points and imported only when asked for.

A backend is a module (`rnncore_torch`, `rnncore_tensorflow`) exposing the same functions:

    NAME: str                                   # canonical backend name
    FRAMEWORK: str                              # the framework's name, for messages
    build(spec, weights, device=None) -> model  # a native model holding `weights`; device
                                                #   "cpu"/"cuda:N" (see rnncore.device), None:
                                                #   the framework's own placement
    gpu_count() -> int                          # GPUs the framework sees
    device_of(model) -> str                     # "cpu" or "cuda:N"
    tf32(enabled) -> context manager            # TensorFloat-32 on/off, restored on exit
    get_weights(model) -> dict[str, ndarray]    # canonical layout, copies
    set_weights(model, weights) -> None
    spec_of(model) -> ModelSpec
    owns(model) -> bool                         # is this one of my models?
    owns_native(model) -> bool                  # is this any model of my framework?
    from_native(model, **options) -> (ModelSpec, weights)   # import a hand-written model
    EXPORT_FORMATS: tuple[str, ...]             # formats `export` writes
    export(model, path, fmt) -> None            # write the model in a serving format
    run_exported(path, fmt, inputs, lengths) -> ndarray     # run that file, numpy out
    predict(model, inputs, lengths) -> ndarray  # eval mode, checked numpy batch in
    value_and_grad(model, inputs, lengths, cotangent)
        -> (outputs, canonical weight grads, input grads or None)
        # grads of sum(outputs * cotangent), eval mode; input grads for features only
    decode(model, inputs, lengths, allowed=None) -> (B, T) int64   # a tagger's tag paths
        # Viterbi for a CRF head, argmax or constrained Viterbi for softmax (rnncore.crf.decode)
    crf_log_likelihood_and_grads(emissions, tags, lengths, weights, cotangent)
        -> (log-likelihood (B,), grads of sum(ll * cotangent): emissions and crf.* weights)

Nothing outside this module compares backend names as strings.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

# alias -> canonical name
ALIASES = {
    "torch": "torch",
    "pytorch": "torch",
    "tensorflow": "tensorflow",
    "tf": "tensorflow",
    "keras": "tensorflow",
}
# canonical name -> (module, pip extra); used when the entry points are not installed
# (running from a source checkout) and to name the extra in error messages.
DEFAULT_MODULES = {
    "torch": ("rnncore_torch", "torch"),
    "tensorflow": ("rnncore_tensorflow", "tensorflow"),
}

# canonical name -> top-level modules whose classes are that framework's models
NATIVE_ROOTS = {
    "torch": ("torch",),
    "tensorflow": ("keras", "tensorflow", "tf_keras"),
}

_loaded: dict[str, ModuleType] = {}


class BackendError(RuntimeError):
    """A backend name is unknown, or its framework is not installed."""


def canonical_name(name: str) -> str:
    key = str(name).lower()
    if key not in ALIASES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(sorted(ALIASES))}")
    return ALIASES[key]


def available() -> list[str]:
    """Canonical names of the registered backends (whether or not their framework imports)."""
    names = {ep.name for ep in entry_points(group="rnncore.backends")}
    return sorted(names | set(DEFAULT_MODULES))


def _module_name(name: str) -> str:
    for ep in entry_points(group="rnncore.backends"):
        if ep.name == name:
            return ep.value
    return DEFAULT_MODULES[name][0]


def get_backend(name: str) -> ModuleType:
    """The backend module for `name` (an alias is fine), imported on first use."""
    canonical = canonical_name(name)
    if canonical in _loaded:
        return _loaded[canonical]
    extra = DEFAULT_MODULES[canonical][1]
    framework = extra  # each extra is named after the framework it installs
    if canonical == "tensorflow" and "torch" not in sys.modules:
        # Import torch first when both live in one process: the other order can segfault
        # (noted in Keras' own conftest). Only if torch is installed at all.
        with contextlib.suppress(ImportError):
            importlib.import_module("torch")
    try:
        module = importlib.import_module(_module_name(canonical))
    except ImportError as err:
        missing = getattr(err, "name", None) or ""
        if missing.split(".")[0] in (framework, "keras"):
            raise BackendError(
                f"backend {canonical!r} needs {framework}, which is not installed: "
                f"pip install 'rnncore[{extra}]'"
            ) from err
        raise
    _loaded[canonical] = module
    return module


def backend_of(model: Any) -> ModuleType:
    """The backend that built `model` (it must have been loaded to build it)."""
    for module in list(_loaded.values()):
        if module.owns(model):
            return module
    raise BackendError(
        f"{type(model).__name__} is not a model built by rnncore; "
        "build one with rnncore.build(spec, backend=...)"
    )


def backend_for_native(model: Any) -> ModuleType:
    """The backend of the framework `model` belongs to (a torch module, a Keras model).

    Decided from the module names of the model's classes, so no framework is imported to ask.
    """
    roots = {cls.__module__.split(".")[0] for cls in type(model).__mro__}
    for name, framework_roots in NATIVE_ROOTS.items():
        if roots & set(framework_roots):
            module = get_backend(name)
            if module.owns_native(model):
                return module
    raise BackendError(
        f"{type(model).__name__} is neither a torch.nn.Module nor a keras.Model; "
        "rnncore imports models from those two frameworks"
    )


def backend_for_format(fmt: str) -> ModuleType:
    """The backend that writes export format `fmt` (onnx, torchscript, savedmodel, tflite)."""
    for name in available():
        if fmt in EXPORT_FORMATS.get(name, ()):
            return get_backend(name)
    known = sorted(f for formats in EXPORT_FORMATS.values() for f in formats)
    raise BackendError(f"unknown export format {fmt!r}; choose one of {', '.join(known)}")


# canonical name -> export formats its backend writes (kept here so that choosing a format
# imports only the framework that writes it)
EXPORT_FORMATS = {
    "torch": ("onnx", "torchscript"),
    "tensorflow": ("savedmodel", "tflite"),
}
