from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
import zstandard

from backend.cache.codec import (
    FLAG_SHUFFLE,
    FLAG_ZLIB,
    FLAG_ZSTD,
    MAGIC,
    decode_array,
    decode_json,
    encode_array,
    encode_json,
)


def _flags(b: bytes) -> int:
    return b[6 + 4 * b[5]]


def _version_1(a: np.ndarray, code: int = 2) -> bytes:
    """A value as codec version 1 wrote it: zlib level 1, no shuffle (float32 here)."""
    raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
    return MAGIC + struct.pack(f"<BB{a.ndim}IB", code, a.ndim, *a.shape, FLAG_ZLIB) + zlib.compress(raw, 1)


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 12, 17, 17), (1, 1, 1, 1, 1)])
def test_round_trip_shapes(shape: tuple[int, ...]) -> None:
    a = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = decode_array(encode_array(a))
    assert out.shape == shape and out.dtype == np.float16
    np.testing.assert_array_equal(out, a.astype(np.float16))  # exactly float16 rounding


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "uint8", "uint16", "int32", "int64"])
def test_round_trip_dtypes_exact(dtype: str) -> None:
    a = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    out = decode_array(encode_array(a, dtype=None))
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, a)


def test_float16_rounding_and_header() -> None:
    a = np.array([1.0, 1 / 3, 65504.0, 1e-8], dtype=np.float64)
    b = encode_array(a, compress=False)
    assert b[:4] == MAGIC and b[4] == 1 and b[5] == 1
    assert struct.unpack_from("<I", b, 6) == (4,)
    assert _flags(b) == 0 and len(b) == 4 + 1 + 1 + 4 + 1 + 4 * 2
    out = decode_array(b)
    assert out[1] == np.float16(1 / 3) and out[2] == 65504.0 and out[3] == np.float16(1e-8)


def test_torch_tensor_and_bfloat16() -> None:
    t = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    np.testing.assert_array_equal(decode_array(encode_array(t)), np.arange(6).reshape(2, 3))


def test_compression_only_when_it_pays() -> None:
    zeros = np.zeros((64, 64), np.float32)
    packed = encode_array(zeros)
    assert _flags(packed) == FLAG_ZSTD | FLAG_SHUFFLE and len(packed) < 200
    noise = np.random.default_rng(1).integers(0, 256, 4096).astype(np.uint8)
    assert _flags(encode_array(noise, dtype=None)) == 0  # incompressible: stored raw
    forced = encode_array(noise, dtype=None, compress=True)
    assert _flags(forced) == FLAG_ZSTD  # one-byte elements: nothing to shuffle
    np.testing.assert_array_equal(decode_array(forced), noise)
    assert _flags(encode_array(zeros, compress=False)) == 0


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "uint16", "int32", "int64"])
def test_shuffled_zstd_round_trip_is_exact(dtype: str) -> None:
    rng = np.random.default_rng(2)
    a = (rng.random((3, 7, 11)) * 1000).astype(dtype)
    packed = encode_array(a, dtype=None, compress=True)
    assert _flags(packed) == FLAG_ZSTD | FLAG_SHUFFLE
    np.testing.assert_array_equal(decode_array(packed), a)


def test_shuffle_pays_on_float16_maps() -> None:
    """Softmax rows as float16: the shuffled zstd value is smaller than zlib of the same bytes (version 1)."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(12, 197, 197))
    maps = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float16)
    raw = maps.tobytes()
    assert len(encode_array(maps)) < len(zlib.compress(raw, 1))


def test_version_1_values_still_read() -> None:
    a = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.testing.assert_array_equal(decode_array(_version_1(a)), a)


def test_decoded_array_is_read_only() -> None:
    out = decode_array(encode_array(np.ones(3)))
    with pytest.raises(ValueError):
        out[0] = 2


def test_unsupported_dtype_refused() -> None:
    with pytest.raises(ValueError, match="not supported"):
        encode_array(np.ones(3, np.complex64), dtype=None)


def _corrupt_cases() -> dict[str, bytes]:
    good = encode_array(np.arange(12, dtype=np.float32).reshape(3, 4), compress=False)
    packed = _version_1(np.zeros((32, 32)))
    zpacked = encode_array(np.zeros((32, 32)), compress=True)
    bomb_header = MAGIC + struct.pack("<BBIB", 1, 1, 4, FLAG_ZLIB)
    zstd_header = MAGIC + struct.pack("<BBIB", 1, 1, 4, FLAG_ZSTD | FLAG_SHUFFLE)
    return {
        "empty": b"",
        "bad-magic": b"VSA2" + good[4:],
        "short-header": good[:8],
        "dtype-code": good[:4] + b"\x63" + good[5:],
        "ndim-huge": good[:5] + b"\xff" + good[6:],
        "flags": good[:14] + b"\x80" + good[15:],
        "payload-short": good[:-1],
        "payload-long": good + b"\x00\x00",
        "zlib-garbage": packed[:15] + b"not zlib at all",
        "zlib-truncated": packed[:-3],
        "zlib-inflates-past-shape": bomb_header + zlib.compress(b"\x00" * 10_000),
        "zlib-trailing": packed + b"junk",
        "zstd-garbage": zpacked[:15] + b"not zstd at all",
        "zstd-truncated": zpacked[:-3],
        "zstd-declares-more-than-shape": zstd_header + zstandard.ZstdCompressor().compress(b"\x00" * 10_000),
        "zstd-declares-no-size": zstd_header
        + zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * 8),
        "zstd-and-zlib": zpacked[:14] + bytes([FLAG_ZLIB | FLAG_ZSTD]) + zpacked[15:],
        "shuffle-without-compression": good[:14] + bytes([FLAG_SHUFFLE]) + good[15:],
    }


@pytest.mark.parametrize("name", list(_corrupt_cases()))
def test_corrupt_bytes_raise_value_error(name: str) -> None:
    with pytest.raises(ValueError):
        decode_array(_corrupt_cases()[name])


def test_json_helpers() -> None:
    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": [1, "x", None], "d": torch.tensor([1.5])}
    assert decode_json(encode_json(obj)) == {"a": 0.5, "b": [0, 1, 2], "c": [1, "x", None], "d": [1.5]}
    with pytest.raises(ValueError):
        decode_json(b"\xff{")
