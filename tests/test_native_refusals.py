"""When torch.fx cannot trace a forward, the refusal names the user's line, the construct and the fix."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from rnncore.native import UnsupportedNativeModel, from_native

VOCAB, EMB, HID = 20, 6, 5


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
        self.lstm = nn.LSTM(EMB, HID, batch_first=True)
        self.cell = nn.LSTMCell(EMB, HID)
        self.fc = nn.Linear(HID, 2)


class UsesLen(_Base):
    def forward(self, text: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(1, len(text), HID)
        _, (h_n, _) = self.lstm(self.embedding(text), (h0, h0))
        return self.fc(h_n[-1])


class Asserts(_Base):
    def forward(self, text: torch.Tensor) -> torch.Tensor:
        assert text.dim() == 2, "ids are (batch, steps)"
        return self.fc(self.lstm(self.embedding(text))[1][0][-1])


class LoopsOverSteps(_Base):
    def forward(self, text: torch.Tensor) -> torch.Tensor:
        x = self.embedding(text)
        h = c = x.new_zeros(x.size(0), HID)
        for t in range(x.size(1)):
            h, c = self.cell(x[:, t], (h, c))
        return self.fc(h)


class BranchesOnData(_Base):
    def forward(self, text: torch.Tensor) -> torch.Tensor:
        if text.max() > VOCAB:
            text = text.clamp(max=VOCAB - 1)
        return self.fc(self.lstm(self.embedding(text))[1][0][-1])


class LoopsAndTakesThreeArguments(LoopsOverSteps):
    def forward(self, text: torch.Tensor, lengths: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        return super().forward(text) * scale


def _line_of(model: type[nn.Module], code: str) -> int:
    lines, first = inspect.getsourcelines(model.forward)
    return first + next(i for i, line in enumerate(lines) if code in line)


@pytest.mark.parametrize(
    ("model", "code", "construct", "fix"),
    [
        (UsesLen, "len(text)", "len() of a tensor", "x.size(0)"),
        (Asserts, "assert text.dim() == 2", "an assert on the data", "before calling the model"),
        (LoopsOverSteps, "for t in range(x.size(1))", "a Python loop", "over the whole sequence"),
        (BranchesOnData, "if text.max() > VOCAB", "control flow on the data", "torch.where"),
    ],
)
def test_untraceable_forward_names_the_line_the_construct_and_the_fix(model, code, construct, fix):
    with pytest.raises(UnsupportedNativeModel) as err:
        from_native(model())
    line = _line_of(model, code)
    assert err.value.layer == f"{model.__name__}.forward, line {line} of test_native_refusals.py"
    assert "torch.fx cannot trace `" in err.value.reason and code in err.value.reason
    assert construct in err.value.reason and fix in err.value.reason
    # declaring pooling is suggested only where the import is then checked by running the model
    assert "checked against the model's own outputs" in err.value.reason


def test_no_declared_pooling_is_suggested_where_the_model_cannot_be_called():
    with pytest.raises(UnsupportedNativeModel, match="a Python loop") as err:
        from_native(LoopsAndTakesThreeArguments())
    assert "pooling" not in err.value.reason
