"""A linear-chain CRF as a torch module: the log-likelihood (forward algorithm) and Viterbi.

The same definition as `rnncore.crf` (the numpy oracle), vectorised over the batch: a row's
steps past its length keep the previous step's forward scores (and Viterbi keeps its tag), so
every row ends at its own last valid step. Written with plain tensor ops only, so that the
decoder scripts (TorchScript) and traces (ONNX) as a loop over time.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from rnncore.crf import Allowed


class Crf(nn.Module):
    """transitions[i, j] scores tag i followed by tag j; start/end score a path's first/last tag."""

    def __init__(self, num_tags: int):
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))

    def log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """log p(tags | emissions) per row (B,); `tags` past a row's length are ignored."""
        mask = _valid(lengths, emissions)
        return self._score(emissions, tags, mask) - self._log_partition(emissions, mask)

    def forward(self, emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The best path per row (B, T) int64, 0 at padded steps; ties go to the lowest tag id."""
        return viterbi(emissions, lengths, self.transitions, self.start, self.end)

    def _score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tags = torch.where(mask, tags, torch.zeros_like(tags))
        weight = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags[:, :, None])[:, :, 0]
        moved = self.transitions[tags[:, :-1], tags[:, 1:]]
        last = tags.gather(1, (mask.sum(1) - 1)[:, None])[:, 0]
        score = self.start[tags[:, 0]] + (emitted * weight).sum(1) + (moved * weight[:, 1:]).sum(1)
        return score + self.end[last]

    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = self.start + emissions[:, 0]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha[:, :, None] + self.transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)


def _valid(lengths: torch.Tensor, emissions: torch.Tensor) -> torch.Tensor:
    steps = torch.arange(emissions.shape[1], device=emissions.device)
    return steps[None, :] < lengths.to(emissions.device)[:, None]


def viterbi(
    emissions: torch.Tensor,
    lengths: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """Best tag paths (B, T) int64 under the given scores (which may hold -inf for forbidden moves)."""
    batch, steps = emissions.shape[0], emissions.shape[1]
    mask = _valid(lengths, emissions)
    best = start + emissions[:, 0]
    tags = torch.arange(emissions.shape[2], device=emissions.device)
    backpointers = []
    for t in range(1, steps):
        candidates = best[:, :, None] + transitions  # (B, from, to)
        # torch.max's index is not promised to be the first of ties; argmax over a CPU tensor
        # is, as numpy's is: the oracle's lowest-tag rule
        pointer = candidates.argmax(dim=1)
        step = candidates.gather(1, pointer[:, None, :])[:, 0] + emissions[:, t]
        valid = mask[:, t, None]
        best = torch.where(valid, step, best)
        # past a row's end each tag points to itself, so the trace runs unchanged through padding
        backpointers.append(torch.where(valid, pointer, tags[None, :].expand(batch, -1)))
    tag = (best + end).argmax(dim=1)
    path = [tag]
    for t in range(len(backpointers) - 1, -1, -1):  # (an index loop: TorchScript scripts it)
        tag = backpointers[t].gather(1, tag[:, None])[:, 0]
        path.append(tag)
    path.reverse()
    paths = torch.stack(path, dim=1)
    return torch.where(mask, paths, torch.zeros_like(paths))


def constrained_scores(
    num_tags: int, crf: Crf | None, allowed: Allowed | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(transitions, start, end) to decode with: the CRF's (zeros for a softmax tagger), with the
    moves `allowed` forbids at -inf."""
    scores: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    if crf is not None:
        scores = (crf.transitions, crf.start, crf.end)
    else:
        zeros = like.new_zeros(num_tags)
        scores = (like.new_zeros(num_tags, num_tags), zeros, zeros)
    if allowed is None:
        return scores
    masks = (allowed.transitions, allowed.start, allowed.end)
    return tuple(  # type: ignore[return-value]
        s.masked_fill(~torch.from_numpy(m).to(s.device), float("-inf"))
        for s, m in zip(scores, masks, strict=True)
    )


def decode_outputs(
    num_tags: int, crf: Crf | None, outputs: torch.Tensor, lengths: torch.Tensor, allowed: Allowed | None
) -> torch.Tensor:
    """Tag paths (B, T) from a tagger's outputs, as `rnncore.crf.decode` defines them."""
    if crf is None:
        if allowed is None:
            paths = outputs.argmax(dim=2)
            return torch.where(_valid(lengths, outputs), paths, torch.zeros_like(paths))
        outputs = torch.log_softmax(outputs, dim=2)
    return viterbi(outputs, lengths, *constrained_scores(num_tags, crf, allowed, outputs))


def log_likelihood_and_grads(
    emissions: np.ndarray,
    tags: np.ndarray,
    lengths: np.ndarray,
    weights: Mapping[str, np.ndarray],
    cotangent: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The CRF log-likelihood per row and the gradients of `sum(ll * cotangent)` w.r.t. the
    emissions ("emissions") and the canonical CRF weights, computed by torch's autograd."""
    dtype = np.asarray(emissions).dtype
    crf = Crf(weights["crf.start"].shape[0]).to(getattr(torch, dtype.name))
    with torch.no_grad():
        for part in ("transitions", "start", "end"):
            getattr(crf, part).copy_(torch.from_numpy(np.asarray(weights[f"crf.{part}"], dtype)))
    e = torch.from_numpy(np.array(emissions)).requires_grad_(True)
    ll = crf.log_likelihood(
        e, torch.from_numpy(np.asarray(tags, np.int64)), torch.from_numpy(np.asarray(lengths))
    )
    (ll * torch.from_numpy(np.asarray(cotangent, dtype))).sum().backward()
    grads = {f"crf.{part}": getattr(crf, part).grad.numpy() for part in ("transitions", "start", "end")}
    assert e.grad is not None
    return ll.detach().numpy(), {"emissions": e.grad.numpy(), **grads}
