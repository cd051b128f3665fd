"""Deterministic splits and length-bucketed batches, both driven by one integer seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._files import DataError


def split(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> tuple[np.ndarray, ...]:
    """Disjoint index arrays covering range(n), one per fraction, the same for the same seed.

    Part sizes are the rounded cumulative fractions, so they add up to n exactly; each part's
    indices are sorted, so a subset keeps the file's order (batching does the shuffling).
    A part can be empty when n is small.

    Example:
        >>> train, val, test = split(10, (0.8, 0.1, 0.1), seed=0)
        >>> len(train), len(val), len(test)
        (8, 1, 1)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"n={n!r}; expected the number of examples, an integer >= 0")
    parts = np.asarray(fractions, dtype=np.float64)
    if parts.ndim != 1 or len(parts) == 0 or (parts < 0).any() or not np.isclose(parts.sum(), 1.0):
        raise DataError(f"fractions={tuple(fractions)!r}; expected non-negative numbers that add up to 1")
    order = np.random.default_rng(seed).permutation(n)
    ends = np.rint(np.cumsum(parts) * n).astype(np.int64)
    ends[-1] = n
    starts = np.concatenate([[0], ends[:-1]])
    return tuple(np.sort(order[a:b]) for a, b in zip(starts, ends, strict=True))


def bucket_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    chunk_batches: int = 50,
) -> list[np.ndarray]:
    """Batches of indices whose sequences have similar lengths, so that little padding is needed.

    With shuffle=True the indices are shuffled, cut into chunks of `chunk_batches` batches,
    sorted by length within each chunk and cut into batches; the batch order is then shuffled.
    Batches stay random from epoch to epoch (pass a new seed per epoch) but each holds
    neighbours in length. With shuffle=False all indices are sorted by length (stable), the
    least padding possible, for evaluation.

    Every index appears exactly once; one batch (the last of the last chunk) may be smaller
    than batch_size.

    Returns:
        list of int64 index arrays.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise DataError(f"lengths must be a 1-D array of integers; got {lengths.dtype} {lengths.shape}")
    for name, value in (("batch_size", batch_size), ("chunk_batches", chunk_batches)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DataError(f"{name}={value!r}; expected an integer >= 1")
    n = len(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    chunk = batch_size * chunk_batches
    batches: list[np.ndarray] = []
    for start in range(0, n, chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    # The uneven batch is the last of the last chunk; it moves with the others.
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_fraction(lengths: Sequence[int] | np.ndarray, batches: Sequence[np.ndarray]) -> float:
    """Share of padded steps when each batch is padded to its longest sequence (0 = no padding)."""
    lengths = np.asarray(lengths)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches if len(b))
    real = sum(int(lengths[b].sum()) for b in batches)
    return 0.0 if padded == 0 else 1.0 - real / padded
