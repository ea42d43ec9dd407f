"""A reader of IDX files (the format of MNIST and Fashion-MNIST), gzip-compressed or not: gzip + numpy.

An IDX file is a 4-byte magic number ``0x00 0x00 TYPE NDIM`` (``TYPE`` 0x08: unsigned byte), ``NDIM``
big-endian uint32 sizes, then the data in C order. ``read_idx`` checks the magic number, the sizes against
the payload, and returns the array::

    >>> import gzip, io, numpy as np
    >>> buf = io.BytesIO()
    >>> write_idx(buf, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(io.BytesIO(buf.getvalue())).tolist()
    [[0, 1, 2], [3, 4, 5]]
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import BinaryIO

import numpy as np

from composer import ComposerError

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
"""IDX type byte -> numpy dtype (multi-byte types are big-endian)."""


class IDXError(ComposerError):
    """A file that is not a valid IDX file."""


def _raw(source: str | Path | BinaryIO) -> tuple[bytes, str]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IDXError(f"cannot read {path}: {exc.strerror or exc}") from exc
        name = str(path)
    else:
        data, name = source.read(), getattr(source, "name", "<stream>")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise IDXError(f"{name}: corrupt gzip data ({exc})") from exc
    return data, str(name)


def read_idx(source: str | Path | BinaryIO) -> np.ndarray:
    """The array of an IDX file (path or binary stream; gzip detected by its magic bytes).

    Returns:
        ``(d0, d1, ...)`` array of the file's type in native byte order.

    Raises:
        IDXError: bad magic number, unknown type, or a payload that does not match the sizes.
    """
    data, name = _raw(source)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXError(f"{name}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    kind, ndim = data[2], data[3]
    if kind not in DTYPES:
        raise IDXError(f"{name}: unknown IDX data type 0x{kind:02x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IDXError(f"{name}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = DTYPES[kind]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IDXError(f"{name}: payload of {len(data) - header} bytes does not match shape {shape} "
                       f"({expected} bytes expected)")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(target: str | Path | BinaryIO, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` as an IDX file (``compress``: gzip), the inverse of ``read_idx`` (used by tests)."""
    array = np.asarray(array)
    kinds = {v.newbyteorder("="): k for k, v in DTYPES.items()}
    kind = kinds.get(array.dtype.newbyteorder("="))
    if kind is None:
        raise IDXError(f"no IDX type for dtype {array.dtype}")
    body = bytes([0, 0, kind, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body += np.ascontiguousarray(array, dtype=DTYPES[kind]).tobytes()
    if compress:
        body = gzip.compress(body, compresslevel=1)
    if isinstance(target, (str, Path)):
        from composer.atomic import atomic_write_bytes

        atomic_write_bytes(target, body)
    else:
        target.write(body)


__all__ = ["IDXError", "read_idx", "write_idx"]
