"""Idioms of public torch models that import exactly (issue 29, part 4), each as a minimal model.

Every import is verified by `from_native` itself; these tests also compare the import with
the module on their own padded batch, through the numpy oracle.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd import Variable
from torch.nn.utils.rnn import pack_padded_sequence

import rnncore
from rnncore.native import ImportNotVerified, UnsupportedNativeModel, from_native, import_native
from rnncore.tolerances import assert_close

VOCAB, EMB, HID = 20, 6, 5
LENGTHS = np.array([6, 5, 3, 2, 1])


def _ids(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(LENGTHS), LENGTHS.max()), dtype=np.int64)
    for row, n in enumerate(LENGTHS):
        ids[row, :n] = rng.integers(1, VOCAB, n)
    return ids


def _matches_the_oracle(model: nn.Module, passes_lengths: bool = True) -> float:
    spec, weights = from_native(model)
    x = _ids()
    args = (torch.from_numpy(x), torch.from_numpy(LENGTHS)) if passes_lengths else (torch.from_numpy(x),)
    model.eval()
    with torch.no_grad():
        native = model(*args).numpy()
    oracle = rnncore.reference_forward(spec, weights, x)
    assert_close(oracle, native, "outputs", spec.dtype)
    return float(np.abs(oracle - native).max())


class ZeroStates(nn.Module):
    """Initial states made the pre-0.4 way: Variable(torch.zeros(...)) moved to the input's device."""

    def __init__(self, cuda: bool = False) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.lstm = nn.LSTM(EMB, HID, batch_first=True)
        self.fc = nn.Linear(HID, 3)
        self.cuda_states = cuda

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h0 = Variable(torch.zeros(1, text.size(0), HID))
        c0 = Variable(torch.zeros(1, text.size(0), HID), requires_grad=False)
        h0, c0 = (h0.cuda(), c0.cuda()) if self.cuda_states else (h0.to(text.device), c0.to(text.device))
        packed = pack_padded_sequence(self.embedding(text), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed, (h0, c0))
        return self.fc(h_n[-1])


class BatchNormHead(nn.Module):
    """BiGRU final state -> BatchNorm1d -> Linear -> ReLU -> BatchNorm1d -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.gru = nn.GRU(EMB, HID, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(
            nn.BatchNorm1d(2 * HID), nn.Linear(2 * HID, 7), nn.ReLU(), nn.BatchNorm1d(7), nn.Linear(7, 3)
        )

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(text), lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)
        return self.head(torch.cat((h_n[-2], h_n[-1]), dim=1))


def _with_statistics(model: nn.Module) -> nn.Module:
    """Running statistics far from (0, 1), as after training."""
    torch.manual_seed(4)
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.2, 3)
            norm.weight.uniform_(0.5, 2)
            norm.bias.uniform_(-1, 1)
    return model


class BackwardFirst(nn.Module):
    """A 2-layer BiLSTM whose head reads the last layer's state backward half first."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.lstm = nn.LSTM(EMB, HID, num_layers=2, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(2 * HID, 3)

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(text), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.fc(self.drop(torch.cat((h_n[-1], h_n[-2]), dim=1)))


def test_variable_and_to_device_zero_states_are_zeros():
    torch.manual_seed(0)
    assert _matches_the_oracle(ZeroStates()) < 1e-5


def test_cuda_zero_states_are_zeros_and_verified_where_cuda_runs():
    torch.manual_seed(0)
    model = ZeroStates(cuda=True)
    if torch.cuda.is_available():
        assert import_native(model.cuda()).verified
        return
    with pytest.warns(ImportNotVerified, match="CUDA|cuda"):
        found = import_native(model)  # read exactly, but .cuda() cannot run on this machine
    assert found.spec.pooling == "last" and not found.verified


def test_batchnorm_folds_into_the_linear_after_it():
    torch.manual_seed(0)
    model = _with_statistics(BatchNormHead()).train()  # verification runs it in eval mode
    spec, _ = from_native(model)
    assert spec.head is not None and spec.head.hidden == (7,)
    assert model.training  # left as it was
    assert _matches_the_oracle(model) < 1e-5


def test_batchnorm_without_running_statistics_is_refused():
    model = BatchNormHead()
    model.head[0] = nn.BatchNorm1d(2 * HID, track_running_stats=False)
    with pytest.raises(UnsupportedNativeModel, match="track_running_stats=False"):
        from_native(model)


def test_backward_first_state_permutes_the_head_columns():
    torch.manual_seed(0)
    model = BackwardFirst()
    spec, weights = from_native(model)
    assert spec.pooling == "last" and spec.encoder.bidirectional
    fc = model.fc.weight.detach().numpy()
    np.testing.assert_array_equal(weights["head.output.weight"][:, :HID], fc[:, HID:])
    assert _matches_the_oracle(model) < 1e-5


def test_verified_idioms_raise_no_warning():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImportNotVerified)
        from_native(BackwardFirst())


class AllStateRows(nn.Module):
    """One BiGRU layer; the head reads all of h_n's rows: h_n.transpose(0, 1) flattened."""

    def __init__(self, layers: int = 1, how: str = "view") -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.gru = nn.GRU(EMB, HID, num_layers=layers, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * layers * HID, 3)
        self.how = how

    def forward(self, text: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(text), lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)
        if self.how == "view":
            rows = h_n.transpose(0, 1).contiguous().view(text.size(0), -1)
        elif self.how == "reshape":
            rows = h_n.permute(1, 0, 2).reshape(text.size(0), -1)
        else:
            rows = torch.flatten(h_n.transpose(0, 1), start_dim=1)
        return self.fc(rows)


@pytest.mark.parametrize("how", ["view", "reshape", "flatten"])
def test_all_state_rows_of_one_layer_are_last_pooling(how):
    torch.manual_seed(0)
    model = AllStateRows(how=how)
    assert from_native(model)[0].pooling == "last"
    assert _matches_the_oracle(model) < 1e-5


def test_all_state_rows_of_two_layers_are_refused():
    with pytest.raises(UnsupportedNativeModel, match="lower layers included"):
        from_native(AllStateRows(layers=2))
