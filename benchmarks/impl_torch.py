"""PyTorch implementations: rnncore's model and the hand-written baseline.

rnncore's module (`rnncore.build(spec, "torch")`) is driven by the same code as the baseline's
for prediction (`rnncore_torch`), and once more through the public `rnncore.predict(model, ids,
lengths)` (`rnncore_torch_api`: batch checks, eval mode, numpy in and out), so the API's own
cost shows apart from the model's. Training is the backend's trainer (`make_trainer(model,
TrainConfig()).step(...)`: Adam, cross-entropy), as `rnncore train` runs it. The baseline is what
an expert writes by hand: `nn.Embedding -> nn.LSTM/GRU/RNN(num_layers, bidirectional) -> nn.Linear`
on the final hidden state, `pack_padded_sequence` for masked batches, `torch.inference_mode`,
`torch.optim.Adam`. Both convert numpy inputs and outputs inside the timed call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from .grid import NUM_CLASSES, Point
from .timing import Impl, Runner


class Baseline(nn.Module):
    def __init__(self, point: Point):
        super().__init__()
        cells = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
        self.lstm = point.cell == "lstm"
        self.bidirectional = point.bidirectional
        self.embedding = nn.Embedding(point.vocab, point.embedding, padding_idx=0)
        self.rnn = cells[point.cell](
            point.embedding, point.hidden, num_layers=point.layers, batch_first=True,
            bidirectional=point.bidirectional,
        )  # fmt: skip
        self.out = nn.Linear(point.hidden * (2 if point.bidirectional else 1), NUM_CLASSES)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embedding(ids)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(x)
        h = state[0] if self.lstm else state
        last = torch.cat([h[-2], h[-1]], dim=1) if self.bidirectional else h[-1]
        return self.out(last)


def _tensors(point: Point, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    return arrays["ids"], (arrays["lengths"] if point.masked else None), arrays["labels"]


def baseline(point: Point, name: str = "torch_eager", compiled: bool = False, device: str = "cpu") -> Impl:
    torch.manual_seed(0)
    model = Baseline(point).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    call: Any = torch.compile(model, dynamic=False) if compiled else model

    def runner(mode: str, arrays: dict[str, np.ndarray], point: Point) -> Runner:
        ids, lengths, labels = _tensors(point, arrays)

        def forward() -> np.ndarray:
            model.eval()
            with torch.inference_mode():
                lens = None if lengths is None else torch.from_numpy(lengths)  # packing wants them on the CPU
                return call(torch.from_numpy(ids).to(device), lens).cpu().numpy()

        def train() -> float:
            model.train()
            x, y = torch.from_numpy(ids).to(device), torch.from_numpy(labels).to(device)
            lens = None if lengths is None else torch.from_numpy(lengths)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(call(x, lens), y)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        return forward if mode == "forward" else train

    note = "torch.compile(dynamic=False) of the same module" if compiled else "eager, hand-written"
    return Impl(name, "torch", False, runner, note)


def rnncore_torch(point: Point, device: str = "cpu") -> list[Impl]:
    """rnncore's module driven exactly as the baseline's, and the same model through rnncore.predict."""
    import rnncore
    from rnncore.registry import get_backend
    from rnncore.train.config import TrainConfig

    spec = rnncore.ModelSpec.from_dict(point.spec_dict())
    model = rnncore.build(spec, backend="torch", weights=rnncore.init_weights(spec, seed=0)).to(device)
    trainer = get_backend("torch").make_trainer(model, TrainConfig(optimizer="adam", lr=1e-3))

    def runner(mode: str, arrays: dict[str, np.ndarray], point: Point) -> Runner:
        ids, lengths, labels = _tensors(point, arrays)

        def forward() -> np.ndarray:
            model.eval()
            with torch.inference_mode():
                lens = None if lengths is None else torch.from_numpy(lengths).to(device)
                return model(torch.from_numpy(ids).to(device), lens).cpu().numpy()

        if mode == "forward":
            return forward
        return lambda: trainer.step(ids, arrays["lengths"], labels, 1e-3)

    def api(mode: str, arrays: dict[str, np.ndarray], point: Point) -> Runner | None:
        if mode != "forward":
            return None  # training goes through the trainer in both
        ids, lengths = arrays["ids"], arrays["lengths"]
        return lambda: rnncore.predict(model, ids, lengths)

    return [
        Impl("rnncore_torch", "torch", True, runner, "rnncore's nn.Module called as the baseline is; "
             "training: the backend trainer's step"),
        Impl("rnncore_torch_api", "torch", True, api, "rnncore.predict(model, ids, lengths): input checks, "
             "eval mode, numpy in and out"),
    ]  # fmt: skip


def impls(point: Point, compiled: bool, device: str = "cpu") -> list[Impl]:
    found = [*rnncore_torch(point, device), baseline(point, device=device)]
    if compiled:
        found.append(baseline(point, "torch_compile", compiled=True, device=device))
    return found


def gemm_gflops(size: int = 1024, seconds: float = 1.0, device: str = "cpu") -> float:
    """Best float32 matmul rate of torch.mm on `size`x`size` matrices, in GFLOP/s."""
    import time

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    sync()
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9
