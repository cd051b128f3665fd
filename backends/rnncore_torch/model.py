"""A spec compiled to a plain `torch.nn.Module` built from the fused native layers."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnncore.spec import ModelSpec
from rnncore.weights import head_layer_sizes

from .convert import frozen_zero_biases
from .crf import Crf

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

# Smallest share of valid steps in a padded batch at which the layers run over the whole padded
# tensor instead of a PackedSequence (CPU only; see `RnnModel._runs_padded`). Measured on 2 cores
# (LSTM/GRU/RNN, hidden 128-512, batch 8-64, length 32-512): a packed training step, whose
# backward goes one time step at a time, costs as much as a dense one at 25-35% valid steps and
# 1.2-3x (up to 24x at length 512) more once the batch is half full. A packed forward is about as
# fast as a dense one even at 85% (faster for GRUs, RNNs and bidirectional layers): inference
# stays packed unless the batch is nearly full.
PADDED_RUN_MIN_FILL = {"inference": 0.9, "training": 0.25}
# Except short GRU/RNN batches, which train packed: when the cell is cheap and the steps few,
# what the dense run saves in the backward pass is less than the padded steps it computes (and,
# bidirectional, the reversal within lengths: a gather there and back, per layer). Measured on 2
# cores at batch 64, 55% valid steps, length 32, padded vs packed: RNN 2L bi hidden 128 48.5 vs
# 41.1 ms, hidden 512 273 vs 200; RNN 2L uni hidden 512 123 vs 102, GRU 2L uni 329 vs 276,
# GRU 1L uni 151 vs 135 (at hidden 128 padded is 3-5% faster there, packed as fast as
# hand-written torch); but LSTMs at length 32 (uni hidden 512 156 vs 171; bi 41 vs 64): an
# LSTM's packed backward is the slow one. An RNN's is cheap up to length 128: at batch 64, 56%
# valid, hidden 512, padded vs packed (hand-written torch, itself packed, within 3%): 1L uni
# 123 vs 107 ms, 1L bi 264 vs 203, 2L uni 278 vs 228, 2L bi 798 vs 529 (hidden 128: within
# 6% either way); at length 256 padded wins (hidden 512 1L uni 288 vs 385, 1L bi 601 vs 703;
# hidden 128 2L bi 226 vs 249), at 512 by 2x (hidden 128). GRUs at length 128 mostly gain from
# the padded run (hidden 512 1L bi 752 vs 988 ms, 2L uni 825 vs 897; 2L bi even).
PADDED_RUN_MIN_STEPS = {"lstm": 0, "gru": 64, "rnn": 256}
# A padded run is cut in time where rows end, rows sorted longest first, so that each span runs
# only the rows still going (`length_spans`): a span costs the rows x steps it computes plus a
# fixed price per fused kernel call, SPAN_PRICE x the whole batch's rows x steps. Measured on 2
# cores (AMD EPYC, torch 2.13), batch 64, lengths uniform in T/8..T (56% valid), one training
# step, one padded run vs spans cut at the 3 quartiles' lengths: GRU 2L bi H512 T128 2472 vs
# 1834 ms (8 spans 1757), GRU 1L bi H512 T128 982 vs 747, LSTM 1L uni H128 T128 69 vs 46,
# LSTM 2L uni H512 T32 264 vs 209 (16 spans 311: the price is real), RNN 1L uni H128 T512 122 vs
# 121. A price of 1/32 cuts such batches in 3-5 spans, 66% of the padded steps at length 128.
SPAN_PRICE = 1 / 32
SPAN_CANDIDATES = 16  # cuts considered: the lengths at this many quantiles of the batch


def _recurrent_layer(spec: ModelSpec, input_size: int) -> nn.RNNBase:
    enc = spec.encoder
    kwargs = {"nonlinearity": enc.nonlinearity} if enc.cell == "rnn" else {}
    # One module per layer (num_layers=1): residuals and explicit dropout sit between layers.
    return _CELLS[enc.cell](
        input_size, enc.hidden_size, num_layers=1, batch_first=True, bidirectional=enc.bidirectional, **kwargs
    )


class AttentionPool(nn.Module):
    """Masked softmax over steps of a learned score `x_t . weight`."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size))

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (seq @ self.weight).masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(scores, dim=1)
        return torch.einsum("bt,btd->bd", alpha, seq)


class RnnModel(nn.Module):
    """embedding/features -> recurrent stack -> pooling -> head, as `rnncore.reference` defines.

    `forward(inputs, lengths=None)`: `inputs` (B, T) int64 ids or (B, T, F) floats, `lengths`
    (B,) int64 valid steps (None: every row is full length). Returns logits.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        inp, enc = spec.input, spec.encoder
        self.embedding: nn.Embedding | None = None
        if inp.kind == "tokens":
            assert inp.vocab_size is not None and inp.embedding_dim is not None
            self.embedding = nn.Embedding(inp.vocab_size, inp.embedding_dim, padding_idx=inp.padding_idx)
        self.encoder = nn.ModuleList(_recurrent_layer(spec, size) for size in spec.layer_input_sizes)
        self.residual = list(spec.residual_layers)
        # `last` pooling reads the final layer's hidden state: it holds the forward direction at
        # each row's last valid step and the backward one at step 0, which is what `last` picks,
        # as long as nothing acts on the last layer's outputs first (no residual there, and no
        # active dropout, checked per call). It skips unpacking and gathering the outputs.
        self._last_is_state = spec.pooling == "last" and not self.residual[-1]
        self.encoder_dropout = nn.Dropout(enc.dropout)
        self.attention = AttentionPool(spec.features_size) if spec.pooling == "attention" else None
        self.dense = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in head_layer_sizes(spec))
        self.head_dropout = nn.Dropout(spec.head.dropout if spec.head else 0.0)
        # a CRF head: forward still returns the per-step logits (its emission scores); the
        # trainer and `decode` use the CRF on them
        self.crf = Crf(spec.head.num_outputs) if spec.head is not None and spec.head.crf else None
        self.to(getattr(torch, spec.dtype))
        for path, param in self.named_parameters():
            if path in set(frozen_zero_biases(spec)):
                param.requires_grad_(False)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, steps = inputs.shape[0], inputs.shape[1]
        x = self.embedding(inputs) if self.embedding is not None else inputs
        # fast path: no packing when nothing is padded
        full = lengths is None or bool((lengths == steps).all())
        padded = not full and self._runs_padded(x, lengths)
        state_is_last = self._last_is_state and not (self.training and self.encoder_dropout.p > 0)
        if state_is_last and not padded:
            _, state = self._encode_full(x) if full or lengths is None else self._encode_packed(x, lengths)
            return self._head(self._last_state(state))
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.int64)
        mask = torch.arange(steps, device=x.device)[None, :] < lengths.to(x.device)[:, None]
        if full:
            seq, _ = self._encode_full(x)
        elif padded:
            # padded steps hold whatever the recurrence made of the padding: zero them for pooling
            seq = self._encode_padded(x, lengths).masked_fill(~mask[:, :, None], 0.0)
        else:
            packed, _ = self._encode_packed(x, lengths)
            seq, _ = pad_packed_sequence(packed, batch_first=True, total_length=steps)
        out = self._pool(seq, lengths, mask)
        out = self._head(out)
        if self.spec.per_step_output and self.spec.head is not None:
            out = out * mask[:, :, None].to(out.dtype)
        return out

    def train(self, mode: bool = True) -> RnnModel:
        # rnncore.predict switches to eval mode and back around every batch; when every submodule
        # is in that mode already, skip nn.Module's walk (a __setattr__ per submodule, ~30 us)
        if isinstance(mode, bool) and all(m.training is mode for m in self.modules()):
            return self
        return super().train(mode)

    def _last_state(self, state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # LSTM: (h, c); h is (layers x directions, B, H), the last layer's directions at the end
        h = state[0] if isinstance(state, tuple) else state
        return torch.cat([h[-2], h[-1]], dim=1) if self.spec.encoder.bidirectional else h[-1]

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        # nn.Dropout is the identity in eval mode and at p=0 (and draws no random numbers then)
        return self.encoder_dropout(x) if self.training and self.encoder_dropout.p > 0 else x

    def _encode_full(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        between_layers = any(self.residual) or (self.training and self.encoder_dropout.p > 0)
        if x.device.type == "cpu" and not between_layers:
            return _run_stacked(self.encoder, x)
        state = None
        for rnn, residual in zip(self.encoder, self.residual, strict=True):
            out, state = rnn(x)
            out = self._dropout(out)
            x = out + x if residual else out
        return x, state

    def _runs_padded(self, x: torch.Tensor, lengths: torch.Tensor | None) -> bool:
        """Whether a padded batch runs faster over the whole padded tensor than packed.

        Only on CPU, where torch's packed RNN steps through time in small slices (cuDNN runs
        packed batches natively: `benchmarks/gpu_check.sh` times packed against unpacked
        hand-written cuDNN code to tell whether a GPU wants this too), and not for ReLU RNNs,
        whose state can grow without bound over a long run of padding (inf * 0 = nan in the
        weight gradients).
        """
        enc = self.spec.encoder
        if lengths is None or x.device.type != "cpu" or (enc.cell == "rnn" and enc.nonlinearity == "relu"):
            return False
        training = torch.is_grad_enabled()
        if training and x.shape[1] < PADDED_RUN_MIN_STEPS[enc.cell]:
            return False
        fill = float(lengths.sum()) / (lengths.numel() * x.shape[1])
        return fill >= PADDED_RUN_MIN_FILL["training" if training else "inference"]

    def _encode_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Padding follows each row's valid steps, so a forward direction run over it computes
        # every valid output exactly; a backward direction must start at each row's last valid
        # step, so it runs over the rows reversed within their lengths (padding left in place,
        # after them) and its outputs are put back in order by the same permutation. Residuals
        # and dropout act on padded steps too; nothing valid reads them. Rows run sorted longest
        # first, so that the rows still going at any step are a prefix (`length_spans`).
        order = torch.argsort(lengths, descending=True, stable=True)
        lengths = lengths.index_select(0, order)
        spans = length_spans(lengths.tolist(), x.shape[1])
        lengths = lengths.to(x.device)
        x = x.index_select(0, order.to(x.device))
        for rnn, residual in zip(self.encoder, self.residual, strict=True):
            out = self._dropout(_run_padded(cast(nn.RNNBase, rnn), x, lengths, spans))
            x = out + x if residual else out
        return x.index_select(0, torch.argsort(order).to(x.device))

    def _encode_packed(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[PackedSequence, Any]:
        # Packing makes each row stop at its length and the backward direction start at its
        # last valid step. Residuals and dropout act on `.data` directly: a layer's input and
        # output share one packing, so the rows line up without unpacking between layers.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        state = None
        for rnn, residual in zip(self.encoder, self.residual, strict=True):
            out, state = rnn(packed)  # the state comes back in the batch's own row order
            data = self._dropout(out.data)
            data = data + packed.data if residual else data
            packed = PackedSequence(data, out.batch_sizes, out.sorted_indices, out.unsorted_indices)
        return packed, state

    def _pool(self, seq: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooling = self.spec.pooling
        if pooling == "none":
            return seq
        if pooling == "last":
            rows = torch.arange(seq.shape[0], device=seq.device)
            last = seq[rows, lengths.to(seq.device) - 1]
            if not self.spec.encoder.bidirectional:
                return last
            hidden = self.spec.encoder.hidden_size
            # the backward direction ends at step 0
            return torch.cat([last[:, :hidden], seq[:, 0, hidden:]], dim=1)
        if pooling == "mean":
            return seq.sum(dim=1) / lengths.to(seq.device, seq.dtype)[:, None]
        if pooling == "max":
            return seq.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1)
        assert self.attention is not None
        return self.attention(seq, mask)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.dense) - 1
        for i, dense in enumerate(self.dense):
            x = dense(x)
            if i < last:
                x = self.head_dropout(self._activate(x))
        return x

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        head = self.spec.head
        assert head is not None
        if head.activation == "relu":
            return torch.relu(x)
        if head.activation == "leaky_relu":
            # explicit slope: torch's default (0.01) and Keras' (0.2 in Keras 3) differ
            return nn.functional.leaky_relu(x, negative_slope=head.negative_slope)
        if head.activation == "tanh":
            return torch.tanh(x)
        return nn.functional.gelu(x, approximate="none")


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse steps 0..L-1 of each row of (B, T, D) `x`; padded steps stay where they are.

    The permutation is its own inverse, so the same call reverses a result back.
    """
    steps = torch.arange(x.shape[1], device=x.device)[None, :]
    last = lengths[:, None] - 1
    index = torch.where(steps <= last, last - steps, steps)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


def length_spans(lengths: list[int], steps: int) -> list[tuple[int, int, int]]:
    """Where to cut a padded run in time, as (start, stop, rows) spans.

    `lengths` are the rows' valid steps, longest first; a span runs its first `rows` rows, those
    still going at `start` (the others ended: their state is final). Cuts fall at rows' lengths
    (the lengths at `SPAN_CANDIDATES` quantiles), chosen to compute the fewest rows x steps plus
    `SPAN_PRICE` x rows x steps of the whole batch per span; a nearly full batch stays one span.
    """
    count = len(lengths)
    if count == 0:
        return [(0, steps, 0)]
    quantiles = {lengths[(count * q) // SPAN_CANDIDATES] for q in range(1, SPAN_CANDIDATES)}
    edges = [0, *sorted(t for t in quantiles if 0 < t < steps), steps]
    rows = [sum(1 for n in lengths if n > start) for start in edges[:-1]]
    price = SPAN_PRICE * count * steps
    # cheapest[j]: the least cost of running steps 0..edges[j], and the edge its last span starts at
    cheapest: list[tuple[float, int]] = [(0.0, 0)]
    for j in range(1, len(edges)):
        cheapest.append(min((cheapest[i][0] + rows[i] * (edges[j] - edges[i]) + price, i) for i in range(j)))
    spans = []
    j = len(edges) - 1
    while j > 0:
        i = cheapest[j][1]
        spans.append((edges[i], edges[j], rows[i]))
        j = i
    return spans[::-1]


def _run_padded(
    rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor, spans: list[tuple[int, int, int]]
) -> torch.Tensor:
    """A one-layer RNN's outputs over a right-padded batch, each direction over its own order."""
    weights = rnn._flat_weights
    if not rnn.bidirectional:
        return _run_spans(rnn, x, weights, spans)
    # nn.RNNBase keeps one layer's weights as [w_ih, w_hh, b_ih, b_hh] per direction, forward
    # first. The module runs both directions over the same order, so each runs on its own here.
    half = len(weights) // 2
    forward = _run_spans(rnn, x, weights[:half], spans)
    # reversed within their lengths, rows keep their lengths: the same spans fit
    backward = _run_spans(rnn, reverse_within_length(x, lengths), weights[half:], spans)
    return torch.cat([forward, reverse_within_length(backward, lengths)], dim=2)


def _run_spans(
    rnn: nn.RNNBase, x: torch.Tensor, weights: list[Any], spans: list[tuple[int, int, int]]
) -> torch.Tensor:
    """One direction over (B, T, D) `x`, rows longest first, span by span; rows that ended get zeros.

    Each span starts from the state the previous one left in its rows, so the valid outputs
    are the single run's; the steps of the rows that ended before a span are not computed.
    """
    batch = x.shape[0]
    state = None
    outputs = []
    for start, stop, rows in spans:
        if state is not None:
            state = tuple(s[:, :rows] for s in state) if isinstance(state, tuple) else state[:, :rows]
        out, state = _fused(rnn, x[:rows, start:stop], weights, 1, False, state)
        outputs.append(nn.functional.pad(out, (0, 0, 0, 0, 0, batch - rows)) if rows < batch else out)
    return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def _run_stacked(layers: nn.ModuleList, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Stacked one-layer RNNs with nothing between them, as one multi-layer fused kernel call.

    What `nn.LSTM(num_layers=N)` runs: the kernel loops over the layers in C++, where one call per
    layer pays nn.RNNBase's Python checks each time (~0.15 ms of a 1.2 ms forward of a 2-layer
    LSTM at batch 1, length 32; a single layer skips them too). The layers' weight lists,
    concatenated, are the multi-layer module's (per layer, per direction: w_ih, w_hh, b_ih,
    b_hh). CPU only: cuDNN wants them in one contiguous buffer, and would copy them on every call.
    """
    rnns = [cast(nn.RNNBase, rnn) for rnn in layers]
    weights = [w for rnn in rnns for w in rnn._flat_weights if w is not None]
    return _fused(rnns[0], x, weights, len(rnns), rnns[0].bidirectional)


def _fused(
    rnn: nn.RNNBase, x: torch.Tensor, weights: list[Any], layers: int, bidirectional: bool, state: Any = None
) -> tuple[torch.Tensor, Any]:
    """The ATen kernel nn.LSTM/GRU/RNN.forward calls: (outputs, final state); `state` None is zeros."""
    if state is None:
        zeros = x.new_zeros(layers * (2 if bidirectional else 1), x.shape[0], rnn.hidden_size)
        state = (zeros, zeros) if rnn.mode == "LSTM" else zeros
    # positional flags: has_biases, num_layers, dropout, train, bidirectional, batch_first
    flags = (rnn.bias, layers, 0.0, rnn.training, bidirectional, True)
    if rnn.mode == "LSTM":
        out, h, c = torch.lstm(x, list(state), weights, *flags)
        return out, (h, c)
    kernel = {"GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}[rnn.mode]
    out, h = kernel(x, state, weights, *flags)
    return out, h
