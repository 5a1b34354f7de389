"""Binary format for cached arrays ("VSA1"), and JSON helpers for small results. Never pickle.

Layout (all integers little-endian):

    offset      size      field
    0           4         magic b"VSA1"
    4           1         dtype code (uint8), see below
    5           1         ndim (uint8), 0..32
    6           4*ndim    shape, one uint32 per dimension
    6+4*ndim    1         flags (uint8), below; unknown bits are refused
    7+4*ndim    ...       payload: the array in C order, little-endian, transformed as the flags say

    dtype codes: 1 float16, 2 float32, 3 float64, 4 uint8, 5 uint16, 6 int32, 7 int64
    flags: bit 0  payload is zlib-compressed (written before codec version 2; still read)
           bit 1  payload is zstd-compressed (one frame that declares its content size)
           bit 2  byte-shuffled before compression: all first bytes of the elements, then all second
                  bytes... (the exponent bytes of floats line up and compress; lossless)

Format versions: 1 wrote zlib level 1 (flag bit 0); 2 (this) writes byte shuffle + zstd level 1 (flag bits
1 and 2), about a sixth fewer bytes than zlib on float16 attention and ten times faster to encode
(bench/codec.py). A reader of version 1 refuses version 2 values (unknown flag bits: a miss, so it
recomputes), never misreads them.
Values are stored as float16 by default (attention maps need no more; half the bytes of float32).
Compression is kept only when it saves at least 10% of the payload. `decode_array` checks every field, and
the decompressed size against the shape, and raises ValueError on anything else: a corrupt or hostile cache
value never becomes an array of the wrong shape.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any, Literal

import numpy as np
import zstandard

MAGIC = b"VSA1"
FLAG_ZLIB = 1
FLAG_ZSTD = 2
FLAG_SHUFFLE = 4
_KNOWN_FLAGS = FLAG_ZLIB | FLAG_ZSTD | FLAG_SHUFFLE
MAX_NDIM = 32
ZSTD_LEVEL = 1
_CODES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<f2"),
    2: np.dtype("<f4"),
    3: np.dtype("<f8"),
    4: np.dtype("u1"),
    5: np.dtype("<u2"),
    6: np.dtype("<i4"),
    7: np.dtype("<i8"),
}
_CODE_OF = {dt.name: code for code, dt in _CODES.items()}
_MIN_SAVING = 0.10


def _shuffle(payload: bytes, itemsize: int) -> bytes:
    if itemsize == 1:
        return payload
    return np.frombuffer(payload, np.uint8).reshape(-1, itemsize).T.tobytes()


def _unshuffle(payload: bytes | memoryview, itemsize: int) -> bytes | memoryview:
    if itemsize == 1:
        return payload
    return np.frombuffer(payload, np.uint8).reshape(itemsize, -1).T.tobytes()


def encode_array(
    a: Any,
    *,
    dtype: str | None = "float16",
    compress: bool | Literal["auto"] = "auto",
) -> bytes:
    """Encode a numpy array or torch tensor; `dtype=None` keeps its own dtype (if supported)."""
    arr = _to_numpy(a)
    target = np.dtype(dtype) if dtype is not None else arr.dtype
    if target.name not in _CODE_OF:
        raise ValueError(f"dtype {target.name!r} is not supported; use one of {sorted(_CODE_OF)}")
    code = _CODE_OF[target.name]
    if arr.ndim > MAX_NDIM:
        raise ValueError(f"arrays of at most {MAX_NDIM} dimensions are supported, got {arr.ndim}")
    if any(d > 0xFFFFFFFF for d in arr.shape):
        raise ValueError(f"every dimension must fit in uint32, got shape {arr.shape}")

    payload = np.ascontiguousarray(arr, dtype=_CODES[code]).tobytes()
    flags = 0
    if compress and payload:
        itemsize = _CODES[code].itemsize
        packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(_shuffle(payload, itemsize))
        if compress is True or len(packed) <= (1 - _MIN_SAVING) * len(payload):
            payload, flags = packed, FLAG_ZSTD | (FLAG_SHUFFLE if itemsize > 1 else 0)
    header = MAGIC + struct.pack(f"<BB{arr.ndim}IB", code, arr.ndim, *arr.shape, flags)
    return header + payload


def decode_array(b: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a VSA1 value. The result is read-only (it views the bytes); `.copy()` to modify it."""
    view = memoryview(b)
    if len(view) < 7 or bytes(view[:4]) != MAGIC:
        raise ValueError("not a VSA1 array: bad magic or too short")
    code, ndim = view[4], view[5]
    if code not in _CODES:
        raise ValueError(f"VSA1: unknown dtype code {code}")
    if ndim > MAX_NDIM:
        raise ValueError(f"VSA1: ndim {ndim} exceeds {MAX_NDIM}")
    flags_at = 6 + 4 * ndim
    if len(view) < flags_at + 1:
        raise ValueError("VSA1: header truncated")
    shape = struct.unpack_from(f"<{ndim}I", view, 6)
    flags = view[flags_at]
    if flags & ~_KNOWN_FLAGS or (flags & FLAG_ZLIB and flags & FLAG_ZSTD):
        raise ValueError(f"VSA1: unknown flags {flags:#04x}")
    if flags & FLAG_SHUFFLE and not flags & FLAG_ZSTD:
        raise ValueError(f"VSA1: flags {flags:#04x} shuffle an uncompressed payload")
    dt = _CODES[code]
    expected = math.prod(shape) * dt.itemsize
    payload: bytes | memoryview = view[flags_at + 1 :]
    if flags & FLAG_ZLIB:
        # Bounded decompression: a hostile value cannot inflate past the size its shape promises.
        d = zlib.decompressobj()
        try:
            payload = d.decompress(payload, expected + 1)
        except zlib.error as exc:
            raise ValueError(f"VSA1: corrupt zlib payload ({exc})") from None
        if not d.eof or d.unused_data:
            raise ValueError("VSA1: compressed payload is truncated or larger than its shape")
    elif flags & FLAG_ZSTD:
        try:  # the frame must declare exactly the size the shape promises before anything is inflated
            declared = zstandard.frame_content_size(payload)
            if declared != expected:
                raise ValueError(
                    f"VSA1: zstd frame declares {declared} bytes, shape {shape} needs {expected}"
                )
            payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=expected)
        except zstandard.ZstdError as exc:
            raise ValueError(f"VSA1: corrupt zstd payload ({exc})") from None
        if flags & FLAG_SHUFFLE and len(payload) == expected:
            payload = _unshuffle(payload, dt.itemsize)
    if len(payload) != expected:
        raise ValueError(f"VSA1: payload has {len(payload)} bytes, shape {shape} needs {expected}")
    return np.frombuffer(payload, dtype=dt).reshape(shape)


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON; numpy scalars and arrays become plain numbers and lists."""
    return json.dumps(obj, separators=(",", ":"), default=_json_default).encode()


def decode_json(b: bytes | bytearray | memoryview) -> Any:
    try:
        return json.loads(bytes(b))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON value: {exc}") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "detach"):  # torch.Tensor, without importing torch here
        return o.detach().cpu().tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):  # torch.Tensor: bfloat16 has no numpy dtype, so widen it first
        t = a.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return np.asarray(t.numpy())
    return np.asarray(a)
