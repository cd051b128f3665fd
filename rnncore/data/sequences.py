"""Readers for real-valued sequences: `.npz` arrays and MNIST-style IDX files (images read as rows)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._files import DataError, read_bytes
from .containers import SequenceDataset

# IDX type byte -> big-endian numpy dtype (LeCun's MNIST page lists these six).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_npz(
    path: str | Path, x_key: str = "x", y_key: str = "y", lengths_key: str = "lengths"
) -> SequenceDataset:
    """Sequences saved with ``np.savez(path, x=x, y=y[, lengths=lengths])``.

    Args:
        x_key: array of shape (N, T, F), right-padded; numbers of any dtype, read as float32.
        y_key: array of shape (N,): integer class ids (read as int64) or float targets (float32).
        lengths_key: optional (N,) integers in 1..T; without it every sequence is T steps long.

    Example:
        >>> np.savez("walks.npz", x=np.zeros((2, 5, 3)), y=[0, 1], lengths=[5, 3])
        >>> read_npz("walks.npz").lengths.tolist()
        [5, 3]
    """
    try:
        archive = np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise DataError(f"not a numpy .npz archive ({err}); write it with np.savez", path) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            "holds a single array (.npy); save x and y together with np.savez(path, x=..., y=...)", path
        )
    with archive:
        arrays = {}
        for key in (x_key, y_key, lengths_key):
            if key not in archive.files:
                if key == lengths_key:
                    continue
                keys = ", ".join(repr(k) for k in archive.files) or "none"
                raise DataError(
                    f"no array {key!r}; it has {keys}. Pass x_key=/y_key= to pick others, or save them "
                    "under the names x and y: np.savez(path, x=..., y=...)",
                    path,
                )
            try:
                arrays[key] = archive[key]
            except ValueError:
                # np.save stores a list of unequal arrays as an object array, which needs pickle.
                raise DataError(
                    f"array {key!r} holds Python objects, which usually means ragged sequences of "
                    "different lengths; pad them to one array (N, T, F) and save the true lengths as "
                    f"{lengths_key!r}",
                    path,
                ) from None
    x, y = arrays[x_key], arrays[y_key]
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or x.ndim != 3:
        hint = " (for one feature per step, save x[..., None])" if x.ndim == 2 else ""
        raise DataError(f"{x_key!r} must be numbers of shape (N, T, F); got {x.dtype} {x.shape}{hint}", path)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{x_key!r} has {len(x)} sequences but {y_key!r} has shape {y.shape}; they must line up, "
            "one target per sequence",
            path,
        )
    bad: Sequence[int] | np.ndarray = (
        np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1)) if x.dtype.kind == "f" else []
    )
    if len(bad):
        raise DataError(f"{x_key!r} has NaN or infinity in sequence {int(bad[0])}; clean or drop it", path)
    lengths = arrays.get(lengths_key, np.full(len(x), x.shape[1], dtype=np.int64))
    try:
        return SequenceDataset(x, y, lengths)
    except DataError as err:
        raise DataError(str(err), path) from None


def read_idx(path: str | Path) -> np.ndarray:
    """One array from an IDX file (the MNIST format), e.g. uint8 (N, 28, 28) images or (N,) labels.

    The header is two zero bytes, a type byte, the number of dimensions and each dimension
    as a big-endian uint32; then the values, big-endian.
    """
    raw = read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES:
        hint = "; it looks gzip-compressed, so name it *.gz" if raw[:2] == b"\x1f\x8b" else ""
        raise DataError(
            f"not an IDX file: magic number {raw[:4].hex() or '(none)'} should be 0000 followed by a type "
            f"byte ({', '.join(f'{t:02x}' for t in IDX_DTYPES)}) and the number of dimensions{hint}",
            path,
        )
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"IDX header says {ndim} dimensions but the file ends inside the header", path)
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"IDX header promises shape {shape} ({expected} bytes of data) but the file has "
            f"{len(raw) - header}; is the download complete?",
            path,
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_mnist(images: str | Path, labels: str | Path, scale: bool = True) -> SequenceDataset:
    """MNIST-style images as sequences of rows: (N, H, W) images -> x (N, H steps, W features).

    Args:
        images, labels: IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``).
        scale: divide uint8 pixels by 255 so that features lie in [0, 1].
    """
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3:
        raise DataError(f"expected images of shape (N, rows, columns); got {x.shape}", images)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{len(x)} images but labels of shape {y.shape}; are the files a pair?", labels)
    features = x.astype(np.float32) / 255.0 if scale and x.dtype == np.uint8 else x
    return SequenceDataset(features, y, np.full(len(x), x.shape[1], dtype=np.int64))
