"""rnncore's PyTorch backend: specs compiled to native `torch.nn.Module`s."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rnncore.crf import Allowed
from rnncore.spec import ModelSpec
from rnncore.weights import Weights

from .convert import load_canonical, to_canonical
from .crf import decode_outputs
from .crf import log_likelihood_and_grads as crf_log_likelihood_and_grads
from .device import FRAMEWORK, device_of, gpu_count, tf32, torch_device
from .distributed import start_distributed
from .export import EXPORT_FORMATS, ExportError, decode_exported, export, run_exported
from .files import load_state_dict_file
from .model import RnnModel
from .native import from_native, owns_native
from .train import Trainer, make_trainer

NAME = "torch"

__all__ = [
    "EXPORT_FORMATS",
    "FRAMEWORK",
    "NAME",
    "ExportError",
    "RnnModel",
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
    "load_state_dict_file",
    "make_trainer",
    "owns",
    "owns_native",
    "predict",
    "run_exported",
    "set_weights",
    "spec_of",
    "start_distributed",
    "tf32",
    "value_and_grad",
]


def build(spec: ModelSpec, weights: Weights, device: str | None = None) -> RnnModel:
    """A `RnnModel` (a plain nn.Module) holding `weights`, in eval mode, on `device` (a resolved
    rnncore device, `cpu` or `cuda:N`; None: the CPU, torch's own default)."""
    model = RnnModel(spec)
    load_canonical(model, spec, weights)
    if device is not None:
        model.to(torch_device(device))
    return model.eval()


def owns(model: Any) -> bool:
    return isinstance(model, RnnModel)


def spec_of(model: RnnModel) -> ModelSpec:
    return model.spec


def get_weights(model: RnnModel) -> Weights:
    params = dict(model.named_parameters())
    return to_canonical(model.spec, lambda path: params[path])


def set_weights(model: RnnModel, weights: Weights) -> None:
    load_canonical(model, model.spec, weights)


def _to_tensors(
    model: RnnModel, inputs: np.ndarray, lengths: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(inputs)).to(device)
    return x, torch.from_numpy(np.ascontiguousarray(lengths))


def predict(model: RnnModel, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model(*_to_tensors(model, inputs, lengths)).cpu().numpy()
    finally:
        model.train(was_training)


def decode(
    model: RnnModel, inputs: np.ndarray, lengths: np.ndarray, allowed: Allowed | None = None
) -> np.ndarray:
    """A tagger's best tag paths (B, T) int64: Viterbi for a CRF head, argmax (or constrained
    Viterbi over log-probabilities, under `allowed`) for a softmax one."""
    head = model.spec.head
    assert head is not None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x, lens = _to_tensors(model, inputs, lengths)
            paths = decode_outputs(head.num_outputs, model.crf, model(x, lens), lens, allowed)
            return paths.cpu().numpy()
    finally:
        model.train(was_training)


def value_and_grad(
    model: RnnModel, inputs: np.ndarray, lengths: np.ndarray, cotangent: np.ndarray
) -> tuple[np.ndarray, Weights, np.ndarray | None]:
    was_training = model.training
    model.eval()
    try:
        x, lens = _to_tensors(model, inputs, lengths)
        if x.is_floating_point():
            x.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        out = model(x, lens)
        if tuple(cotangent.shape) != tuple(out.shape):
            # checked: `out * cot` would broadcast some wrong shapes silently
            raise ValueError(f"cotangent has shape {cotangent.shape}; the outputs have {tuple(out.shape)}")
        cot = torch.from_numpy(np.ascontiguousarray(cotangent)).to(out.device, out.dtype)
        (out * cot).sum().backward()
        params = dict(model.named_parameters())
        grads = to_canonical(model.spec, lambda path: params[path].grad)
        input_grad = x.grad.cpu().numpy() if x.grad is not None else None
        model.zero_grad(set_to_none=True)
        return out.detach().cpu().numpy(), grads, input_grad
    finally:
        model.train(was_training)
