"""Verified imports: `from_native` runs the native model and the import on a probe batch.

The two silent wrong imports of issue 29 are reproduced here with our own minimal models of
their shape; both must now be refused, naming the measured difference.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnncore
from rnncore.native import ImportNotVerified, UnsupportedNativeModel, from_native, import_native

VOCAB, EMB, HID = 20, 6, 5


class DotAttentionLSTM(nn.Module):
    """LSTM, then dot-product attention of the last state over all outputs (a common tutorial)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.lstm = nn.LSTM(EMB, HID, batch_first=True)
        self.fc = nn.Linear(HID, 3)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        out, (h_n, _) = self.lstm(self.embedding(text))
        scores = torch.bmm(out, h_n[-1].unsqueeze(2)).squeeze(2)  # (B, T)
        alpha = F.softmax(scores, dim=1)
        context = torch.bmm(out.transpose(1, 2), alpha.unsqueeze(2)).squeeze(2)
        return self.fc(context)


class StatefulTagger(nn.Module):
    """A tagger whose forward starts from, and keeps, `self.hidden` between calls."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.lstm = nn.LSTM(EMB, HID, batch_first=True)
        self.tag = nn.Linear(HID, 4)
        self.out = nn.LogSoftmax(dim=-1)
        self.hidden: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        out, hidden = self.lstm(self.embedding(text), self.hidden)
        self.hidden = (hidden[0].detach(), hidden[1].detach())
        return self.out(self.tag(out))


class PackedLSTM(nn.Module):
    """A model rnncore reads exactly; its forward takes a third, required argument."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.lstm = nn.LSTM(EMB, HID, batch_first=True)
        self.fc = nn.Linear(HID, 2)

    def forward(self, text: torch.Tensor, lengths: torch.Tensor, scale: float) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(text), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.fc(h_n[-1]) * scale


def _measured(err: pytest.ExceptionInfo[UnsupportedNativeModel]) -> float:
    found = re.search(r"differ by up to ([0-9.e+-]+)", err.value.reason)
    assert found, err.value.reason
    return float(found.group(1))


def test_attention_with_declared_last_pooling_is_refused_with_the_difference():
    torch.manual_seed(0)
    with pytest.raises(UnsupportedNativeModel, match="computes another function") as err:
        from_native(DotAttentionLSTM(), pooling="last")
    assert err.value.layer == "DotAttentionLSTM"
    assert _measured(err) > 1e-3  # a real difference, not rounding
    assert "declared pooling=" in err.value.reason


def test_functional_ops_a_declared_reading_cannot_see_are_caught():
    class SquashedLogits(StatelessTagger):
        def forward(self, text: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.tag(self.lstm(self.embedding(text))[0])))

    with pytest.raises(UnsupportedNativeModel, match="call 1 of 2") as err:
        from_native(SquashedLogits(), pooling="none")
    assert _measured(err) > 1e-3


def test_attention_without_declared_pooling_is_refused_at_the_op():
    with pytest.raises(UnsupportedNativeModel, match="no rnncore equivalent"):
        from_native(DotAttentionLSTM())


def test_state_kept_between_calls_is_refused():
    torch.manual_seed(0)
    model = StatefulTagger()
    with pytest.raises(UnsupportedNativeModel, match="call 2 of 2") as err:
        from_native(model, pooling="none")
    assert "keeps state between calls" in err.value.reason
    assert _measured(err) > 1e-3


class StatelessTagger(StatefulTagger):
    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.out(self.tag(self.lstm(self.embedding(text))[0]))


class GRUSteps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.gru = nn.Embedding(VOCAB, EMB), nn.GRU(EMB, HID, batch_first=True)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.gru(self.embedding(text))[0]


def test_a_stateless_model_imports_with_its_measured_difference():
    torch.manual_seed(0)
    found = import_native(StatelessTagger(), pooling="none")
    assert found.verified and found.diff is not None and found.diff.ok
    assert found.diff.max_abs < 1e-5
    assert found.card_notes()[0].startswith("import verified")


def test_tracing_leaves_the_model_as_it_was():
    model = StatefulTagger()
    with pytest.raises(UnsupportedNativeModel):
        from_native(model)  # refused: the forward reads self.hidden
    assert model.hidden is None  # not the tracer's Proxy


def test_a_model_that_cannot_be_called_warns_and_the_card_says_so(tmp_path):
    torch.manual_seed(0)
    with pytest.warns(ImportNotVerified, match="3 required arguments"):
        found = import_native(PackedLSTM(), pooling="last")
    assert not found.verified
    assert found.card_notes() == [f"import not verified: {found.not_verified}"]
    model = rnncore.build(found.spec, backend="torch", weights=found.weights)
    card = (rnncore.bundle.save(model, tmp_path / "b", notes=found.card_notes()) / "README.md").read_text()
    assert "import not verified: forward takes 3 required arguments" in card


def test_verified_imports_do_not_warn():
    torch.manual_seed(0)
    model = GRUSteps()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec, weights = from_native(model)
    x = np.array([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        native = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rnncore.reference_forward(spec, weights, x), native, atol=1e-5)


class RecordsTF32(GRUSteps):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
        return super().forward(text)


def test_the_probe_runs_without_tensorfloat32_and_puts_the_settings_back():
    torch.manual_seed(0)
    model = RecordsTF32()
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        from_native(model)
        assert model.seen[-2:] == [False, False]  # both probe calls (after the trace), full float32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
