"""The Keras 3 (TensorFlow backend) compiler for rnncore specs.

`build(spec, weights)` returns a plain functional `keras.Model` with two inputs, the token ids
(int64, `(B, T)`) or features (`(B, T, F)`, spec dtype) and `lengths` (int32, `(B,)`), so it can
be saved and served like any Keras model. The spec it was built from rides along as the Python
attribute `model._rnncore_spec` (see `spec_of`); it is not saved with the model.

Keras picks its backend once, at import: this package asks for TensorFlow unless the caller
chose already, and refuses to run on any other backend.
"""

import os

# Keras reads its backend once, on first import: choose it before importing keras.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up chatter (a failed CUDA probe on CPU machines, oneDNN notices)
# is noise on a CLI; set TF_CPP_MIN_LOG_LEVEL yourself to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

if keras.backend.backend() != "tensorflow":
    raise RuntimeError(
        f"rnncore_tensorflow needs Keras on the TensorFlow backend, but Keras is running on "
        f"{keras.backend.backend()!r} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}). "
        "Set KERAS_BACKEND=tensorflow before anything imports keras, or use rnncore's torch backend."
    )

from .crf import log_likelihood_and_grads as crf_log_likelihood_and_grads
from .device import FRAMEWORK, device_of, gpu_count, tf32
from .distributed import start_distributed
from .export import EXPORT_FORMATS, ExportError, decode_exported, export, run_exported
from .files import load_keras_file
from .model import build, get_weights, owns, set_weights, spec_of
from .native import from_native, owns_native, read_native
from .runtime import decode, predict, value_and_grad
from .train import Trainer, make_trainer

NAME = "tensorflow"

__all__ = [
    "EXPORT_FORMATS",
    "FRAMEWORK",
    "NAME",
    "ExportError",
    "Trainer",
    "build",
    "crf_log_likelihood_and_grads",
    "decode",
    "decode_exported",
    "device_of",
    "export",
    "from_native",
    "get_weights",
    "gpu_count",
    "load_keras_file",
    "make_trainer",
    "owns",
    "owns_native",
    "predict",
    "read_native",
    "run_exported",
    "set_weights",
    "spec_of",
    "start_distributed",
    "tf32",
    "value_and_grad",
]
