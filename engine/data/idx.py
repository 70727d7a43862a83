"""The IDX format: parse a file or bytes (gzip-compressed or plain) into a tensor, write a tensor as IDX."""
from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import IdxFormatError

__all__ = ["idx_bytes", "parse_idx", "read_idx", "write_idx"]

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Parse an IDX file (gzip-compressed or plain) into a tensor.

    Supports every IDX element type (uint8, int8, int16, int32, float32, float64)
    and any number of dimensions. The declared shape must account for exactly the
    bytes present; anything else raises :class:`IdxFormatError`.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{path}: corrupt gzip data ({exc})") from exc
    return _parse_idx(raw, source=path)


def _parse_idx(buf: bytes, *, source: Path) -> torch.Tensor:
    if len(buf) < 4:
        raise IdxFormatError(f"{source}: truncated IDX header ({len(buf)} bytes)")
    zero, code, ndim = buf[:2], buf[2], buf[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES:
        raise IdxFormatError(f"{source}: bad IDX magic number 0x{buf[:4].hex()}")
    header_len = 4 + 4 * ndim
    if len(buf) < header_len:
        raise IdxFormatError(
            f"{source}: truncated IDX header (declares {ndim} dimensions, "
            f"file has {len(buf)} bytes)"
        )
    shape = struct.unpack(f">{ndim}I", buf[4:header_len])
    dtype = _IDX_DTYPES[code]
    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = len(buf) - header_len
    if actual < expected:
        raise IdxFormatError(
            f"{source}: truncated IDX data (shape {list(shape)} needs {expected} bytes, "
            f"found {actual})"
        )
    if actual > expected:
        raise IdxFormatError(
            f"{source}: {actual - expected} unexpected bytes after IDX data of shape {list(shape)}"
        )
    array = np.frombuffer(buf, dtype=dtype, count=count, offset=header_len)
    # astype always copies: the result is writable and in native byte order.
    array = array.astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    return torch.from_numpy(array)


def parse_idx(data: bytes, *, source: str = "<bytes>") -> torch.Tensor:
    """:func:`read_idx` for bytes already in memory (gzip-compressed or plain)."""
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{source}: corrupt gzip data ({exc})") from exc
    return _parse_idx(data, source=Path(source))


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor as an IDX file: magic (element type, number of dimensions), big-endian sizes, the data
    big-endian. Element types: uint8, int8, int16, int32, float32, float64 (those IDX knows)."""
    array = tensor.detach().cpu().contiguous().numpy()
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise IdxFormatError(f"IDX has no element type for {array.dtype}")
    if array.ndim > 255 or any(size >= 2**32 for size in array.shape):
        raise IdxFormatError(f"shape {list(array.shape)} does not fit an IDX header")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(_IDX_DTYPES[code], copy=False).tobytes()


def write_idx(path: str | os.PathLike[str], tensor: torch.Tensor, *, compress: bool = False) -> Path:
    """Write ``tensor`` as an IDX file (gzip-compressed with ``compress``), atomically (temp file + rename)."""
    path = Path(path)
    data = idx_bytes(tensor)
    if compress:
        data = gzip.compress(data, mtime=0)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
