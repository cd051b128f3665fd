"""Where a model runs: the `--device` flag and the `device=` argument, parsed in one place.

Values: `auto` (a GPU when the backend's framework sees one, else the CPU), `cpu`, `cuda` (the
first GPU) and `cuda:N`. This module knows no framework: a backend reports how many GPUs it
sees (`gpu_count()`) and maps a resolved device (`cpu` or `cuda:N`) to its own (torch:
`torch.device("cuda", N)`; TensorFlow: `/GPU:N`, with the GPUs hidden for `cpu`).

Example:
    >>> resolve_device(parse_device("auto"), gpus=0)
    Device(kind='cpu', index=None)
    >>> str(resolve_device(parse_device("cuda"), gpus=2))
    'cuda:0'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KINDS = ("auto", "cpu", "cuda")
_PATTERN = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")
CHOICES = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device string is malformed, or names a device this process does not have."""


@dataclass(frozen=True)
class Device:
    """A parsed device: `kind` is auto, cpu or cuda; `index` the GPU's (cuda only, None = any)."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"


CPU = Device("cpu")


def parse_device(value: str | Device) -> Device:
    """`value` as a `Device`; a malformed one raises `DeviceError` naming what is allowed."""
    if isinstance(value, Device):
        return value
    text = str(value).strip().lower()
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise DeviceError(f"device: got {value!r}; expected {CHOICES}")
    kind, index = match.group(1), match.group(2)
    if index is not None and kind != "cuda":
        raise DeviceError(f"device: got {value!r}; only cuda takes an index (cuda:N)")
    return Device(kind, None if index is None else int(index))


def resolve_device(requested: str | Device, gpus: int, framework: str = "the backend") -> Device:
    """The concrete device (`cpu` or `cuda:N`) for `requested`, given the GPUs `framework` sees.

    `auto` takes GPU 0 when there is one and the CPU otherwise; `cuda`/`cuda:N` without such a
    GPU raise `DeviceError` (never a silent fallback: the user asked for a GPU).
    """
    device = parse_device(requested)
    if device.kind == "cpu":
        return CPU
    if device.kind == "auto":
        return Device("cuda", 0) if gpus > 0 else CPU
    index = device.index or 0
    if gpus == 0:
        raise DeviceError(
            f"device {device}: {framework} sees no GPU on this machine; use --device cpu, "
            "or --device auto to take a GPU only when there is one"
        )
    if index >= gpus:
        raise DeviceError(
            f"device {device}: {framework} sees {gpus} GPU(s), cuda:0 .. cuda:{gpus - 1}; "
            "pick one of those (CUDA_VISIBLE_DEVICES renumbers them from 0)"
        )
    return Device("cuda", index)


def describe(requested: str | Device, placed: Device, framework: str) -> str:
    """What a command says about where it runs: `cuda:0`, or `cpu (auto: torch sees no GPU)`."""
    if parse_device(requested).kind == "auto" and not placed.is_gpu:
        return f"{placed} (auto: {framework} sees no GPU)"
    return str(placed)


def device_for(backend: Any, requested: str | Device | None) -> Device | None:
    """`requested` resolved on a backend module (None stays None: the framework's own placement)."""
    if requested is None:
        return None
    return resolve_device(requested, backend.gpu_count(), framework=backend.FRAMEWORK)
