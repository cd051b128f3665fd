"""Importing hand-written torch models: `rnncore.native.from_native` on ordinary nn.Modules.

Each supported pattern is a small model written the way tutorials write them. Its import is
compiled on the other backend (Keras) and compared with the original torch module on a
right-padded batch, and with the numpy oracle. Refusals must name the layer and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnncore
from rnncore.native import UnsupportedNativeModel, from_native
from rnncore.registry import backend_for_native
from rnncore.tolerances import assert_close

VOCAB, EMB, HID = 20, 6, 5
LENGTHS = np.array([6, 2, 4, 1, 5])  # includes a full-length row, so pad_packed keeps T steps
STEPS = int(LENGTHS.max())


def token_batch(seed: int = 0) -> np.ndarray:
    """Right-padded ids: real ids 1..VOCAB-1 at valid steps, padding_idx 0 after them."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(LENGTHS), STEPS), dtype=np.int64)
    for row, n in enumerate(LENGTHS):
        ids[row, :n] = rng.integers(1, VOCAB, n)
    return ids


def feature_batch(width: int, dtype: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((len(LENGTHS), STEPS, width)).astype(dtype)


# ---- models, tutorial style -----------------------------------------------------------------


class SentimentLSTM(nn.Module):
    """Packed 2-layer BiLSTM, final states of both directions, MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.lstm = nn.LSTM(EMB, HID, num_layers=2, batch_first=True, bidirectional=True, dropout=0.2)
        self.dropout = nn.Dropout(0.3)
        self.fc1 = nn.Linear(2 * HID, 7)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(7, 3)

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(text)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        hidden = torch.cat((h_n[-2], h_n[-1]), dim=1)  # last layer: forward, backward
        return self.fc2(self.relu(self.fc1(self.dropout(hidden))))


class GRUTagger(nn.Module):
    """Packed BiGRU, one Linear on every step."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.gru = nn.GRU(EMB, HID, batch_first=True, bidirectional=True)
        self.tag = nn.Linear(2 * HID, 4)

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(text), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)
        return F.log_softmax(self.tag(out), dim=-1)


class MeanPoolGRU(nn.Module):
    """Mean over valid steps: sum of zero-padded outputs divided by the lengths."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.gru = nn.GRU(EMB, HID, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(HID, 6), nn.Tanh(), nn.Dropout(0.1), nn.Linear(6, 2))

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(text), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)
        pooled = out.sum(dim=1) / lengths.unsqueeze(1).to(out.dtype)
        return self.head(pooled)


class MaxPoolLSTM(nn.Module):
    """Max over valid steps: padding filled with -inf so that it never wins; GELU head."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.lstm = nn.LSTM(EMB, HID, batch_first=True, bidirectional=True)
        self.fc1 = nn.Linear(2 * HID, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(text), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, padding_value=float("-inf"))
        pooled, _ = torch.max(out, dim=1)
        return self.fc2(F.gelu(self.fc1(pooled)))


class ElmanClassifier(nn.Module):
    """Real-valued features, 2-layer relu Elman RNN, h_n[-1], leaky head, sigmoid outputs."""

    def __init__(self, features: int = 3) -> None:
        super().__init__()
        self.rnn = nn.RNN(features, HID, num_layers=2, nonlinearity="relu", batch_first=True)
        self.fc1 = nn.Linear(HID, 4)
        self.act = nn.LeakyReLU(0.2)
        self.fc2 = nn.Linear(4, 3)
        self.out = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(2, x.size(0), HID, dtype=x.dtype)
        _, h_n = self.rnn(x, h0)
        return self.out(self.fc2(self.act(self.fc1(h_n[-1]))))


class SeqFirstLSTM(nn.Module):
    """batch_first=False throughout: text is (T, B), as in torchtext-era tutorials."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.rnn = nn.LSTM(EMB, HID, bidirectional=True)
        self.fc = nn.Linear(2 * HID, 3)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, text: torch.Tensor, text_lengths: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(text)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, text_lengths, enforce_sorted=False)
        _, (hidden, _) = self.rnn(packed)
        hidden = torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1)
        return self.softmax(self.fc(hidden))


class StackedGRUs(nn.Module):
    """Two single-layer GRU modules with dropout between, run over the padding (no packing)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.grus = nn.ModuleList(
            [nn.GRU(EMB, HID, batch_first=True), nn.GRU(HID, HID, batch_first=True, bias=False)]
        )
        self.dropout = nn.Dropout(0.25)
        self.fc = nn.Linear(HID, 2)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        x = self.embedding(text)
        for gru in self.grus:
            x, _ = gru(x)
            x = self.dropout(x)
        return self.fc(x.mean(dim=1))


class NoPaddingIdxLSTM(nn.Module):
    """An embedding without padding_idx: every step is valid, the last output is the summary."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB)
        self.lstm = nn.LSTM(EMB, HID, batch_first=True)
        self.fc = nn.Linear(HID, 2)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(text))
        return self.fc(out[:, -1, :])


class UntraceableLSTM(nn.Module):
    """Python control flow on data: torch.fx cannot trace it, so its pooling is declared."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.lstm = nn.LSTM(EMB, HID, batch_first=True)
        self.fc = nn.Linear(HID, 2)

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if int(lengths.max()) < text.shape[1]:  # trim the common padding
            text = text[:, : int(lengths.max())]
        packed = pack_padded_sequence(self.embedding(text), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.fc(h_n[-1])


# ---- the comparison ---------------------------------------------------------------------------


@dataclass
class Case:
    make: Callable[[], nn.Module]
    pooling: str
    dtype: str = "float32"
    tokens: bool = True
    seq_first: bool = False  # the module reads (T, B)
    passes_lengths: bool = True
    final: str | None = None  # activation the module applies after its logits
    options: dict | None = None


CASES = {
    "bilstm-2layer-packed-last": Case(SentimentLSTM, "last"),
    "bigru-tagger-packed": Case(GRUTagger, "none", final="log_softmax"),
    "gru-2layer-mean": Case(MeanPoolGRU, "mean", dtype="float64"),
    "bilstm-max": Case(MaxPoolLSTM, "max"),
    "elman-relu-features": Case(ElmanClassifier, "last", tokens=False, passes_lengths=False, final="sigmoid"),
    "lstm-seq-first-float64": Case(SeqFirstLSTM, "last", dtype="float64", seq_first=True, final="softmax"),
    "stacked-grus-unpacked-mean": Case(StackedGRUs, "mean", passes_lengths=False),
    "no-padding-idx-last-step": Case(NoPaddingIdxLSTM, "last", passes_lengths=False),
    "declared-untraceable": Case(UntraceableLSTM, "last", options={"pooling": "last"}),
}


def _finish(logits: np.ndarray, final: str | None) -> np.ndarray:
    """Apply the native module's output activation to rnncore's logits."""
    t = torch.from_numpy(logits)
    if final == "sigmoid":
        t = torch.sigmoid(t)
    elif final == "softmax":
        t = torch.softmax(t, dim=-1)
    elif final == "log_softmax":
        t = torch.log_softmax(t, dim=-1)
    return t.numpy()


def _native_outputs(model: nn.Module, case: Case, x: np.ndarray) -> np.ndarray:
    inputs = torch.from_numpy(x.swapaxes(0, 1).copy() if case.seq_first else x)
    args = (inputs, torch.from_numpy(LENGTHS)) if case.passes_lengths else (inputs,)
    with torch.no_grad():
        return model(*args).numpy()


def import_and_compare(case: Case) -> tuple[rnncore.ModelSpec, float, float]:
    """Import, build on Keras, compare with the torch original and the oracle; the max abs diffs."""
    torch.manual_seed(0)
    model = case.make().to(getattr(torch, case.dtype)).eval()
    spec, weights = from_native(model, **(case.options or {}))
    x = token_batch() if case.tokens else feature_batch(spec.input.size, case.dtype)
    native = _native_outputs(model, case, x)
    keras_model = rnncore.build(spec, backend="tensorflow", weights=weights)
    keras = _finish(rnncore.predict(keras_model, x), case.final)  # lengths derived from padding
    oracle = _finish(rnncore.reference_forward(spec, weights, x), case.final)
    if spec.per_step_output:  # the native module's padded steps hold whatever it left there
        valid = np.arange(STEPS)[None, :] < LENGTHS[:, None]
        native, keras, oracle = native[valid], keras[valid], oracle[valid]
    assert_close(keras, native, "outputs", case.dtype)
    assert_close(oracle, native, "outputs", case.dtype)
    return spec, float(np.abs(keras - native).max()), float(np.abs(oracle - native).max())


def test_sentiment_lstm_spec_and_weights():
    torch.manual_seed(0)
    model = SentimentLSTM()
    spec, weights = from_native(model)
    assert spec.input.to_dict() == {
        "kind": "tokens",
        "vocab_size": VOCAB,
        "embedding_dim": EMB,
        "padding_idx": 0,
    }
    enc = spec.encoder
    assert (enc.cell, enc.hidden_size, enc.num_layers, enc.bidirectional) == ("lstm", HID, 2, True)
    assert enc.dropout == 0.2  # nn.LSTM's own dropout, between its layers
    assert spec.head is not None and spec.head.hidden == (7,) and spec.head.activation == "relu"
    assert (spec.head.num_outputs, spec.head.task, spec.head.dropout) == (3, "classification", 0.3)
    assert set(weights) == set(rnncore.canonical_shapes(spec))
    # LSTM biases fold into one; the reverse direction of layer 1 is bwd
    expected = (model.lstm.bias_ih_l1_reverse + model.lstm.bias_hh_l1_reverse).detach().numpy()
    np.testing.assert_array_equal(weights["encoder.layers.1.bwd.b"], expected)
    np.testing.assert_array_equal(
        weights["encoder.layers.1.bwd.W_hh"], model.lstm.weight_hh_l1_reverse.detach()
    )


def test_gru_keeps_both_biases_and_tagging_is_inferred():
    spec, weights = from_native(GRUTagger())
    assert spec.head is not None and spec.head.task == "tagging" and spec.pooling == "none"
    assert {"encoder.layers.0.fwd.b_ih", "encoder.layers.0.fwd.b_hh"} <= set(weights)


def test_stacked_modules_become_one_encoder_and_unpacked_runs_read_padding_as_steps():
    spec, weights = from_native(StackedGRUs())
    assert spec.encoder.num_layers == 2 and spec.encoder.dropout == 0.25
    # the forward runs the GRUs over padding, so every step is valid in the spec too
    assert spec.input.padding_idx is None
    assert not weights["encoder.layers.1.fwd.b_ih"].any()  # bias=False -> zero biases


def test_final_activations_set_the_task():
    assert from_native(ElmanClassifier())[0].head.task == "multilabel"
    assert from_native(SeqFirstLSTM())[0].head.task == "classification"
    assert from_native(MeanPoolGRU(), task="regression")[0].head.task == "regression"


def test_untraceable_forward_needs_declared_pooling():
    with pytest.raises(UnsupportedNativeModel, match="pooling=") as err:
        from_native(UntraceableLSTM())
    assert err.value.layer.startswith("UntraceableLSTM.forward, line ")
    assert "torch.fx cannot trace" in err.value.reason and "control flow on the data" in err.value.reason


def test_models_built_by_rnncore_come_back_as_they_are():
    spec = rnncore.ModelSpec.from_dict(
        {"input": {"kind": "tokens", "vocab_size": VOCAB, "embedding_dim": EMB},
         "encoder": {"cell": "gru", "hidden_size": HID}, "pooling": "attention", "head": {"num_outputs": 2}}
    )  # fmt: skip
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=1))
    got_spec, weights = from_native(model)
    assert got_spec == spec
    for name, value in rnncore.init_weights(spec, seed=1).items():
        np.testing.assert_array_equal(weights[name], value)


def test_torch_modules_dispatch_to_the_torch_backend():
    from rnncore_torch import owns_native

    assert owns_native(nn.Linear(2, 2)) and not owns_native(object())
    assert backend_for_native(SentimentLSTM()).NAME == "torch"


# ---- more idioms, against the oracle only (cheap: no Keras build) ---------------------------


class Idiom(nn.Module):
    """emb -> rnn -> fc1 (-> fc2) with the forward given as a function of the layers."""

    def __init__(self, forward: Callable[..., torch.Tensor], rnn: nn.RNNBase, out: int = 2, **emb) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMB, **emb)
        self.rnn = rnn
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        self.fc1 = nn.Linear(width, out)
        self.fc2 = nn.Linear(out, 2)
        self._forward = forward

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._forward(self, text, lengths)


def _zero_state_functional_head(m: Idiom, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    h0 = torch.zeros(1, text.size(0), HID).to(text.device)
    _, (h_n, _) = m.rnn(m.emb(text.long()), (h0, torch.zeros_like(h0)))
    return m.fc2(F.dropout(F.leaky_relu(m.fc1(h_n[-1]), 0.3), p=0.1, training=m.training))


def _permuted_seq_first_mean(m: Idiom, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    out, _ = m.rnn(m.emb(text).permute(1, 0, 2))  # (T, B, E) for a batch_first=False GRU
    return m.fc2(torch.tanh(m.fc1(torch.mean(out.permute(1, 0, 2), 1))))


def _packed_relu_rnn_max(m: Idiom, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(m.emb(text), lengths, batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(m.rnn(packed)[0], batch_first=True)  # zero padding: relu outputs are >= 0
    return m.fc1(out.max(1).values)


IDIOMS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "h_n.squeeze(0)": (
        lambda: Idiom(
            lambda m, t, n: m.fc1(m.rnn(m.emb(t))[1].squeeze(0)), nn.GRU(EMB, HID, batch_first=True)
        ),
        "last",
    ),
    "out[:, -1, :]": (
        lambda: Idiom(
            lambda m, t, n: m.fc1(m.rnn(m.emb(t))[0][:, -1, :]), nn.LSTM(EMB, HID, batch_first=True)
        ),
        "last",
    ),
    "ids.t() + out[-1]": (
        lambda: Idiom(lambda m, t, n: m.fc1(m.rnn(m.emb(t.t()))[0][-1]), nn.RNN(EMB, HID)),
        "last",
    ),
    "torch.amax over unpacked": (
        lambda: Idiom(
            lambda m, t, n: m.fc1(torch.amax(m.rnn(m.emb(t))[0], dim=1)), nn.GRU(EMB, HID, 2, True, True)
        ),
        "max",
    ),
    "permute + torch.mean": (lambda: Idiom(_permuted_seq_first_mean, nn.GRU(EMB, HID), 3), "mean"),
    "zeros state + functional head": (
        lambda: Idiom(_zero_state_functional_head, nn.LSTM(EMB, HID, batch_first=True), 4, padding_idx=0),
        "last",
    ),
    "packed relu RNN, zero-padded max": (
        lambda: Idiom(
            _packed_relu_rnn_max, nn.RNN(EMB, HID, nonlinearity="relu", batch_first=True), padding_idx=0
        ),
        "max",
    ),
    "seq-first tagger transposed back": (
        lambda: Idiom(lambda m, t, n: m.fc1(m.rnn(m.emb(t.t()))[0]).transpose(0, 1), nn.GRU(EMB, HID)),
        "none",
    ),
}


@pytest.mark.parametrize("name", list(IDIOMS))
def test_idioms_match_the_oracle(name):
    make, pooling = IDIOMS[name]
    torch.manual_seed(1)
    model = make().eval()
    spec, weights = from_native(model)
    assert spec.pooling == pooling
    x = token_batch(seed=2)
    with torch.no_grad():
        native = model(torch.from_numpy(x), torch.from_numpy(LENGTHS)).numpy()
    assert_close(rnncore.reference_forward(spec, weights, x), native, "outputs", "float32")


def test_declared_pooling_reads_the_same_model_as_tracing():
    torch.manual_seed(0)
    model = MeanPoolGRU()
    traced, traced_weights = from_native(model)
    declared, declared_weights = from_native(model, pooling="mean")
    assert declared == traced
    for name, value in traced_weights.items():
        np.testing.assert_array_equal(declared_weights[name], value)


# ---- refusals ------------------------------------------------------------------------------


class Tiny(nn.Module):
    """embedding -> rnn -> h_n[-1] -> head; each refusal below swaps one part."""

    def __init__(self, rnn: nn.RNNBase | None = None, head: list[nn.Module] | None = None, **emb) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0, **emb)
        self.rnn = rnn if rnn is not None else nn.LSTM(EMB, HID, batch_first=True)
        self.head = nn.Sequential(*(head if head is not None else [nn.Linear(HID, 2)]))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(self.embedding(text))
        h_n = state[0] if isinstance(self.rnn, nn.LSTM) else state
        return self.head(h_n[-1])


class Custom(nn.Module):
    """Embedding + LSTM (+ extra layers) with the forward given as a function of the layers."""

    def __init__(self, forward: Callable[..., torch.Tensor], bidirectional: bool = False, **extra) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.rnn = nn.LSTM(EMB, HID, batch_first=True, bidirectional=bidirectional)
        self.extra = nn.ModuleDict(extra)
        self._forward = forward

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._forward(self, text, lengths)


def _packed_run(m: Custom, text: torch.Tensor, lengths: torch.Tensor) -> tuple:
    packed = pack_padded_sequence(m.emb(text), lengths, batch_first=True, enforce_sorted=False)
    return m.rnn(packed)


def _padded_out(m: Custom, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return pad_packed_sequence(_packed_run(m, text, lengths)[0], batch_first=True)[0]


def _head_on(*layers: nn.Module) -> Callable[[], nn.Module]:
    return lambda: Tiny(head=list(layers))


def _uses_cell_state() -> nn.Module:
    return Custom(lambda m, t, n: m.extra.fc(_packed_run(m, t, n)[1][1][-1]), fc=nn.Linear(HID, 2))


def _backward_half_only() -> nn.Module:
    return Custom(lambda m, t, n: m.extra.fc(_packed_run(m, t, n)[1][0][-1]), True, fc=nn.Linear(HID, 2))


def _activation_before_head() -> nn.Module:
    return Custom(
        lambda m, t, n: m.extra.fc(torch.relu(_packed_run(m, t, n)[1][0][-1])), fc=nn.Linear(HID, 2)
    )


def _mean_over_padding() -> nn.Module:
    return Custom(lambda m, t, n: _padded_out(m, t, n).mean(1))


def _max_over_zero_padding() -> nn.Module:
    return Custom(lambda m, t, n: _padded_out(m, t, n).amax(1))


def _nonzero_padding_row() -> nn.Module:
    model = SentimentLSTM()  # packs, so padding_idx=0 carries over and its row must be zero
    with torch.no_grad():
        model.embedding.weight[0] = 1.0
    return model


def _sum_without_lengths() -> nn.Module:
    return Custom(lambda m, t, n: m.extra.fc(_padded_out(m, t, n).sum(1)), fc=nn.Linear(HID, 2))


def _repadded_into_unpacked_rnn() -> nn.Module:
    def forward(m: Custom, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(m.emb(text), lengths, batch_first=True, enforce_sorted=False)
        return m.rnn(pad_packed_sequence(packed, batch_first=True)[0])[0]

    return Custom(forward)


def _residual_add() -> nn.Module:
    def forward(m: Custom, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = m.rnn(m.emb(text))[0]
        return m.extra.gru(x)[0] + x  # a residual connection around the second layer

    return Custom(forward, gru=nn.LSTM(HID, HID, batch_first=True))


def _attention() -> nn.Module:
    def forward(m: Custom, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = m.rnn(m.emb(text))[0]
        return m.extra.fc(m.extra.attn(out, out, out)[0][:, -1])

    return Custom(forward, attn=nn.MultiheadAttention(HID, 1, batch_first=True), fc=nn.Linear(HID, 2))


def _two_embeddings() -> nn.Module:
    return Custom(lambda m, t, n: m.rnn(m.emb(t) + m.extra.emb2(t))[0], emb2=nn.Embedding(VOCAB, EMB))


def _initial_state_parameter() -> nn.Module:
    return Custom(lambda m, t, n: m.rnn(m.emb(t), m.extra.h0.weight[None])[0], h0=nn.Linear(HID, 1))


def _returns_two_values() -> nn.Module:
    return Custom(lambda m, t, n: m.rnn(m.emb(t)))


def _conv_declared() -> nn.Module:
    return nn.Sequential(nn.Embedding(VOCAB, EMB), nn.Conv1d(EMB, EMB, 3), nn.LSTM(EMB, HID))


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))


def _custom_parameter_declared() -> nn.Module:
    return Custom(lambda m, t, n: t, fc=_Scaled())


# name: (model factory, from_native options, the layer it names, words of the reason)
REFUSALS: dict[str, tuple[Callable[[], nn.Module], dict, str, str]] = {
    "proj_size": (lambda: Tiny(nn.LSTM(EMB, HID, batch_first=True, proj_size=2)), {}, "rnn", "proj_size=2"),
    "gelu-tanh": (
        _head_on(nn.Linear(HID, 3), nn.GELU(approximate="tanh"), nn.Linear(3, 2)),
        {},
        "head.1",
        "approximate='tanh'",
    ),
    "mixed-activations": (
        _head_on(nn.Linear(HID, 3), nn.ReLU(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)),
        {},
        "head.3",
        "one activation",
    ),
    "leaky-slopes-differ": (
        _head_on(nn.Linear(HID, 3), nn.LeakyReLU(0.1), nn.Linear(3, 3), nn.LeakyReLU(0.2), nn.Linear(3, 2)),
        {},
        "head.3",
        "one activation",
    ),
    "layernorm": (_head_on(nn.LayerNorm(HID), nn.Linear(HID, 2)), {}, "head.0", "LayerNorm has no"),
    "batchnorm": (
        _head_on(nn.Linear(HID, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)),
        {},
        "head.1",
        "folds BatchNorm1d only",
    ),
    "conv1d-declared": (_conv_declared, {"pooling": "last"}, "1", "Conv1d has no"),
    "multihead-attention": (_attention, {}, "extra.attn", "MultiheadAttention has no"),
    "two-embeddings": (_two_embeddings, {}, "extra.emb2", "second embedding"),
    "max_norm": (lambda: Tiny(max_norm=1.0), {}, "embedding", "max_norm=1.0"),
    "sizes-do-not-chain": (lambda: Tiny(nn.GRU(EMB + 1, HID, batch_first=True)), {}, "rnn", "input_size=7"),
    "head-sizes-do-not-chain": (
        _head_on(nn.Linear(HID, 3), nn.ReLU(), nn.Linear(4, 2)),
        {},
        "head.2",
        "in_features=4",
    ),
    "linear-after-linear": (
        _head_on(nn.Linear(HID, 3), nn.Linear(3, 2)),
        {},
        "head.1",
        "no activation between",
    ),
    "activation-on-logits": (_head_on(nn.Linear(HID, 2), nn.ReLU()), {}, "head.1", "after the last Linear"),
    "float16": (lambda: Tiny().half(), {}, "embedding.weight", "float16"),
    "cell-state": (_uses_cell_state, {}, "getitem", "cell state c_n"),
    "backward-half-only": (_backward_half_only, {}, "extra.fc", "only the backward half"),
    "activation-before-head": (_activation_before_head, {}, "relu", "on the pooled"),
    "mean-over-padding": (_mean_over_padding, {}, "Tensor.mean", "averages padded steps"),
    "max-over-zero-padding": (_max_over_zero_padding, {}, "Tensor.amax", "padded steps hold 0.0"),
    "padding-row-not-zero": (_nonzero_padding_row, {}, "embedding.weight", "row padding_idx=0 is not zero"),
    "sum-without-lengths": (_sum_without_lengths, {}, "extra.fc", "reads a sum over time"),
    "repadded-into-unpacked-rnn": (_repadded_into_unpacked_rnn, {}, "rnn", "running over its padding"),
    "residual-add": (_residual_add, {}, "add", "no rnncore equivalent"),
    "initial-state-parameter": (_initial_state_parameter, {}, "extra.h0.weight", "a tensor used directly"),
    "returns-two-values": (_returns_two_values, {}, "Custom.forward", "several values"),
    "custom-parameter-declared": (
        _custom_parameter_declared,
        {"pooling": "last"},
        "extra.fc.scale",
        "a parameter outside any torch layer",
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals_name_the_layer_and_the_reason(name):
    make, options, layer, reason = REFUSALS[name]
    with pytest.raises(UnsupportedNativeModel) as err:
        from_native(make(), **options)
    assert layer in err.value.layer, err.value
    assert reason in err.value.reason, err.value
    assert str(err.value) == f"{err.value.layer}: {err.value.reason}"


def test_task_that_contradicts_the_output_activation_is_refused():
    with pytest.raises(UnsupportedNativeModel, match=r"task='classification' does not fit sigmoid"):
        from_native(ElmanClassifier(), task="classification")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="pooling='attention'"):
        from_native(SentimentLSTM(), pooling="attention")
    with pytest.raises(TypeError):
        from_native(SentimentLSTM(), batch_first=True)


# ---- against Keras and the oracle (last in the file: these import TensorFlow, after which
# conftest's per-test Keras clean-up makes every test slower) ---------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_imported_model_matches_the_original(name):
    case = CASES[name]
    spec, _, _ = import_and_compare(case)
    assert spec.pooling == case.pooling
    assert spec.dtype == case.dtype
