"""Import a hand-written `torch.nn.Module` as an rnncore spec and canonical weights.

    spec, weights = rnncore.from_native(model)                   # read the forward with torch.fx
    spec, weights = rnncore.from_native(model, pooling="mean")   # declare it; layers in __init__ order

What is read, and how
---------------------
Traced (the default). `torch.fx` traces `forward` symbolically, keeping the functions of
`torch.nn.utils.rnn` (pack_padded_sequence, pad_packed_sequence) as opaque calls so that
packed forwards trace. The graph is then read op by op from the first argument (token ids or
features) to the returned tensor; every op on that path must be one of the idioms below,
anything else is refused with `UnsupportedNativeModel` naming the op. Further arguments
(`lengths`) and shapes may be used freely, as long as they never mix with the data.

- layers: nn.Embedding, nn.LSTM / nn.GRU / nn.RNN (one module with `num_layers`, or several
  stacked modules of the same cell and size), nn.Linear, nn.ReLU / LeakyReLU / Tanh / GELU
  (or torch.relu, F.leaky_relu, ... in the forward), nn.Dropout / F.dropout, nn.Identity,
  transposes of (batch, time) and initial states made by torch.zeros.
- pooling `last`: the last layer's final state, `h_n[-1]` (unidirectional) or
  `torch.cat((h_n[-2], h_n[-1]), dim=1)` (bidirectional, either order; h_n is [num_layers * directions, B, H],
  layer-major, forward before backward), `h_n.squeeze(0)` for one unidirectional layer, or
  the output at step -1 of an unpacked unidirectional run.
- pooling `mean`: `out.sum(dim=time) / lengths` on zero-padded pad_packed_sequence output,
  or `out.mean(dim=time)` on an unpacked run.
- pooling `max`: `out.max(dim=time)[0]` / `.values` / `amax`, on an unpacked run or on
  pad_packed_sequence output whose padding_value cannot win (any value <= -1 for tanh-bounded
  cells, <= 0 for relu RNNs, e.g. float("-inf")).
- pooling `none`: a Linear applied to every step (tagging), or the steps returned as they are.

Declared (`pooling=` given; also the way out when tracing fails, e.g. a forward with
data-dependent Python control flow). The forward is not read: the leaf modules are taken in
registration order (the order `__init__` assigns them), pooling is what the option says,
and functional ops in the forward are invisible to the reader; the verification below sees
them.

Verified. Either reading is checked by `rnncore.native.verify`: the module (eval mode, no
gradients, its attributes put back afterwards) runs a padded probe batch twice, given the
lengths when its forward takes them (a second required argument, or an optional one whose
name contains "len") and (time, batch) inputs when it reads them; the import must match it
within tolerance or is refused. A forward with more required arguments is not called, and
the import says so in a warning.

More idioms read exactly: `Variable(...)`, `.cuda()`, `.to(device)` on zero states; an
eval-mode `nn.BatchNorm1d` right before a head Linear (after pooling or a hidden activation)
folded into that Linear; `cat((h_n[-1], h_n[-2]), 1)` (backward first), read by swapping
the halves of the first Linear's input columns; all of one layer's h_n rows, batch first and
flattened (`h_n.transpose(0, 1).contiguous().view(B, -1)`), which is `last` pooling.

Padding. A traced forward that packs its input (`pack_padded_sequence`) skips padded steps
as rnncore does, so the embedding's `padding_idx` becomes the spec's. A forward that feeds
the padded tensor to the RNN runs over the padding as ordinary steps; the exact equivalent
is a spec with `padding_idx=None` (every step valid), so that is what it gets. Declared
imports assume the forward skips padding (keeps `padding_idx`). rnncore derives lengths as
"up to the last non-padding id"; the native forward uses whatever lengths its caller passes.

Dropout only acts in training, so it never changes the imported function. Dropout before
pooling (after the embedding, between or after RNN layers, nn.LSTM's own `dropout=` between
layers) becomes `encoder.dropout`; after pooling, `head.dropout`; each part keeps its largest
rate. rnncore's encoder dropout follows every layer, nn.LSTM's only the inner ones, so
training differs slightly; eval outputs are the same.

Outputs. rnncore returns logits: a final nn.Sigmoid (task multilabel), nn.Softmax or
nn.LogSoftmax (task classification, or tagging per step) is recorded as the task and left
to the caller to apply. rnncore is batch first; a forward that reads (time, batch) inputs is
imported all the same and its caller transposes. With per-step outputs rnncore zeroes padded
steps, while the native module leaves there whatever its forward computes.

CRF: a `torchcrf.CRF` submodule (pytorch-crf) beside a tagger whose forward returns the
emission scores becomes the spec's CRF head (`head.crf`), its scores the `crf.*` weights
(pytorch-crf's `transitions[i, j]` is i -> j, as rnncore's). The PyTorch BiLSTM-CRF tutorial's
shape (a `transitions` Parameter on the model, to <- from, with `<START>`/`<STOP>` tags in its
`tag_to_ix`) is read too, declared (`pooling="none"`: its forward decodes one sentence in
Python loops, which torch.fx cannot trace); see `_with_tutorial_crf`. The tutorial draws a
random initial LSTM state on every call (`init_hidden`); rnncore's starts from zeros, as a
tagger served for real should.

Weights: nn.LSTM and nn.RNN add two biases that are only ever summed, so the canonical `b` is
`bias_ih + bias_hh` (equal up to float rounding); GRU keeps both (torch's GRU is the
reset-after form, as canonical). `bias=False` layers get zero biases. The spec's dtype is the
parameters' (float32 or float64, all alike). A model built by rnncore comes back as it is.

Limits of the traced reading: the forward's first argument must be the input; lengths must
be passed in (lengths computed from the ids, e.g. `(text != pad).sum(1)`, are refused: they
count pad ids inside a row, rnncore's do not); casts of the data other than `ids.long()`,
masks (`masked_fill`), residual additions and anything else not listed above are refused.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import operator
import os
import re
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.nn.utils.rnn as rnn_utils
from torch import fx, nn
from torch.autograd import Variable

from rnncore.native import NativeReading, NativeRun, UnsupportedNativeModel, fold_normalization
from rnncore.spec import TASKS, EncoderSpec, HeadSpec, InputSpec, ModelSpec
from rnncore.weights import Weights, directions, head_layer_names, layer_prefix

from .device import tf32
from .model import RnnModel

POOLINGS = ("last", "mean", "max", "none")

_CELLS: dict[type[nn.Module], str] = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}
_FINALS: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid",
    nn.Softmax: "softmax",
    nn.LogSoftmax: "log_softmax",
}
_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def owns_native(model: Any) -> bool:
    """Is `model` a torch module (hand-written or built by rnncore)?"""
    return isinstance(model, nn.Module)


def from_native(
    model: nn.Module, *, pooling: str | None = None, task: str | None = None
) -> tuple[ModelSpec, Weights]:
    """`rnncore.from_native` for torch modules: read (see `read_native`), then verified."""
    from rnncore.native import from_native as verified_import

    return verified_import(model, pooling=pooling, task=task)


def read_native(model: nn.Module, *, pooling: str | None = None, task: str | None = None) -> NativeReading:
    """The spec and canonical weights of a hand-written torch model (see the module docstring),
    and how to run the model on the same batch (`rnncore.native.verify` does).

    Args:
        model: an nn.Module: embedding or features -> recurrent layers -> pooling -> Linear head.
        pooling: None reads the forward with torch.fx; "last", "mean", "max" or "none"
            declares how the forward pools and reads the layers in registration order (the
            import is still verified against the model's own outputs).
        task: the head's task; None infers it (tagging for per-step outputs, multilabel after
            a final Sigmoid, else classification). "regression" must be asked for.
    Raises:
        UnsupportedNativeModel: a layer or op has no exact rnncore equivalent (`.layer`
            names it, `.reason` says why), or the forward cannot be traced and no pooling
            was declared.
    """
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; expected None (read the forward) or one of {POOLINGS}")
    if task is not None and task not in TASKS:
        raise ValueError(f"task={task!r}; expected one of {TASKS}")
    name = type(model).__name__
    if isinstance(model, RnnModel):  # built by rnncore: its spec is at hand, nothing to read
        from . import get_weights, predict  # here: the package imports this module

        run = NativeRun(lambda inputs, lengths: predict(model, inputs, lengths))
        return NativeReading(name, model.spec, get_weights(model), run)
    layers = _GraphReader(model, _trace(model)).read() if pooling is None else _read_declared(model, pooling)
    spec = _spec(layers, _dtype(layers), task)
    weights = _canonical_weights(layers, spec)
    crf = _torchcrf_module(model)
    if crf is not None:
        spec, weights = _with_torchcrf(spec, weights, *crf)
    elif isinstance(getattr(model, "transitions", None), nn.Parameter):
        spec, weights = _with_tutorial_crf(spec, weights, model)
    return NativeReading(name, spec, weights, _native_run(model, layers))


def _native_run(model: nn.Module, layers: _Layers) -> NativeRun:
    activation = "linear" if layers.final is None else layers.final[1]
    takes_lengths, why_not = _arguments(model)
    if why_not:
        return NativeRun(None, activation, layers.skips_padding, why_not)

    def call(inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return _call(model, inputs, lengths if takes_lengths else None, layers.time_first)

    return NativeRun(call, activation, layers.skips_padding, preserving=lambda: _attributes_kept(model))


def _arguments(model: nn.Module) -> tuple[bool, str]:
    """(does forward take the lengths, why it cannot be called) from its signature."""
    params = [
        p for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]  # fmt: skip
    required = [p.name for p in params if p.default is p.empty]
    if not required or len(required) > 2:
        return False, (
            f"forward takes {len(required)} required arguments ({', '.join(required)}); rnncore can "
            "call it with the input, or the input and the lengths"
        )
    second_is_lengths = len(params) > 1 and "len" in params[1].name.lower()
    return len(required) == 2 or second_is_lengths, ""


def _call(model: nn.Module, inputs: np.ndarray, lengths: np.ndarray | None, time_first: bool) -> np.ndarray:
    """The module's eval-mode output for a batch-first numpy batch, batch first."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.from_numpy(np.ascontiguousarray(inputs.swapaxes(0, 1) if time_first else inputs))
    args = (x.to(device),) if lengths is None else (x.to(device), torch.from_numpy(lengths))
    was_training = model.training
    model.eval()  # dropout off, BatchNorm on its running statistics: what the import computes
    try:
        # TF32 off: cuDNN's RNNs use it by default on a GPU, and it would refuse an exact import
        with torch.no_grad(), tf32(False):
            out = model(*args)
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise UnsupportedNativeModel(
            f"{type(model).__name__}.forward",
            f"returns {type(out).__name__}; rnncore models return one tensor",
        )
    if time_first and out.dim() == 3 and out.shape[:2] == x.shape[:2]:
        out = out.transpose(0, 1)  # per-step outputs of a (time, batch) forward
    return out.detach().cpu().numpy()


# ---- a CRF beside the tagger: pytorch-crf's, or the PyTorch BiLSTM-CRF tutorial's ---------------

# the tutorial's names for its two extra tags
TUTORIAL_START, TUTORIAL_STOP = "<START>", "<STOP>"


def _with_tutorial_crf(spec: ModelSpec, weights: Weights, model: nn.Module) -> tuple[ModelSpec, Weights]:
    """The PyTorch BiLSTM-CRF tutorial's shape: a `transitions` Parameter on the model itself,
    `transitions[i, j]` the score of tag j followed by tag i (to, from), over a tag set that
    includes `<START>` and `<STOP>` (named in the model's `tag_to_ix`).

    rnncore's CRF keeps the real tags only: transitions are transposed to (from, to); the
    `<START>` column becomes `crf.start`, the `<STOP>` row `crf.end`; the two extra tags' rows of
    the emission layer are dropped (a path never visits them: the tutorial's own Viterbi only
    leaves START and enters STOP).
    """
    where = f"{type(model).__name__}.transitions"
    tags = getattr(model, "tag_to_ix", None)
    head = spec.head
    if not isinstance(tags, dict) or TUTORIAL_START not in tags or TUTORIAL_STOP not in tags:
        raise UnsupportedNativeModel(
            where,
            f"a transitions Parameter outside any layer, read as the PyTorch BiLSTM-CRF tutorial's, needs "
            f"its tag_to_ix dict with {TUTORIAL_START!r} and {TUTORIAL_STOP!r} tags",
        )
    if head is None or head.task != "tagging" or head.hidden:
        raise UnsupportedNativeModel(where, "a CRF needs one Linear that scores every step's tags")
    start, stop = tags[TUTORIAL_START], tags[TUTORIAL_STOP]
    real = [i for i in range(head.num_outputs) if i not in (start, stop)]
    transitions = model.transitions
    assert isinstance(transitions, torch.Tensor)  # from_native checked it is a Parameter
    scores = _array(transitions, spec.dtype)  # [to, from]
    if scores.shape != (head.num_outputs, head.num_outputs):
        raise UnsupportedNativeModel(
            where, f"shape {scores.shape}; the tag layer scores {head.num_outputs} tags"
        )
    spec = spec.replace(head={**head.to_dict(), "num_outputs": len(real), "crf": True})
    return spec, {
        **weights,
        "head.output.weight": weights["head.output.weight"][real],
        "head.output.bias": weights["head.output.bias"][real],
        "crf.transitions": np.ascontiguousarray(scores[np.ix_(real, real)].T),
        "crf.start": scores[real, start].copy(),
        "crf.end": scores[stop, real].copy(),
    }


def _torchcrf_module(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The model's `torchcrf.CRF` submodule (pytorch-crf), found by its class' package, so that
    torchcrf need not be installed to import other models; None without one."""
    found = [(name, m) for name, m in model.named_modules() if _is_torchcrf(m)]
    if len(found) > 1:
        raise UnsupportedNativeModel(found[1][0], "a second torchcrf.CRF; a tagger has one CRF head")
    return found[0] if found else None


def _is_torchcrf(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "torchcrf"


def _with_torchcrf(
    spec: ModelSpec, weights: Weights, where: str, crf: nn.Module
) -> tuple[ModelSpec, Weights]:
    """`spec` with a CRF head holding pytorch-crf's scores: its `transitions[i, j]` scores tag i
    followed by tag j, as rnncore's does; `start_transitions`/`end_transitions` are start/end.

    The forward must return the CRF's emissions (the per-step tag scores pytorch-crf's
    `CRF.forward` and `CRF.decode` take), as pytorch-crf's own examples write taggers.
    """
    head = spec.head
    if head is None or head.task != "tagging":
        raise UnsupportedNativeModel(
            where, "a CRF needs per-step tag scores; the forward does not return them"
        )
    if getattr(crf, "num_tags", None) != head.num_outputs:
        raise UnsupportedNativeModel(
            where,
            f"the CRF has {getattr(crf, 'num_tags', '?')} tags but the forward scores {head.num_outputs}",
        )
    spec = spec.replace(head={**head.to_dict(), "crf": True})
    parts = {"transitions": "transitions", "start": "start_transitions", "end": "end_transitions"}
    return spec, {
        **weights,
        **{f"crf.{ours}": _array(getattr(crf, theirs), spec.dtype) for ours, theirs in parts.items()},
    }


# ---- what was found ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Activation:
    where: str
    kind: str  # relu | leaky_relu | tanh | gelu (spec names)
    negative_slope: float = 0.01


@dataclass
class _Layers:
    """The model's layers in forward order, as the builder accepted them."""

    embedding: tuple[str, nn.Embedding] | None = None
    rnns: list[tuple[str, nn.RNNBase]] = field(default_factory=list)
    pooling: str | None = None
    linears: list[tuple[str, nn.Linear]] = field(default_factory=list)
    activations: list[_Activation] = field(default_factory=list)
    final: tuple[str, str] | None = None  # (where, sigmoid | softmax | log_softmax)
    encoder_dropout: float = 0.0
    head_dropout: float = 0.0
    skips_padding: bool = True  # the recurrent layers stop at each row's length
    time_first: bool = False  # the forward reads (time, batch) inputs
    # inference-mode BatchNorm1d folded into the Linear after it: linear index -> (where, module)
    folds: dict[int, tuple[str, nn.BatchNorm1d]] = field(default_factory=dict)
    backward_first: bool = False  # pooled [backward, forward] halves: the first Linear's columns swap


class _Builder:
    """Accepts layers in forward order and refuses any that break rnncore's fixed shape:

    input -> [embedding] -> steps -> recurrent layers -> encoded -> pooling -> pooled
      -> Linear (activation Linear)* -> head -> [final activation] -> final
    """

    def __init__(self) -> None:
        self.layers = _Layers()
        self.stage = "input"
        self._after_linear = False
        self._norm: tuple[str, nn.BatchNorm1d] | None = None  # waiting for the Linear it folds into

    # -- encoder --
    def embedding(self, where: str, module: nn.Embedding) -> None:
        if self.layers.embedding is not None:
            raise UnsupportedNativeModel(
                where, f"a second embedding (after {self.layers.embedding[0]!r}); rnncore has one input"
            )
        if self.stage != "input":
            raise UnsupportedNativeModel(where, f"an embedding of the {self.stage} tensor, not of the input")
        if module.max_norm is not None:
            raise UnsupportedNativeModel(
                where, f"max_norm={module.max_norm} renormalises rows at lookup; rnncore's is a plain lookup"
            )
        self.layers.embedding = (where, module)
        self.stage = "steps"

    def rnn(self, where: str, module: nn.RNNBase) -> None:
        if self.stage not in ("input", "steps", "encoded"):
            raise UnsupportedNativeModel(
                where, f"a recurrent layer after {self.stage} features; rnncore's come before pooling"
            )
        _check_rnn(where, module)
        expected = self._rnn_input_size(where, module)
        if expected is not None and module.input_size != expected:
            raise UnsupportedNativeModel(
                where, f"input_size={module.input_size} but the layer before it gives {expected} features"
            )
        if module.num_layers > 1:  # torch applies `dropout` between its own layers only
            self._dropout(where, float(module.dropout), encoder=True)
        self.layers.rnns.append((where, module))
        self.stage = "encoded"

    def _rnn_input_size(self, where: str, module: nn.RNNBase) -> int | None:
        if not self.layers.rnns:
            emb = self.layers.embedding
            return None if emb is None else emb[1].embedding_dim
        first_where, first = self.layers.rnns[0]
        for attr in ("mode", "hidden_size", "bidirectional", "nonlinearity"):
            if getattr(module, attr, None) != getattr(first, attr, None):
                raise UnsupportedNativeModel(
                    where,
                    f"{attr}={getattr(module, attr, None)!r} differs from {first_where!r} "
                    f"({getattr(first, attr, None)!r}); stacked recurrent layers must match",
                )
        prev = self.layers.rnns[-1][1]
        return prev.hidden_size * (2 if prev.bidirectional else 1)

    def dropout(self, where: str, rate: float) -> None:
        if self.stage == "final":
            raise UnsupportedNativeModel(where, "dropout after the output activation")
        self._dropout(where, rate, encoder=self.stage in ("input", "steps", "encoded"))

    def _dropout(self, where: str, rate: float, encoder: bool) -> None:
        if not 0 <= rate < 1:
            raise UnsupportedNativeModel(where, f"dropout rate {rate} is outside [0, 1)")
        if encoder:
            self.layers.encoder_dropout = max(self.layers.encoder_dropout, rate)
        else:
            self.layers.head_dropout = max(self.layers.head_dropout, rate)

    def pool(self, where: str, kind: str) -> None:
        if self.stage != "encoded":
            raise UnsupportedNativeModel(where, f"pools the {self.stage} tensor; rnncore pools RNN outputs")
        self.layers.pooling = kind
        self.stage = "pooled"

    # -- head --
    def batchnorm(self, where: str, module: nn.BatchNorm1d) -> None:
        """Inference-mode BatchNorm1d is an affine map per feature: folded into the next Linear."""
        before_linear = self.stage == "pooled" or (self.stage == "head" and not self._after_linear)
        if not before_linear or self.layers.pooling == "none" or self._norm is not None:
            raise UnsupportedNativeModel(
                where,
                f"BatchNorm1d on the {self.stage} tensor; rnncore folds BatchNorm1d only into a Linear "
                "that directly follows it, on pooled features (after pooling or a hidden activation)",
            )
        if module.running_mean is None or module.running_var is None:
            raise UnsupportedNativeModel(
                where, "track_running_stats=False normalises by each batch's statistics, even in eval mode"
            )
        self._norm = (where, module)

    def linear(self, where: str, module: nn.Linear) -> None:
        if self.stage in ("input", "steps"):
            raise UnsupportedNativeModel(
                where, "a Linear before any recurrent layer has no rnncore equivalent"
            )
        if self.stage == "final":
            raise UnsupportedNativeModel(where, "a Linear after the output activation")
        if self.stage == "head" and self._after_linear:
            raise UnsupportedNativeModel(
                where,
                f"follows Linear {self.layers.linears[-1][0]!r} with no activation between; "
                "rnncore's head puts one activation between Linear layers",
            )
        if self.stage == "encoded":
            self.layers.pooling = "none"  # a Linear on every step: tagging
        expected = self._linear_input_size()
        if module.in_features != expected:
            raise UnsupportedNativeModel(
                where, f"in_features={module.in_features} but the layer before it gives {expected} features"
            )
        if self._norm is not None:
            self.layers.folds[len(self.layers.linears)] = self._norm
            self._norm = None
        self.layers.linears.append((where, module))
        self.stage, self._after_linear = "head", True

    def _linear_input_size(self) -> int:
        if self.layers.linears:
            return self.layers.linears[-1][1].out_features
        last = self.layers.rnns[-1][1]
        return last.hidden_size * (2 if last.bidirectional else 1)

    def activation(self, act: _Activation) -> None:
        if self.stage != "head" or not self._after_linear:
            where = "the output" if self.stage == "final" else f"the {self.stage} tensor"
            raise UnsupportedNativeModel(
                act.where, f"a {act.kind} on {where}; rnncore has activations only between head Linears"
            )
        self.layers.activations.append(act)
        self._after_linear = False

    def final(self, where: str, kind: str) -> None:
        if self.stage != "head" or not self._after_linear:
            raise UnsupportedNativeModel(where, f"a {kind} that does not follow the last Linear")
        self.layers.final = (where, kind)
        self.stage = "final"

    def finish(self, where: str) -> _Layers:
        layers = self.layers
        if self._norm is not None:
            raise UnsupportedNativeModel(
                self._norm[0], "BatchNorm1d with no Linear after it; rnncore folds it into the next Linear"
            )
        if layers.backward_first and not layers.linears:
            raise UnsupportedNativeModel(
                where, "puts the backward half first and no Linear follows to absorb the order"
            )
        if not layers.rnns:
            raise UnsupportedNativeModel(where, "no nn.LSTM, nn.GRU or nn.RNN on the way to the output")
        if self.stage == "encoded":
            layers.pooling = "none"  # per-step features, no head
        if self.stage == "head" and not self._after_linear:
            raise UnsupportedNativeModel(
                layers.activations[-1].where,
                "an activation after the last Linear; rnncore's head ends in logits",
            )
        _check_same_activations(layers.activations)
        return layers


def _check_rnn(where: str, module: nn.RNNBase) -> None:
    if type(module) not in _CELLS:
        raise UnsupportedNativeModel(where, f"{type(module).__name__} is not nn.LSTM, nn.GRU or nn.RNN")
    if getattr(module, "proj_size", 0) > 0:
        raise UnsupportedNativeModel(
            where, f"proj_size={module.proj_size} projects h; rnncore's LSTM has no projection"
        )


def _check_same_activations(acts: list[_Activation]) -> None:
    for act in acts[1:]:
        first = acts[0]
        if (act.kind, act.negative_slope) != (first.kind, first.negative_slope):
            raise UnsupportedNativeModel(
                act.where,
                f"{_describe(act)} differs from {_describe(first)} at {first.where!r}; "
                "rnncore's head uses one activation for every hidden layer",
            )


def _describe(act: _Activation) -> str:
    return f"leaky_relu({act.negative_slope})" if act.kind == "leaky_relu" else act.kind


# ---- modules, shared by both readers -------------------------------------------------------


def _read_module(build: _Builder, where: str, module: nn.Module, ndim: int | None) -> None:
    """Feed one leaf module to the builder; `ndim` is its input's rank when known."""
    if isinstance(module, nn.Embedding):
        build.embedding(where, module)
    elif isinstance(module, nn.RNNBase):
        build.rnn(where, module)
    elif isinstance(module, nn.Linear):
        build.linear(where, module)
    elif type(module) is nn.Dropout:
        build.dropout(where, float(module.p))
    elif type(module) is nn.BatchNorm1d:
        build.batchnorm(where, module)
    elif isinstance(module, nn.Identity):
        pass
    elif type(module) in _FINALS:
        _check_final_dim(where, getattr(module, "dim", -1), ndim)
        build.final(where, _FINALS[type(module)])
    else:
        build.activation(_module_activation(where, module))


def _module_activation(where: str, module: nn.Module) -> _Activation:
    if isinstance(module, nn.ReLU):
        return _Activation(where, "relu")
    if isinstance(module, nn.Tanh):
        return _Activation(where, "tanh")
    if isinstance(module, nn.LeakyReLU):
        return _Activation(where, "leaky_relu", float(module.negative_slope))
    if isinstance(module, nn.GELU):
        return _gelu(where, module.approximate)
    raise UnsupportedNativeModel(where, f"{type(module).__name__} has no rnncore equivalent")


def _gelu(where: str, approximate: str) -> _Activation:
    if approximate != "none":
        raise UnsupportedNativeModel(
            where, f"GELU(approximate={approximate!r}); rnncore's gelu is the exact (erf) form"
        )
    return _Activation(where, "gelu")


def _check_final_dim(where: str, dim: int | None, ndim: int | None) -> None:
    """Softmax must normalise the class axis (the last); torch's implicit dim=None does not for 3-D."""
    if ndim is None:
        return
    if dim is None:  # torch's legacy rule for an implicit dim
        dim = 0 if ndim in (0, 1, 3) else 1
    if dim % ndim != ndim - 1:
        raise UnsupportedNativeModel(
            where, f"normalises dim {dim} of a {ndim}-D output; rnncore's outputs are logits over the last"
        )


# ---- declared reading: registration order --------------------------------------------------


def _is_torch_leaf(module: nn.Module) -> bool:
    # torch.fx's rule: torch's own modules are leaves, except the containers
    return type(module).__module__.startswith(("torch.nn", "torch.ao.nn")) and not isinstance(
        module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    )


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Leaf modules in registration order; refuses custom modules holding tensors of their own."""
    if _is_torch_leaf(module):
        yield prefix or type(module).__name__, module
        return
    if _is_torchcrf(module):
        return  # the CRF head, read by `_with_torchcrf`
    own = [name for name, _ in module.named_parameters(recurse=False)]
    if not prefix:  # a CRF's transitions on the model itself, read by `_with_tutorial_crf`
        own = [name for name in own if name != "transitions"]
    if own:
        raise UnsupportedNativeModel(
            f"{prefix}.{own[0]}" if prefix else own[0],
            "a parameter outside any torch layer; rnncore maps only torch's own layers",
        )
    children = list(module.named_children())
    if not children and prefix:
        raise UnsupportedNativeModel(prefix, f"{type(module).__name__} has no rnncore equivalent")
    for name, child in children:
        yield from _leaves(child, f"{prefix}.{name}" if prefix else name)


def _read_declared(model: nn.Module, pooling: str) -> _Layers:
    leaves = list(_leaves(model))
    rnn_positions = [i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.RNNBase)]
    build = _Builder()
    ndim = 3 if pooling == "none" else 2  # of the head's output, for a final softmax's dim
    for i, (where, module) in enumerate(leaves):
        _read_module(build, where, module, ndim)
        if rnn_positions and i == rnn_positions[-1] and pooling != "none":
            build.pool(where, pooling)
    layers = build.finish(type(model).__name__)
    layers.time_first = not layers.rnns[0][1].batch_first
    return layers


# ---- traced reading: the forward's fx graph ------------------------------------------------


@contextlib.contextmanager
def _attributes_kept(model: nn.Module) -> Iterator[None]:
    """Puts back every attribute of every submodule that the forward (re)assigns."""
    saved = [(module, dict(vars(module))) for module in model.modules()]
    try:
        yield
    finally:
        for module, attributes in saved:
            vars(module).clear()
            vars(module).update(attributes)


def _trace(model: nn.Module) -> fx.Graph:
    # torch.nn.utils.rnn is wrapped so pack_padded_sequence etc. become single graph nodes
    # (traced into, they call torch.as_tensor on a Proxy and fail). math is fx's default.
    wrapped: Any = (math, rnn_utils)  # torch annotates this as a 1-tuple
    # Variable(proxy) raises inside torch; recorded as a call, it is read as the identity it is now
    tracer = fx.Tracer(autowrap_modules=wrapped, autowrap_functions=(Variable,))
    try:
        with _attributes_kept(model):  # a forward that sets self.hidden = ... stores Proxies
            return tracer.trace(model)
    except Exception as err:  # fx raises many kinds: TraceError, TypeError, errors of the forward itself
        raise _untraceable(model, err) from err


# constructs fx cannot trace, recognised on the user's line: (pattern, what it is, what to do)
_UNTRACEABLE = (
    (r"\blen\(", "len() of a tensor", "use x.size(0) (or x.shape[0]), which fx records"),
    (r"^assert\b", "an assert on the data", "check the inputs before calling the model, not in forward"),
    (
        r"^(for|while)\b",
        "a Python loop (e.g. over time steps)",
        "run the nn.LSTM / nn.GRU / nn.RNN module over the whole sequence in one call",
    ),
    (
        r"^(if|elif)\b|\bif\b.*\belse\b",
        "Python control flow on the data",
        "compute the branch without reading tensor values (torch.where, or shapes only)",
    ),
)


def _untraceable(model: nn.Module, err: Exception) -> UnsupportedNativeModel:
    """Names the user's line that fx stopped at, the construct on it, and what to do."""
    frame = _user_frame(err)
    first_line = (str(err).splitlines() or [""])[0]
    where = f"{type(model).__name__}.forward"
    if frame is None:
        return UnsupportedNativeModel(
            where, f"torch.fx cannot trace it ({type(err).__name__}: {first_line}){_declare_hint(model)}"
        )
    code = (frame.line or "").strip()
    construct, todo = "an operation fx cannot record", f"{type(err).__name__}: {first_line}"
    for pattern, what, fix in _UNTRACEABLE:
        if re.search(pattern, code):
            construct, todo = what, fix
            break
    return UnsupportedNativeModel(
        f"{where}, line {frame.lineno} of {os.path.basename(frame.filename)}",
        f"torch.fx cannot trace `{code}`: {construct}; {todo}{_declare_hint(model)}",
    )


def _user_frame(err: Exception) -> traceback.FrameSummary | None:
    """The innermost frame of the traceback outside torch and rnncore: the user's line."""
    ours = (os.path.dirname(torch.__file__), os.path.dirname(__file__))
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(ours)]
    return frames[-1] if frames else None


def _declare_hint(model: nn.Module) -> str:
    """Suggest declaring pooling= only where the import can then be checked by running the model."""
    if _arguments(model)[1]:
        return ""
    return (
        "; or declare pooling='last', 'mean', 'max' or 'none': the layers are then read in "
        "registration order and the import is checked against the model's own outputs"
    )


@dataclass(frozen=True)
class _Seq:
    """A tensor on the data path."""

    stage: str  # the builder stage it belongs to, or "summed" (a sum over time, not yet divided)
    ndim: int | None  # None for the forward's input (ids are 2-D, features 3-D)
    flip: bool = False  # batch and time swapped relative to the forward's input
    packed: bool = False  # a PackedSequence
    pad_value: float | None = None  # what padded steps hold, after pad_packed_sequence


@dataclass(frozen=True)
class _Side:
    """Computed from lengths or shapes only; `exact`: still the lengths argument's values."""

    exact: bool


class _Zeros:
    """torch.zeros(...): an all-zero initial state is rnncore's own."""


@dataclass(frozen=True)
class _RnnOut:
    """What an RNN module returns: (output, h_n), or (output, (h_n, c_n)) for an LSTM."""

    index: int  # into the builder's rnns
    time_axis: int | None  # of an unpacked output; None when packed


@dataclass(frozen=True)
class _State:
    index: int
    which: str  # "h" (h_n), "c" (c_n), "hc" (the LSTM's pair)


@dataclass(frozen=True)
class _StateRow:
    index: int
    row: int  # in h_n's [num_layers * directions] axis, counted from 0


@dataclass(frozen=True)
class _Pair:
    """A tuple result read by index or name: pad_packed_sequence's, max(dim)'s."""

    items: tuple[Any, ...]
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class _StateByRow:
    """h_n with batch first: (B, num_layers * directions, H), before flattening its rows."""

    index: int


_DATA = (_Seq, _RnnOut, _State, _StateRow, _Pair, _StateByRow)

# how an op is named below, for the call_function targets the forward may use
_FUNCTIONS: dict[Any, str] = {
    operator.getitem: "getitem",
    getattr: "getattr",
    torch.cat: "cat",
    torch.concat: "cat",
    torch.transpose: "transpose",
    torch.t: "t",
    torch.permute: "permute",
    torch.relu: "relu",
    F.relu: "relu",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    F.leaky_relu: "leaky_relu",
    F.gelu: "gelu",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.softmax: "softmax",
    F.softmax: "softmax",
    torch.log_softmax: "log_softmax",
    F.log_softmax: "log_softmax",
    F.dropout: "dropout",
    torch.mean: "mean",
    torch.sum: "sum",
    torch.max: "max",
    torch.amax: "amax",
    torch.squeeze: "squeeze",
    torch.flatten: "flatten",
    torch.reshape: "reshape",
    operator.truediv: "div",
    torch.div: "div",
    torch.true_divide: "div",
    torch.zeros: "zeros",
    torch.zeros_like: "zeros",
    rnn_utils.pack_padded_sequence: "pack",
    rnn_utils.pad_packed_sequence: "pad",
}
_METHODS = {"true_divide": "div", "__truediv__": "div", "concat": "cat", "new_zeros": "zeros"}
# ops on lengths that keep their values (moves, casts, reshapes)
_KEEPS_LENGTHS = {
    "cpu", "to", "float", "double", "long", "int", "type", "type_as", "unsqueeze",
    "view", "reshape", "detach", "clone", "contiguous",
}  # fmt: skip
# ... and ops that keep a fresh zero state zero (Variable is the pre-0.4 tensor wrapper)
_KEEPS_ZEROS = _KEEPS_LENGTHS | {"cuda", "Variable", "requires_grad_"}
_SIGNATURES = {  # positional parameter names, to read arguments given either way
    "pack": ("input", "lengths", "batch_first", "enforce_sorted"),
    "pad": ("sequence", "batch_first", "padding_value", "total_length"),
    "leaky_relu": ("input", "negative_slope"),
    "gelu": ("input", "approximate"),
    "softmax": ("input", "dim"),
    "log_softmax": ("input", "dim"),
    "dropout": ("input", "p", "training"),
    "reduce": ("input", "dim", "keepdim"),
    "transpose": ("input", "dim0", "dim1"),
    "cat": ("tensors", "dim"),
    "squeeze": ("input", "dim"),
}
_DEFAULTS = {
    "batch_first": False,
    "padding_value": 0.0,
    "negative_slope": 0.01,
    "approximate": "none",
    "p": 0.5,
    "training": True,
    "keepdim": False,
    "dim": None,
}


def _param(op: str, args: Sequence[Any], kwargs: dict[str, Any], name: str) -> Any:
    """Argument `name` of op `op`, positional or keyword, else its torch default."""
    position = _SIGNATURES[op].index(name)
    if position < len(args):
        return args[position]
    return kwargs.get(name, _DEFAULTS.get(name))


def _ancestors(graph: fx.Graph) -> list[fx.Node]:
    """Nodes the output depends on, in graph (topological) order; dead code is not read."""
    output = next(n for n in graph.nodes if n.op == "output")
    needed, todo = {output}, [output]
    while todo:
        for parent in todo.pop().all_input_nodes:
            if parent not in needed:
                needed.add(parent)
                todo.append(parent)
    return [n for n in graph.nodes if n in needed]


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _flatten(item)
    else:
        yield value


class _GraphReader:
    """Reads an fx graph op by op, tracking what each value is, and feeds layers to a builder."""

    def __init__(self, model: nn.Module, graph: fx.Graph):
        self.model = model
        self.graph = graph
        self.build = _Builder()
        self.values: dict[fx.Node, Any] = {}
        self.input_time_axis: int | None = None  # 0 or 1 once an RNN or pack has told us
        self.packed: bool | None = None  # do the recurrent layers read PackedSequences
        self.name = type(model).__name__
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if not placeholders:
            raise UnsupportedNativeModel(f"{self.name}.forward", "takes no inputs")
        self.input = placeholders[0]

    def read(self) -> _Layers:
        for node in _ancestors(self.graph):
            if node.op == "output":
                return self._finish(node)
            self.values[node] = self._read_node(node)
        raise AssertionError("an fx graph always ends in an output node")

    # -- dispatch --
    def _read_node(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return _Seq("input", None) if node is self.input else _Side(exact=True)
        if node.op == "get_attr":
            raise UnsupportedNativeModel(
                f"{self.name}.{node.target}", "a tensor used directly in forward; rnncore maps only layers"
            )
        args = fx.node.map_arg(node.args, lambda n: self.values[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: self.values[n])
        if node.op == "call_module":
            return self._module(str(node.target), args, kwargs)
        name = self._op_name(node)
        if not any(isinstance(v, _DATA) for v in _flatten((args, kwargs))):
            return self._side_op(name, args)
        if name == "zeros":  # zeros_like(x): a zero state shaped like the data
            return _Zeros()
        if name in ("size", "dim") or (name == "getattr" and args[1] in ("shape", "dtype", "device")):
            return _Side(exact=False)  # reads shapes only
        if name in ("to", "type_as") and isinstance(args[0], (_Side, _Zeros)):
            return args[0]  # lengths or a zero state cast to the data's dtype or device
        handler: Callable[[fx.Node, Any, Any], Any] | None = getattr(self, f"_op_{name}", None)
        if handler is None:
            raise self._unknown(node, args)
        return handler(node, args, kwargs)

    def _op_name(self, node: fx.Node) -> str:
        if node.op == "call_method":
            return _METHODS.get(str(node.target), str(node.target))
        return _FUNCTIONS.get(node.target, getattr(node.target, "__name__", str(node.target)))

    def _where(self, node: fx.Node) -> str:
        if node.op == "call_method":
            return f"{self.name}.forward: Tensor.{node.target}() ({node.name})"
        target = node.target
        label = str(getattr(target, "__qualname__", None) or getattr(target, "__name__", target))
        label = label.removeprefix("_VariableFunctionsClass.")  # torch.relu's qualname
        module = getattr(target, "__module__", None) or ""
        module = {"_operator": "operator", "torch._C._nn": "torch.nn.functional"}.get(module, module)
        label = f"{module}.{label}".lstrip(".")
        return f"{self.name}.forward: {label} ({node.name})"

    def _unknown(self, node: fx.Node, args: Any) -> UnsupportedNativeModel:
        data = [v for v in _flatten(args) if isinstance(v, _Seq)]
        on = f" on the {data[0].stage} tensor" if data else ""
        hint = ""
        if len(data) == 1 and data[0].stage in ("encoded", "summed") and not _arguments(self.model)[1]:
            # e.g. a masked max or mean written with masked_fill: declared, it is verified
            hint = (
                "; if the forward only pools the RNN outputs here, declare how with pooling= "
                "(the import is then checked against the model's own outputs)"
            )
        return UnsupportedNativeModel(self._where(node), f"no rnncore equivalent for this op{on}{hint}")

    def _side_op(self, name: str, args: Any) -> Any:
        base = args[0] if args else None
        if name == "zeros" or (isinstance(base, _Zeros) and name in _KEEPS_ZEROS):
            return _Zeros()  # torch.zeros(...).to(device) is still zeros
        # only the tensor operated on counts: `lengths.to(out.dtype)` still holds the lengths
        keeps = name in _KEEPS_LENGTHS or (
            name == "getitem" and all(i is None or i == slice(None) for i in _flatten(args[1]))
        )
        return _Side(exact=keeps and isinstance(base, _Side) and base.exact)

    def _seq(self, value: Any, where: str) -> _Seq:
        """The value as a data tensor; h_n rows become pooled features here."""
        if isinstance(value, _StateRow):
            return self._pool_rows([value], where)
        if isinstance(value, _State):
            if value.which == "c":
                raise self._cell_state(where)
            raise UnsupportedNativeModel(
                where,
                "uses the whole h_n; take the last layer: h_n[-1], or cat(h_n[-2], h_n[-1]) if bidirectional",
            )
        if not isinstance(value, _Seq):
            raise UnsupportedNativeModel(
                where, f"gets a {type(value).__name__.strip('_')} where a tensor belongs"
            )
        if value.stage == "summed":
            raise UnsupportedNativeModel(
                where, "reads a sum over time; rnncore pools by mean (the sum divided by the lengths)"
            )
        return value

    def _cell_state(self, where: str) -> UnsupportedNativeModel:
        return UnsupportedNativeModel(where, "uses the LSTM cell state c_n; rnncore pools hidden states")

    # -- modules --
    def _module(self, where: str, args: Any, kwargs: Any) -> Any:
        module = self.model.get_submodule(where)
        args = tuple(args) or tuple(kwargs.values())  # layer(input=x) reads like layer(x)
        if isinstance(module, nn.RNNBase):
            return self._rnn(where, module, args, kwargs)
        x = self._seq(args[0], where)
        if x.packed and not isinstance(module, nn.Dropout):
            raise UnsupportedNativeModel(where, "gets a PackedSequence")
        _read_module(self.build, where, module, x.ndim)
        if isinstance(module, (nn.Dropout, nn.Identity, nn.BatchNorm1d)) or type(module) in _FINALS:
            return x
        stage = self.build.stage
        if isinstance(module, nn.Embedding):
            return _Seq(stage, None if x.ndim is None else x.ndim + 1, x.flip)
        return _Seq(stage, x.ndim, x.flip)

    def _rnn(self, where: str, module: nn.RNNBase, args: Any, kwargs: Any) -> _RnnOut:
        x = self._seq(args[0], where)
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        if hx is not None and not all(isinstance(v, _Zeros) for v in _flatten(hx)):
            raise UnsupportedNativeModel(where, "starts from a given state hx; rnncore starts from zeros")
        if self.packed is not None and self.packed != x.packed:
            raise UnsupportedNativeModel(
                where, "some recurrent layers read packed sequences and others padded tensors"
            )
        if x.pad_value is not None and not x.packed:
            raise UnsupportedNativeModel(
                where, "reads pad_packed_sequence output unpacked, running over its padding; pack it again"
            )
        self.packed = x.packed
        axis = None
        if not x.packed:
            axis = 1 if module.batch_first else 0
            self._layout(x, axis, where, f"batch_first={module.batch_first}")
        self.build.rnn(where, module)
        return _RnnOut(len(self.build.layers.rnns) - 1, axis)

    def _layout(self, x: _Seq, time_axis: int, where: str, what: str) -> None:
        """Learn or check which input axis is time (rnncore is batch first; torch either)."""
        if self.input_time_axis is None:
            self.input_time_axis = time_axis ^ x.flip
        elif self._time_axis(x) != time_axis:
            raise UnsupportedNativeModel(where, f"{what} but its input has time on axis {1 - time_axis}")

    def _time_axis(self, x: _Seq) -> int | None:
        return None if self.input_time_axis is None else self.input_time_axis ^ x.flip

    def _after_rnn(self, time_axis: int) -> bool:
        """`flip` of a tensor with time on `time_axis`."""
        assert self.input_time_axis is not None  # every RNN or pack has set it
        return bool(time_axis ^ self.input_time_axis)

    # -- indexing: RNN results, h_n rows, last steps --
    def _op_getitem(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        base, index = args
        where = self._where(node)
        if isinstance(base, _RnnOut):
            if index == 0:
                if base.time_axis is None:
                    return _Seq("encoded", None, packed=True)
                return _Seq("encoded", 3, self._after_rnn(base.time_axis))
            cell = _CELLS[type(self.build.layers.rnns[base.index][1])]
            return _State(base.index, "hc" if cell == "lstm" else "h")
        if isinstance(base, _State):
            return self._state_item(base, index, where)
        if isinstance(base, _Pair):
            return base.items[index]
        return self._last_step(self._seq(base, where), index, where)

    def _state_item(self, state: _State, index: Any, where: str) -> Any:
        if state.which == "hc":
            return _State(state.index, "h" if index == 0 else "c")
        if state.which == "c":
            raise self._cell_state(where)
        rows = self._state_rows(state.index)
        first = index[0] if isinstance(index, tuple) else index
        rest = index[1:] if isinstance(index, tuple) else ()
        if not isinstance(first, int) or any(i not in (slice(None), Ellipsis) for i in rest):
            raise UnsupportedNativeModel(
                where, f"indexes h_n with {index!r}; use h_n[-1], or cat(h_n[-2], h_n[-1]) if bidirectional"
            )
        return _StateRow(state.index, first % rows)

    def _state_rows(self, index: int) -> int:
        module = self.build.layers.rnns[index][1]
        return module.num_layers * (2 if module.bidirectional else 1)

    def _last_step(self, x: _Seq, index: Any, where: str) -> _Seq:
        """out[:, -1] (batch first) or out[-1]: the last step of an unpacked run."""
        axis = self._time_axis(x)
        items = index if isinstance(index, tuple) else (index,)
        ints = [i for i, item in enumerate(items) if isinstance(item, int)]
        full = all(item == slice(None) for i, item in enumerate(items) if i not in ints)
        if x.stage != "encoded" or x.packed or axis is None or not full or ints != [axis]:
            raise UnsupportedNativeModel(where, f"indexes the {x.stage} tensor with {index!r}")
        if items[axis] != -1:
            raise UnsupportedNativeModel(
                where, f"takes step {items[axis]}; rnncore's last-step pooling is step -1"
            )
        if x.pad_value is not None:
            raise UnsupportedNativeModel(
                where, "takes the padded last step; shorter rows end earlier: use h_n"
            )
        if self._bidirectional():
            raise UnsupportedNativeModel(
                where,
                "takes the last step of a bidirectional output; the backward half ends at step 0: use h_n",
            )
        self.build.pool(where, "last")
        return _Seq("pooled", 2)

    def _bidirectional(self) -> bool:
        return bool(self.build.layers.rnns[-1][1].bidirectional)

    def _pool_rows(self, rows: list[_StateRow], where: str) -> _Seq:
        """h_n rows -> `last` pooling, if they are the last layer's, forward then backward."""
        last = len(self.build.layers.rnns) - 1
        if any(r.index != last for r in rows):
            raise UnsupportedNativeModel(where, "pools the state of a recurrent layer that is not the last")
        dirs = 2 if self._bidirectional() else 1
        total = self._state_rows(last)
        wanted = list(range(total - dirs, total))  # h_n is layer-major, forward before backward
        got = [r.row for r in rows]
        if dirs == 2 and got == wanted[::-1]:  # [backward, forward]: the head reads swapped columns
            self.build.layers.backward_first = True
        elif got != wanted:
            raise UnsupportedNativeModel(where, self._rows_problem(got, wanted))
        self.build.pool(where, "last")
        return _Seq("pooled", 2)

    @staticmethod
    def _rows_problem(got: list[int], wanted: list[int]) -> str:
        if len(wanted) == 2 and len(got) == 1 and got[0] in wanted:
            half = "forward" if got[0] == wanted[0] else "backward"
            return f"uses only the {half} half of the last layer's state; concatenate h_n[-2] and h_n[-1]"
        return f"reads rows {got} of h_n; rnncore pools the last layer's rows {wanted}"

    def _op_cat(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        where = self._where(node)
        tensors = _param("cat", args, kwargs, "tensors")
        dim = _param("cat", args, kwargs, "dim") or 0
        if not all(isinstance(t, _StateRow) for t in tensors) or dim not in (1, -1):
            raise UnsupportedNativeModel(
                where, "concatenates tensors; rnncore reads only cat((h_n[-2], h_n[-1]), dim=1)"
            )
        return self._pool_rows(list(tensors), where)

    def _op_squeeze(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        where = self._where(node)
        state = args[0]
        squeezes_h = isinstance(state, _State) and state.which == "h"
        if squeezes_h and _param("squeeze", args, kwargs, "dim") == 0 and self._state_rows(state.index) == 1:
            # h_n of one unidirectional layer is (1, B, H)
            return self._pool_rows([_StateRow(state.index, 0)], where)
        raise UnsupportedNativeModel(where, "squeeze changes the shape rnncore gives")

    def _op_getattr(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        base, name = args
        if isinstance(base, _Pair) and name in base.names:
            return base.items[base.names.index(name)]
        raise self._unknown(node, args)

    # -- layout: transposes, packing --
    def _swapped(self, node: fx.Node, x: Any, order: list[int] | None) -> _Seq:
        """A transpose/permute with output axis i taken from input axis order[i] (None: unknown)."""
        where = self._where(node)
        seq = self._seq(x, where)
        if seq.packed or seq.stage == "pooled":
            raise UnsupportedNativeModel(where, f"transposes the {seq.stage} tensor")
        if order is not None and order == sorted(order):
            return seq  # the identity
        if order is None or order[:2] != [1, 0] or order[2:] != list(range(2, len(order))):
            raise UnsupportedNativeModel(
                where, "reorders axes other than swapping batch and time, the first two"
            )
        return _Seq(seq.stage, seq.ndim, not seq.flip, pad_value=seq.pad_value)

    def _op_transpose(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq | _StateByRow:
        dims = [_param("transpose", args, kwargs, n) for n in ("dim0", "dim1")]
        if isinstance(args[0], _State):
            return self._state_by_row(node, args[0], sorted(d % 3 for d in dims) == [0, 1])
        ndim = self._seq(args[0], self._where(node)).ndim
        if ndim is None and all(d >= 0 for d in dims):  # the input: ids (2-D) or features (3-D)
            ndim = max(2, *(d + 1 for d in dims))
        if ndim is None or not all(-ndim <= d < ndim for d in dims):
            return self._swapped(node, args[0], None)  # negative axes of an input of unknown rank
        order = list(range(ndim))
        order[dims[0]], order[dims[1]] = order[dims[1]], order[dims[0]]
        return self._swapped(node, args[0], order)

    def _op_t(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        return self._swapped(node, args[0], [1, 0])

    def _op_permute(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq | _StateByRow:
        dims = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        dims = dims or list(kwargs.get("dims", ()))
        if isinstance(args[0], _State):
            return self._state_by_row(node, args[0], [d % 3 for d in dims] == [1, 0, 2])
        return self._swapped(node, args[0], [d % len(dims) for d in dims])  # permute names every axis

    def _op_contiguous(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq | _StateByRow:
        if isinstance(args[0], _StateByRow):
            return args[0]
        return self._seq(args[0], self._where(node))

    # -- all of h_n's rows, batch first, flattened: (B, rows * H) --
    def _state_by_row(self, node: fx.Node, state: _State, swaps_batch_and_rows: bool) -> _StateByRow:
        if state.which != "h" or not swaps_batch_and_rows:
            raise UnsupportedNativeModel(
                self._where(node), "rearranges h_n; rnncore reads h_n.transpose(0, 1) flattened to (B, -1)"
            )
        return _StateByRow(state.index)

    def _flattened_rows(self, node: fx.Node, state: Any, flat: bool) -> _Seq:
        """All rows of h_n side by side: `last` pooling when they are the last layer's only."""
        where = self._where(node)
        if not isinstance(state, _StateByRow) or not flat:
            raise self._unknown(node, [state])
        rows = self._state_rows(state.index)
        if rows != (2 if self._bidirectional() else 1) or state.index != len(self.build.layers.rnns) - 1:
            raise UnsupportedNativeModel(
                where,
                f"concatenates all {rows} rows of h_n, lower layers included; rnncore pools the last "
                "layer's state: h_n[-1], or cat(h_n[-2], h_n[-1]) if bidirectional",
            )
        return self._pool_rows([_StateRow(state.index, row) for row in range(rows)], where)

    def _op_view(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        shape = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        return self._flattened_rows(
            node, args[0], len(shape) == 2 and isinstance(shape[1], int) and shape[1] == -1
        )

    _op_reshape = _op_view

    def _op_flatten(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        return self._flattened_rows(node, args[0], start == 1 and end in (-1, 2))

    _op_clone = _op_contiguous

    def _op_long(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        seq = self._seq(args[0], self._where(node))
        if seq.stage != "input":
            raise self._unknown(node, args)
        return seq  # token ids reach every backend as int64 already

    def _op_pack(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        where = self._where(node)
        x = self._seq(_param("pack", args, kwargs, "input"), where)
        if isinstance(_param("pack", args, kwargs, "lengths"), _DATA) or x.packed:
            raise UnsupportedNativeModel(where, "packs with lengths computed from the data")
        batch_first = bool(_param("pack", args, kwargs, "batch_first"))
        self._layout(x, 1 if batch_first else 0, where, f"packs with batch_first={batch_first}")
        return _Seq(x.stage, None, packed=True)

    def _op_pad(self, node: fx.Node, args: Any, kwargs: Any) -> _Pair:
        where = self._where(node)
        x = self._seq(_param("pad", args, kwargs, "sequence"), where)
        if not x.packed:
            raise UnsupportedNativeModel(where, "pad_packed_sequence of a tensor that is not packed")
        axis = 1 if _param("pad", args, kwargs, "batch_first") else 0
        pad_value = float(_param("pad", args, kwargs, "padding_value"))
        seq = _Seq(x.stage, 3, self._after_rnn(axis), pad_value=pad_value)
        return _Pair((seq, _Side(exact=True)))

    # -- activations, dropout --
    def _activation(self, node: fx.Node, x: Any, act: _Activation) -> _Seq:
        seq = self._seq(x, act.where)
        self.build.activation(act)
        return seq

    def _op_relu(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        return self._activation(node, args[0], _Activation(self._where(node), "relu"))

    def _op_tanh(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        return self._activation(node, args[0], _Activation(self._where(node), "tanh"))

    def _op_leaky_relu(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        slope = float(_param("leaky_relu", args, kwargs, "negative_slope"))
        return self._activation(node, args[0], _Activation(self._where(node), "leaky_relu", slope))

    def _op_gelu(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        act = _gelu(self._where(node), _param("gelu", args, kwargs, "approximate"))
        return self._activation(node, args[0], act)

    def _final(self, node: fx.Node, args: Any, kwargs: Any, kind: str) -> _Seq:
        where = self._where(node)
        seq = self._seq(args[0], where)
        if kind != "sigmoid":
            _check_final_dim(where, _param(kind, args, kwargs, "dim"), seq.ndim)
        self.build.final(where, kind)
        return seq

    def _op_sigmoid(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        return self._final(node, args, kwargs, "sigmoid")

    def _op_softmax(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        return self._final(node, args, kwargs, "softmax")

    def _op_log_softmax(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        return self._final(node, args, kwargs, "log_softmax")

    def _op_dropout(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        where = self._where(node)
        seq = self._seq(args[0], where)
        self.build.dropout(where, float(_param("dropout", args, kwargs, "p")))
        return seq

    # -- pooling by reduction over time --
    def _reduced(self, node: fx.Node, args: Any, kwargs: Any) -> tuple[_Seq, str]:
        """The reduced tensor, checked to be RNN outputs reduced over time; and `where`."""
        where = self._where(node)
        x = self._seq(args[0], where)
        dim = _param("reduce", args, kwargs, "dim")
        if x.stage != "encoded" or x.packed or not isinstance(dim, int):
            raise UnsupportedNativeModel(where, f"reduces the {x.stage} tensor over dim={dim!r}")
        if _param("reduce", args, kwargs, "keepdim"):
            raise UnsupportedNativeModel(where, "keepdim=True keeps a time axis of 1; rnncore drops it")
        if dim % 3 != self._time_axis(x):
            raise UnsupportedNativeModel(where, f"reduces dim {dim}, which is not the time axis")
        return x, where

    def _op_mean(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        x, where = self._reduced(node, args, kwargs)
        if x.pad_value is not None:
            raise UnsupportedNativeModel(
                where, "averages padded steps too; divide the sum over time by the lengths instead"
            )
        self.build.pool(where, "mean")
        return _Seq("pooled", 2)

    def _op_sum(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        x, where = self._reduced(node, args, kwargs)
        if x.pad_value != 0.0:
            raise UnsupportedNativeModel(
                where, "sums steps that are not zero at padding; sum zero-padded pad_packed_sequence output"
            )
        return _Seq("summed", 2)

    def _op_div(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        where = self._where(node)
        total, by = args[0], args[1]
        if not isinstance(total, _Seq) or total.stage != "summed":
            raise self._unknown(node, args)
        if not (isinstance(by, _Side) and by.exact):
            raise UnsupportedNativeModel(
                where, "divides the sum over time by something other than the lengths"
            )
        self.build.pool(where, "mean")
        return _Seq("pooled", 2)

    def _max_pool(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        x, where = self._reduced(node, args, kwargs)
        if x.pad_value is not None and x.pad_value > self._output_floor():
            raise UnsupportedNativeModel(
                where,
                f"padded steps hold {x.pad_value}, which can exceed the outputs (>= {self._output_floor()}); "
                "pad with float('-inf')",
            )
        self.build.pool(where, "max")
        return _Seq("pooled", 2)

    def _output_floor(self) -> float:
        """No RNN output is below this: tanh-bounded cells give > -1, relu RNNs >= 0."""
        module = self.build.layers.rnns[-1][1]
        return 0.0 if getattr(module, "nonlinearity", "tanh") == "relu" else -1.0

    def _op_max(self, node: fx.Node, args: Any, kwargs: Any) -> _Pair:
        return _Pair((self._max_pool(node, args, kwargs), _Side(exact=False)), ("values", "indices"))

    def _op_amax(self, node: fx.Node, args: Any, kwargs: Any) -> _Seq:
        return self._max_pool(node, args, kwargs)

    # -- the result --
    def _finish(self, node: fx.Node) -> _Layers:
        where = f"{self.name}.forward"
        result = node.args[0]
        if not isinstance(result, fx.Node):
            raise UnsupportedNativeModel(where, "returns several values; rnncore models return one tensor")
        if isinstance(self.values[result], (_RnnOut, _Pair)):
            raise UnsupportedNativeModel(where, "returns several values; rnncore models return one tensor")
        seq = self._seq(self.values[result], where)
        if seq.packed or seq.stage in ("input", "steps", "summed"):
            raise UnsupportedNativeModel(where, f"returns the {seq.stage} tensor, not RNN features or logits")
        layers = self.build.finish(where)
        layers.skips_padding = bool(self.packed)
        layers.time_first = self.input_time_axis == 0
        return layers


# ---- spec and weights ----------------------------------------------------------------------


def _spec(layers: _Layers, dtype: str, task: str | None) -> ModelSpec:
    first = layers.rnns[0][1]
    if layers.embedding is not None:
        emb = layers.embedding[1]
        inp = InputSpec(
            kind="tokens",
            vocab_size=emb.num_embeddings,
            embedding_dim=emb.embedding_dim,
            # a forward that runs the RNN over padding treats it as ordinary steps
            padding_idx=emb.padding_idx if layers.skips_padding else None,
        )
    else:
        inp = InputSpec(kind="features", feature_dim=first.input_size)
    encoder = EncoderSpec(
        cell=_CELLS[type(first)],
        hidden_size=first.hidden_size,
        num_layers=sum(m.num_layers for _, m in layers.rnns),
        bidirectional=first.bidirectional,
        dropout=layers.encoder_dropout,
        nonlinearity=getattr(first, "nonlinearity", "tanh"),
    )
    assert layers.pooling is not None
    return ModelSpec(
        input=inp, encoder=encoder, pooling=layers.pooling, head=_head(layers, task), dtype=dtype
    )


def _head(layers: _Layers, task: str | None) -> HeadSpec | None:
    if not layers.linears:
        if task is not None:
            raise ValueError(f"task={task!r} but the model has no Linear head")
        return None
    act = layers.activations[0] if layers.activations else _Activation("", "relu")
    return HeadSpec(
        num_outputs=layers.linears[-1][1].out_features,
        task=_task(layers, task),
        hidden=tuple(m.out_features for _, m in layers.linears[:-1]),
        activation=act.kind,
        negative_slope=act.negative_slope,
        dropout=layers.head_dropout,
    )


def _task(layers: _Layers, task: str | None) -> str:
    """The head task: inferred from per-step output and the final activation, or checked."""
    final_where, final = layers.final if layers.final else (layers.linears[-1][0], None)
    allowed: tuple[str, ...]
    if layers.pooling == "none":
        allowed = ("tagging",) if final != "sigmoid" else ()
    elif final == "sigmoid":
        allowed = ("multilabel",)
    elif final is not None:
        allowed = ("classification",)
    else:
        allowed = ("classification", "multilabel", "regression")
    if not allowed:
        raise UnsupportedNativeModel(final_where, "a per-step sigmoid; rnncore's tagging is single-label")
    if task is None:
        return allowed[0]
    if task not in allowed:
        raise UnsupportedNativeModel(
            final_where, f"task={task!r} does not fit {final or 'these outputs'}; use one of {allowed}"
        )
    return task


def _used_modules(layers: _Layers) -> list[tuple[str, nn.Module]]:
    used: list[tuple[str, nn.Module]] = [*layers.rnns, *layers.linears]
    return [layers.embedding, *used] if layers.embedding is not None else used


def _dtype(layers: _Layers) -> str:
    """float32 or float64, the same for every parameter."""
    found: dict[str, str] = {}
    for where, module in _used_modules(layers):
        for name, param in module.named_parameters():
            dtype = _DTYPES.get(param.dtype)
            if dtype is None:
                raise UnsupportedNativeModel(
                    f"{where}.{name}", f"dtype {param.dtype}; rnncore runs float32 or float64"
                )
            found.setdefault(dtype, f"{where}.{name}")
    if len(found) > 1:
        raise UnsupportedNativeModel(found["float64"], "float64 while other parameters are float32")
    return next(iter(found))


def _array(tensor: torch.Tensor, dtype: str) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(dtype, copy=True)


def _bias(tensor: torch.Tensor | None, size: int, dtype: str) -> np.ndarray:
    # bias=False layers have None here; a zero bias is the same function
    return np.zeros(size, dtype=dtype) if tensor is None else _array(tensor, dtype)


def _canonical_weights(layers: _Layers, spec: ModelSpec) -> Weights:
    weights: Weights = {}
    if layers.embedding is not None:
        weights["embedding.weight"] = _embedding_weight(*layers.embedding, spec)
    offset = 0
    for _, module in layers.rnns:
        weights.update(_rnn_weights(module, offset, spec))
        offset += module.num_layers
    for i, (name, (_, linear)) in enumerate(zip(head_layer_names(spec), layers.linears, strict=True)):
        weight = _array(linear.weight, spec.dtype)
        bias = _bias(linear.bias, linear.out_features, spec.dtype)
        if i in layers.folds:
            weight, bias = fold_normalization(weight, bias, *_affine(layers.folds[i][1]))
        if i == 0 and layers.backward_first:  # the Linear read [backward, forward]; rnncore pools [fwd, bwd]
            weight = np.concatenate(np.split(weight, 2, axis=1)[::-1], axis=1)
        weights[f"{name}.weight"], weights[f"{name}.bias"] = weight, bias
    return weights


def _affine(norm: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm1d as y = x * scale + shift (float64)."""
    mean, var = (_array(t, "float64") for t in (norm.running_mean, norm.running_var))  # type: ignore[arg-type]
    gamma = _array(norm.weight, "float64") if norm.weight is not None else np.ones_like(mean)
    beta = _array(norm.bias, "float64") if norm.bias is not None else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + norm.eps)
    return scale, beta - mean * scale


def _embedding_weight(where: str, module: nn.Embedding, spec: ModelSpec) -> np.ndarray:
    value = _array(module.weight, spec.dtype)
    pad = spec.input.padding_idx
    # torch zeroes this row at init and never updates it, but a loaded matrix may set it; the
    # canonical layout keeps it zero, and a pad id inside a row's valid steps would read it
    if pad is not None and np.any(value[pad] != 0):
        raise UnsupportedNativeModel(
            f"{where}.weight", f"row padding_idx={pad} is not zero; rnncore's padding row is zero"
        )
    return value


def _rnn_weights(module: nn.RNNBase, offset: int, spec: ModelSpec) -> Weights:
    """One torch RNN module's layers as canonical layers offset, offset+1, ..."""
    gates_h = spec.encoder.gates * spec.encoder.hidden_size
    out: Weights = {}
    for layer in range(module.num_layers):
        for direction in directions(spec):
            suffix = f"_l{layer}" + ("_reverse" if direction == "bwd" else "")
            prefix = layer_prefix(offset + layer, direction)
            out[f"{prefix}.W_ih"] = _array(getattr(module, f"weight_ih{suffix}"), spec.dtype)
            out[f"{prefix}.W_hh"] = _array(getattr(module, f"weight_hh{suffix}"), spec.dtype)
            b_ih = _bias(getattr(module, f"bias_ih{suffix}", None), gates_h, spec.dtype)
            b_hh = _bias(getattr(module, f"bias_hh{suffix}", None), gates_h, spec.dtype)
            if spec.encoder.cell == "gru":  # b_hn sits inside r * (...): both stay
                out[f"{prefix}.b_ih"], out[f"{prefix}.b_hh"] = b_ih, b_hh
            else:  # LSTM and Elman RNN only ever add the two
                out[f"{prefix}.b"] = b_ih + b_hh
    return out
