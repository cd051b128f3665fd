"""Devices on torch: `rnncore.device`'s resolved names as `torch.device`s, and TF32 switched.

A model lives where its parameters are; `predict`, `value_and_grad` and the trainer move each
batch there (lengths stay on the CPU, where `pack_padded_sequence` wants them), and every
weight or optimizer slot read back (`get_weights`, checkpoints) is copied to the CPU first, so
a checkpoint written on a GPU resumes on a CPU and back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

FRAMEWORK = "torch"


def gpu_count() -> int:
    """CUDA devices torch sees (0 without a CUDA build or driver)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def torch_device(device: str) -> torch.device:
    """A resolved rnncore device (`cpu`, `cuda:N`) as a `torch.device`."""
    return torch.device(device)


def device_of(model: torch.nn.Module) -> str:
    """Where `model`'s parameters live, as rnncore names it (`cpu`, `cuda:N`)."""
    device = next(model.parameters()).device
    return "cpu" if device.type == "cpu" else f"{device.type}:{device.index or 0}"


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matmuls and cuDNN (convolutions and RNNs) on or off, restored afterwards.

    On Ampere and newer GPUs TF32 rounds float32 multiplicands to 10 mantissa bits (about 1e-3
    relative), far outside the float32 parity tolerance; torch's defaults are off for matmuls
    but on for cuDNN, whose RNN kernels are what an rnncore model runs. A no-op on the CPU.
    """
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
