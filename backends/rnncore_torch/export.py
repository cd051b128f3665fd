"""Serving exports of a `RnnModel`: ONNX (run by onnxruntime) and TorchScript (run by torch.jit).

Both files take two inputs, `inputs` ((B, T) int64 ids or (B, T, F) floats in the spec's
dtype) and `lengths` ((B,) int64), with B and T free, and compute what `RnnModel` computes in
eval mode (the semantics of `rnncore.reference`): padded steps never reach a valid output.

Why an export-only graph (`ExportGraph`) instead of `RnnModel` itself: `RnnModel` packs padded
batches (`pack_padded_sequence` takes the lengths to the CPU as Python data and sorts rows),
which neither exporter turns into a shape-generic graph. `ExportGraph` is built on the model's
own Parameter objects (shared, not copied) and computes the same function without packing:
every direction runs over the full padded row; the forward direction is unaffected by pads
because they come after the valid steps; outputs at padded steps are zeroed with `where` (not a
multiply, so that inf/nan a relu cell may produce on garbage pad features cannot leak); the
backward direction must start at each row's last valid step, which the two formats get
differently:

- TorchScript (`torch.jit.script`, not `trace`: the graph branches on the spec and its shapes
  must stay symbolic) calls the fused ATen kernels (`torch.lstm`/`gru`/`rnn_tanh`/`rnn_relu`,
  what nn.LSTM & co. call) and, for the backward direction, reverses each row within its
  length with a `gather`, runs the reverse weights forward and reverses back. torch 2.13
  deprecates torch.jit (DeprecationWarning on script/save/load: "switch to torch.compile or
  torch.export") but it works, and it is the format LibTorch (C++) loads.
- ONNX is written by torch's dynamo exporter (`torch.onnx.export(dynamo=True)`, which needs
  onnxscript). What failed there, in torch 2.13 / onnxruntime 1.32: `aten.lstm`/`aten.gru` are
  translated to ONNX LSTM/GRU ops, but the exporter's decomposition pass specialises the
  sequence length to the example's (a guard `Eq(T, 5)` from the composite lstm kernel), so the
  file rejects other T; `aten.rnn_tanh`/`rnn_relu` have no ONNX translation; and onnxruntime's
  LSTM/GRU/RNN kernels are float32 only ("does not support double yet"). The legacy
  TorchScript-based exporter (`dynamo=False`) still exists but is deprecated and hits the same
  float32-only kernels. So the ONNX graph runs each layer as one `scan` over time
  (`torch._higher_order_ops.scan`, a torch prototype that the exporter turns into an ONNX
  `Scan`) of a step function per cell, written from the same formulas, both directions stacked
  on a leading axis. At a padded step the state is carried unchanged; the backward direction
  reads the time-flipped sequence, where a row's pads come first, so its state is still zero
  when it reaches step L-1. This exports every cell in both dtypes with B and T dynamic. Two
  onnxruntime gaps remain: no float64 Erf, so a float64 'gelu' head is refused with an
  ExportError; no float64 LeakyRelu, so leaky_relu is written as a `where` (same values).

Dropout is absent: files compute the eval-mode function.

A CRF tagger (`head.crf`) exports to TorchScript with Viterbi inside: the module's `decode(inputs,
lengths)` method returns the tag paths `(B, T)` int64 (0 at padded steps) beside `forward`'s
emission scores. ONNX is refused for it: the Viterbi trace is a Python loop over time, which
the exporter unrolls to the example's length.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import secrets
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnncore.batch import prepare_batch
from rnncore.export import ExportError
from rnncore.spec import ModelSpec

from .crf import viterbi
from .model import RnnModel, reverse_within_length

EXPORT_FORMATS = ("onnx", "torchscript")

# the spec travels inside each file (ONNX metadata, a TorchScript extra file) so that
# `run_exported` can check a batch exactly as `rnncore.predict` does
SPEC_KEY = "rnncore.spec.json"

# ONNX's protobuf cannot hold a single file over 2 GiB
_ONNX_MAX_BYTES = 2**31

# example batch the ONNX exporter traces with; neither size may be 0 or 1, which torch.export
# would specialise instead of keeping symbolic
_EXAMPLE_BATCH, _EXAMPLE_STEPS = 2, 3


# ---- the export graph -------------------------------------------------------------------


class _Weights(nn.Module):
    """One direction's weights: the model's own Parameter objects, registered here too (shared,
    not copied: a later update to the model shows up in the graph)."""

    def __init__(self, rnn: nn.Module, suffix: str):
        super().__init__()
        self.w_ih = getattr(rnn, f"weight_ih_l0{suffix}")
        self.w_hh = getattr(rnn, f"weight_hh_l0{suffix}")
        # LSTM/RNN: bias_hh is frozen at zero but kept, so the graph is exactly the model's
        self.b_ih = getattr(rnn, f"bias_ih_l0{suffix}")
        self.b_hh = getattr(rnn, f"bias_hh_l0{suffix}")


class _Layer(nn.Module):
    """One recurrent layer -> (B, T, D*H): directions side by side, the residual, zero at pads."""

    def __init__(self, rnn: nn.Module, spec: ModelSpec, residual: bool):
        super().__init__()
        self.fwd = _Weights(rnn, "")
        self.bwd = _Weights(rnn, "_reverse") if spec.encoder.bidirectional else None
        self.cell = spec.encoder.cell
        self.nonlinearity = spec.encoder.nonlinearity
        self.hidden_size = spec.encoder.hidden_size
        self.residual = residual

    def _finish(self, out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.residual:
            out = out + x
        return torch.where(mask[:, :, None], out, torch.zeros_like(out))


class FusedLayer(_Layer):
    """TorchScript: the fused ATen kernel per direction; the backward one runs on each row
    reversed within its length, and its output is reversed back."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        fwd = self.fwd
        out = self._run(x, [fwd.w_ih, fwd.w_hh, fwd.b_ih, fwd.b_hh])
        bwd = self.bwd
        if bwd is not None:
            back = self._run(reverse_within_length(x, lengths), [bwd.w_ih, bwd.w_hh, bwd.b_ih, bwd.b_hh])
            out = torch.cat([out, reverse_within_length(back, lengths)], dim=2)
        return self._finish(out, x, mask)

    def _run(self, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size)
        # positional flags: has_biases, num_layers, dropout, train, bidirectional, batch_first
        if self.cell == "lstm":
            return torch.lstm(x, [h0, h0], params, True, 1, 0.0, False, False, True)[0]
        if self.cell == "gru":
            return torch.gru(x, h0, params, True, 1, 0.0, False, False, True)[0]
        if self.nonlinearity == "relu":
            return torch.rnn_relu(x, h0, params, True, 1, 0.0, False, False, True)[0]
        return torch.rnn_tanh(x, h0, params, True, 1, 0.0, False, False, True)[0]


class ScanLayer(_Layer):
    """ONNX: one scan over time (-> ONNX Scan) of a step function, both directions at once.

    The state is held at padded steps. The backward direction reads the time-flipped sequence,
    in which a row's pads come first: its state stays zero through them and starts at step L-1.
    Directions are stacked on a leading axis, so one step is one batched matmul, and a
    bidirectional layer costs one scan, not two (each scan adds seconds to the export).
    """

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from torch._higher_order_ops.scan import scan

        weights = [self.fwd] if self.bwd is None else [self.fwd, self.bwd]
        # every step's input projection at once, outside the loop: (D, B, T, G*H)
        gates_x = torch.stack([nn.functional.linear(x, w.w_ih, w.b_ih) for w in weights])
        valid = mask[None, :, :, None].expand(len(weights), -1, -1, -1)
        if self.bwd is not None:
            gates_x = torch.stack([gates_x[0], gates_x[1].flip(1)])
            valid = torch.stack([valid[0], valid[1].flip(1)])
        w_hh = torch.stack([w.w_hh for w in weights]).transpose(1, 2)
        b_hh = torch.stack([w.b_hh for w in weights])[:, None, :]

        def step(
            carry: tuple[torch.Tensor, ...], xs: tuple[torch.Tensor, torch.Tensor]
        ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
            return self._step(carry, xs[0], xs[1], torch.baddbmm(b_hh, carry[0], w_hh))

        h0 = x.new_zeros(len(weights), x.shape[0], self.hidden_size)
        init = (h0, torch.zeros_like(h0)) if self.cell == "lstm" else (h0,)
        # scan walks the leading axis: time-major (T, D, B, .)
        _, ys = scan(step, init, (gates_x.permute(2, 0, 1, 3), valid.permute(2, 0, 1, 3)))
        ys = ys.permute(1, 2, 0, 3)  # (D, B, T, H)
        out = ys[0] if self.bwd is None else torch.cat([ys[0], ys[1].flip(1)], dim=2)
        return self._finish(out, x, mask)

    def _step(
        self,
        carry: tuple[torch.Tensor, ...],
        gates_x: torch.Tensor,
        valid: torch.Tensor,
        gates_h: torch.Tensor,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        h = carry[0]
        if self.cell == "lstm":
            i, f, g, o = (gates_x + gates_h).chunk(4, dim=-1)
            c = torch.sigmoid(f) * carry[1] + torch.sigmoid(i) * torch.tanh(g)
            new_h = torch.sigmoid(o) * torch.tanh(c)
            state: tuple[torch.Tensor, ...] = (torch.where(valid, new_h, h), torch.where(valid, c, carry[1]))
        elif self.cell == "gru":
            new_h = _gru(gates_x, gates_h, h)
            state = (torch.where(valid, new_h, h),)
        else:
            z = gates_x + gates_h
            new_h = torch.relu(z) if self.nonlinearity == "relu" else torch.tanh(z)
            state = (torch.where(valid, new_h, h),)
        # a fresh tensor, not the carry: scan forbids outputs that alias each other
        return state, torch.where(valid, new_h, torch.zeros_like(new_h))


def _gru(gates_x: torch.Tensor, gates_h: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    # reset-after form, as torch and the canonical layout define it: r scales W_hn h + b_hn
    x_r, x_z, x_n = gates_x.chunk(3, dim=-1)
    h_r, h_z, h_n = gates_h.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1.0 - z) * n + z * h


class ExportGraph(nn.Module):
    """`RnnModel`'s eval-mode function without packing, on the model's Parameters.

    `forward(inputs, lengths)`: both required (an exported graph has fixed inputs).
    """

    def __init__(self, model: RnnModel, layer: type[_Layer]):
        super().__init__()
        spec = model.spec
        self.embedding = model.embedding
        self.layers = nn.ModuleList(
            layer(rnn, spec, residual) for rnn, residual in zip(model.encoder, model.residual, strict=True)
        )
        self.attention = model.attention
        self.dense = model.dense
        self.crf = model.crf
        self.pooling = spec.pooling
        self.hidden_size = spec.encoder.hidden_size
        self.bidirectional = spec.encoder.bidirectional
        self.mask_outputs = spec.per_step_output and spec.head is not None
        self.activation = spec.head.activation if spec.head is not None else "relu"
        # the slope as a tensor in the model's dtype, made here: in a float64 graph the ONNX
        # exporter stores a Python float (x * 0.2, torch.full) as float32 (0.2000000030), and
        # TorchScript's torch.tensor(float, dtype=float64) goes through float32 too
        slope = spec.head.negative_slope if spec.head is not None else 0.0
        device = next(model.parameters()).device
        dtype = getattr(torch, spec.dtype)
        self.negative_slope = nn.Buffer(torch.tensor(slope, dtype=dtype, device=device), persistent=False)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(inputs) if self.embedding is not None else inputs
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        for layer in self.layers:
            x = layer(x, lengths, mask)
        out = self._head(self._pool(x, lengths, mask))
        if self.mask_outputs:
            out = torch.where(mask[:, :, None], out, torch.zeros_like(out))
        return out

    @torch.jit.export
    def decode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A CRF tagger's Viterbi tag paths (B, T) int64, 0 at padded steps."""
        if self.crf is not None:
            emissions = self.forward(inputs, lengths)
            return viterbi(emissions, lengths, self.crf.transitions, self.crf.start, self.crf.end)
        raise RuntimeError("decode is for a CRF tagger; this model has no CRF")

    def _pool(self, seq: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "none":
            return seq
        if self.pooling == "last":
            index = (lengths - 1)[:, None, None].expand(-1, 1, seq.shape[2])
            last = seq.gather(1, index).squeeze(1)
            if not self.bidirectional:
                return last
            # the backward direction ends at step 0
            return torch.cat([last[:, : self.hidden_size], seq[:, 0, self.hidden_size :]], dim=1)
        if self.pooling == "mean":
            return seq.sum(dim=1) / lengths.to(seq.dtype)[:, None]
        if self.pooling == "max":
            return seq.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1)
        assert self.attention is not None
        return self.attention(seq, mask)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.dense) - 1
        for i, dense in enumerate(self.dense):
            x = dense(x)
            if i < last:
                x = self._activate(x)
        return x

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(x)
        if self.activation == "leaky_relu":
            # not F.leaky_relu: onnxruntime has no float64 LeakyRelu kernel (same values)
            return torch.where(x >= 0, x, x * self.negative_slope)
        if self.activation == "tanh":
            return torch.tanh(x)
        return nn.functional.gelu(x, approximate="none")


# ---- writing ----------------------------------------------------------------------------


def export(model: RnnModel, path: str | Path, fmt: str) -> None:
    """Write `model` (eval mode) to one file at `path` in format `fmt` ("onnx", "torchscript").

    The file appears whole or not at all: it is written next to `path` and renamed into place,
    so a failure leaves any previous file untouched.
    """
    writer = _WRITERS[_check_format(fmt)]
    if not isinstance(model, RnnModel):
        raise ExportError(
            f"export takes a model built by rnncore.build(..., backend='torch'), not {type(model).__name__}"
        )
    was_training = model.training
    model.eval()  # the export graph shares the model's submodules; restored below
    try:
        _write_atomically(Path(path), lambda tmp: writer(model, tmp))
    finally:
        model.train(was_training)


def _check_format(fmt: str) -> str:
    if fmt not in EXPORT_FORMATS:
        raise ExportError(
            f"unknown export format {fmt!r}; the torch backend writes {', '.join(EXPORT_FORMATS)}"
        )
    return fmt


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    # a random name in the same folder: os.replace is atomic only within one file system
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_torchscript(model: RnnModel, path: Path) -> None:
    graph = ExportGraph(model, FusedLayer).eval()
    scripted = torch.jit.script(graph)
    torch.jit.save(scripted, str(path), _extra_files={SPEC_KEY: model.spec.to_json()})


def _write_onnx(model: RnnModel, path: Path) -> None:
    if importlib.util.find_spec("onnxscript") is None:
        raise ImportError(
            "ONNX export needs onnxscript (and onnxruntime to run it): pip install 'rnncore[export]'"
        )
    _check_onnx_runs(model.spec)
    if model.crf is not None:
        raise ExportError(
            "ONNX export of a CRF tagger is not supported: its Viterbi decoding would not be in the "
            "graph (the exporter unrolls its loop over time). Export 'torchscript' (Viterbi inside, "
            "`module.decode`) or 'savedmodel'"
        )
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size >= _ONNX_MAX_BYTES:
        raise ExportError(
            f"the weights take {size / 2**30:.1f} GiB; one ONNX file holds under 2 GiB: export 'torchscript'"
        )
    graph = ExportGraph(model, ScanLayer).eval()
    batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
    example = _example_batch(model)
    with torch.no_grad(), warnings.catch_warnings(), _quiet_torchlib_registry():
        # torch-internal noise, nothing a caller can act on: both inputs share the batch axis
        # (the exporter says it drops the duplicate name), and a pytree deprecation inside torch
        warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used")
        warnings.filterwarnings(
            "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
        )
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            input_names=["inputs", "lengths"],
            output_names=["outputs"],
            dynamic_shapes={"inputs": {0: batch, 1: steps}, "lengths": {0: batch}},
            verbose=False,
        )
    assert program is not None
    program.model.metadata_props[SPEC_KEY] = model.spec.to_json()
    program.save(str(path), external_data=False)


@contextlib.contextmanager
def _quiet_torchlib_registry() -> Iterator[None]:
    # the exporter logs a warning per missing optional torchvision op on every export
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_onnx_runs(spec: ModelSpec) -> None:
    # onnxruntime has no float64 Erf kernel; a file it cannot load is no use to `run_exported`
    if spec.dtype == "float64" and spec.head is not None and spec.head.activation == "gelu":
        raise ExportError(
            "ONNX export of head activation 'gelu' in float64 is not supported: onnxruntime has no "
            "float64 Erf kernel. Export 'torchscript', or use float32 or another activation"
        )


def _example_batch(model: RnnModel) -> tuple[torch.Tensor, torch.Tensor]:
    spec = model.spec
    device = next(model.parameters()).device
    shape: tuple[int, ...] = (_EXAMPLE_BATCH, _EXAMPLE_STEPS)
    if spec.input.kind == "tokens":
        inputs = torch.ones(shape, dtype=torch.int64, device=device)
    else:
        assert spec.input.feature_dim is not None
        inputs = torch.ones((*shape, spec.input.feature_dim), dtype=getattr(torch, spec.dtype), device=device)
    lengths = torch.full((_EXAMPLE_BATCH,), _EXAMPLE_STEPS, dtype=torch.int64, device=device)
    return inputs, lengths


_WRITERS: dict[str, Callable[[RnnModel, Path], None]] = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
}


# ---- running ----------------------------------------------------------------------------


def run_exported(path: str | Path, fmt: str, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Run an exported file with its own runtime (onnxruntime on CPU, torch.jit.load) -> numpy.

    The batch is checked against the spec stored in the file, as `rnncore.predict` checks it.
    """
    runner = _RUNNERS[_check_format(fmt)]
    return runner(Path(path), inputs, lengths)


def _prepare(spec_json: str | None, inputs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not spec_json:  # a file not written by `export`: trust the caller's arrays
        return np.ascontiguousarray(inputs), np.ascontiguousarray(lengths, dtype=np.int64)
    x, lens = prepare_batch(ModelSpec.from_json(spec_json), inputs, lengths)
    return np.ascontiguousarray(x), np.ascontiguousarray(lens)


def _run_onnx(path: Path, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("running an ONNX file needs onnxruntime: pip install 'rnncore[export]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec_json = session.get_modelmeta().custom_metadata_map.get(SPEC_KEY)
    x, lens = _prepare(spec_json, inputs, lengths)
    return np.asarray(session.run(["outputs"], {"inputs": x, "lengths": lens})[0])


def _run_torchscript(path: Path, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    extra = {SPEC_KEY: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    x, lens = _prepare(extra[SPEC_KEY], inputs, lengths)
    with torch.inference_mode():
        return module(torch.from_numpy(x), torch.from_numpy(lens)).numpy()


def decode_exported(path: str | Path, fmt: str, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A CRF tagger's tag paths (B, T) int64 from its exported file (TorchScript's `decode`)."""
    if _check_format(fmt) != "torchscript":
        raise ExportError(f"{fmt} files of rnncore hold no Viterbi decoder; TorchScript files do")
    extra = {SPEC_KEY: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    x, lens = _prepare(extra[SPEC_KEY], inputs, lengths)
    with torch.inference_mode():
        return module.decode(torch.from_numpy(x), torch.from_numpy(lens)).numpy()


_RUNNERS: dict[str, Callable[[Path, np.ndarray, np.ndarray], np.ndarray]] = {
    "onnx": _run_onnx,
    "torchscript": _run_torchscript,
}
