"""Devices on TensorFlow: `rnncore.device`'s resolved names as TensorFlow placements.

TensorFlow puts every op on GPU 0 by itself when it sees a GPU, so a `tf.device` scope alone
would not keep a model off the GPU (ops in traced functions land there anyway). `cpu` therefore
hides the GPUs from the process (`tf.config.set_visible_devices`), which TensorFlow allows only
before its runtime starts: later, with GPUs already in use, `cpu` is refused rather than run
half on the GPU. `cuda:N` builds the model's variables under `/GPU:N`.

Keras on a GPU is untested here (the GPU machines rnncore was checked on have no TensorFlow).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from rnncore.device import DeviceError

FRAMEWORK = "tensorflow"
DEVICE_ATTR = "_rnncore_device"


def gpu_count() -> int:
    """GPUs TensorFlow can use (listing them does not start the runtime)."""
    return len(tf.config.list_physical_devices("GPU"))


def use_device(device: str | None) -> None:
    """Keep this process's TensorFlow on the CPU for `cpu` (see the module's docstring)."""
    if device != "cpu" or not tf.config.list_physical_devices("GPU"):
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # the runtime started already; fine if it started without GPUs
        if tf.config.list_logical_devices("GPU"):
            raise DeviceError(
                "device cpu: TensorFlow already runs on the GPU in this process; choose the device "
                "before TensorFlow's first use (or set CUDA_VISIBLE_DEVICES= to hide the GPUs)"
            ) from None


def placement(device: str | None) -> contextlib.AbstractContextManager[Any]:
    """Where new variables go: `/CPU:0`, `/GPU:N`, or TensorFlow's own choice for None."""
    use_device(device)
    if device is None:
        return contextlib.nullcontext()
    return tf.device("/CPU:0" if device == "cpu" else "/GPU:" + device.split(":")[1])


def device_of(model: Any) -> str:
    """The device the model was built for (TensorFlow's own choice: GPU 0 if it sees one)."""
    device = getattr(model, DEVICE_ATTR, None)
    if device is not None:
        return str(device)
    return "cuda:0" if tf.config.list_logical_devices("GPU") else "cpu"


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TensorFloat-32 for float32 matmuls and convolutions on or off, restored afterwards
    (TensorFlow's default is on, on Ampere and newer GPUs; a no-op on the CPU)."""
    saved = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(enabled)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(saved)
