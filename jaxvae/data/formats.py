"""Parsers for the standard raw files: IDX (optionally gzipped), .amat and .npz.

Every parser validates what it reads and raises `DataError` with a message
naming the file and the problem (bad magic number, truncation, wrong shape).
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["DataError", "read_idx", "read_idx_images", "read_idx_labels", "read_amat", "read_npz"]


class DataError(ValueError):
    """A dataset is missing, malformed or cannot be used; the message says how to fix it."""


# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: str | os.PathLike) -> bytes:
    """Reads a file, transparently gunzipping it; DataError if absent or truncated."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise DataError(f"{path}: truncated gzip file ({len(raw)} bytes; {e}); download it again") from e
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: corrupt gzip file ({e}); download it again") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (`.gz` or raw) into an array of its declared shape and dtype."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: not an IDX file (bad magic number 0x{data[:4].hex()}; expected 0x0000TTNN, "
            f"e.g. 0x00000803 for images, 0x00000801 for labels)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, header needs {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise DataError(
            f"{path}: truncated IDX file: header declares shape {shape} ({expected} bytes of data) "
            f"but only {got} bytes follow; download it again")
    if got > expected:
        raise DataError(f"{path}: IDX file has {got - expected} unexpected trailing bytes after shape {shape}")
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_idx_images(path: str | os.PathLike, image_hw: tuple[int, int] | None = (28, 28)) -> np.ndarray:
    """Reads an IDX image file as uint8 (N, H, W); checks the per-image shape if given."""
    x = read_idx(path)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images of shape (N, H, W), got {x.dtype} {x.shape}")
    if image_hw is not None and x.shape[1:] != tuple(image_hw):
        raise DataError(f"{path}: wrong image shape {x.shape[1:]}, expected {tuple(image_hw)}")
    return x


def read_idx_labels(path: str | os.PathLike, num_classes: int | None = 10) -> np.ndarray:
    """Reads an IDX label file as int64 (N,); checks labels lie in [0, num_classes)."""
    y = read_idx(path)
    if y.ndim != 1:
        raise DataError(f"{path}: expected labels of shape (N,), got shape {y.shape}")
    y = y.astype(np.int64)
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: labels outside [0, {num_classes}): min {y.min()}, max {y.max()}")
    return y


_TOKEN_CHAR = np.ones(256, bool)
_TOKEN_CHAR[list(b" \t\r\n")] = False


def read_amat(path: str | os.PathLike, dim: int = 784) -> np.ndarray:
    """Reads a binarized-MNIST `.amat` text file (one example a line, `dim` values 0/1) as uint8."""
    data = _read_bytes(path)
    arr = np.frombuffer(data, np.uint8)
    tok = _TOKEN_CHAR[arr]
    chars = arr[tok]
    # Fast path: every token a single character '0' or '1'.
    if not np.any(tok[1:] & tok[:-1]) and not np.any(chars & 0xFE ^ ord("0")):
        bounds = [0, *(np.flatnonzero(arr == ord("\n")) + 1).tolist(), arr.size]
        counts = np.array([np.count_nonzero(tok[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
        counts = counts[counts > 0]
        values = chars - ord("0")
    else:  # General path: arbitrary numeric tokens.
        rows = []
        for line in data.decode("ascii", errors="replace").splitlines():
            if line.strip():
                try:
                    rows.append(np.array(line.split(), np.float64))
                except ValueError as e:
                    raise DataError(f"{path}: line {len(rows) + 1} is not numeric ({e})") from e
        counts = np.array([len(r) for r in rows], np.int64)
        values = np.concatenate(rows) if rows else np.zeros(0)
    if counts.size == 0:
        raise DataError(f"{path}: empty .amat file")
    bad = np.flatnonzero(counts != dim)
    if bad.size:
        i = int(bad[0])
        hint = " (truncated file?)" if i == counts.size - 1 else ""
        raise DataError(f"{path}: wrong shape: example {i + 1} has {counts[i]} values, expected {dim}{hint}")
    if not np.all((values == 0) | (values == 1)):
        raise DataError(f"{path}: values must be 0 or 1")
    return values.astype(np.uint8).reshape(-1, dim)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads every array of an `.npz` file; DataError if it is missing, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt .npz file ({e})") from e
