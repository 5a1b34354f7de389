"""decode_image against a corpus of bad and awkward inputs, all made here."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from backend.errors import BadImage
from backend.uploads import MAX_UPLOAD_BYTES, decode_image, image_id


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _noise(w: int = 64, h: int = 48) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_with_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR is rewritten to claim width x height (CRC fixed up)."""
    data = bytearray(_save(Image.new("RGB", (8, 8)), "PNG"))
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    struct.pack_into(">II", data, ihdr + 8, width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    struct.pack_into(">I", data, ihdr + 8 + 13, crc)
    return bytes(data)


def _bad(data: bytes, *words: str, **kw: int) -> str:
    with pytest.raises(BadImage) as info:
        decode_image(data, **kw)
    msg = str(info.value)
    for w in words:
        assert w.lower() in msg.lower(), msg
    assert info.value.code == "bad_image"
    return msg


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", ("empty", "JPEG", "PNG")),
        (b"hello, I am a text file pretending to be a .png\n", ("allowed formats", "WebP", "TIFF")),
        (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", ("allowed formats",)),
        (b"\x89PNG\r\n\x1a\n", ("damaged header", "allowed formats")),
    ],
    ids=["empty", "text-as-png", "pdf", "png-signature-only"],
)
def test_refused_bytes(data: bytes, words: tuple[str, ...]) -> None:
    _bad(data, *words)


def test_unsupported_format_ico() -> None:
    _bad(_save(Image.new("RGB", (32, 32), "red"), "ICO"), "allowed formats", "GIF")


def test_truncated_jpeg() -> None:
    data = _save(_noise(), "JPEG", quality=90)
    _bad(data[: len(data) // 2], "truncated")


def test_corrupt_png_crc() -> None:
    data = bytearray(_save(_noise(), "PNG"))
    data[-20] ^= 0xFF  # inside the last IDAT chunk or its CRC
    _bad(bytes(data), "corrupt")


def test_too_small() -> None:
    _bad(_save(Image.new("RGB", (1, 1)), "PNG"), "1x1", "at least 8")


def test_oversize_upload() -> None:
    data = _save(_noise(), "PNG")
    _bad(data, "bytes", "at most 100", max_bytes=100)
    assert MAX_UPLOAD_BYTES == 20 * 1024 * 1024


def test_decompression_bomb_refused_from_header() -> None:
    # 100000 x 100000: Pillow's own bomb check fires (turned into an error) before ours.
    _bad(_png_with_size(100_000, 100_000), "decompression bomb", "at most 40,000,000 pixels")
    # 7000 x 7000 = 49 Mpx: under Pillow's limit, over ours; refused before any pixel is decoded.
    _bad(_png_with_size(7000, 7000), "7000x7000", "at most 40,000,000 pixels")


def test_pixel_cap_is_configurable() -> None:
    _bad(_save(_noise(64, 48), "PNG"), "64x48", "at most 1,000", max_pixels=1000)


def test_bomb_warning_is_an_error() -> None:
    # Over Pillow's MAX_IMAGE_PIXELS (warning zone) but under our cap: the warning must still refuse.
    limit = Image.MAX_IMAGE_PIXELS or 0
    side = int((limit * 1.2) ** 0.5)
    _bad(_png_with_size(side, side), "decompression bomb", max_pixels=10**12)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_allowed_formats_round_trip(fmt: str) -> None:
    data = _save(Image.new("RGB", (40, 30), (200, 100, 50)), fmt)
    out = decode_image(data)
    assert (out.width, out.height, out.format, out.image.mode) == (40, 30, fmt, "RGB")
    assert not out.animated


def test_16bit_png_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 100, 65535, 1000] * 4] * 8, dtype=np.uint16)
    data = _save(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(decode_image(data).image)
    assert out.shape == (8, 16, 3)
    assert out[0, :4, 0].tolist() == [0, 100, 255, 4]  # round(1000 / 257) = 4
    assert (out[..., 0] == out[..., 2]).all()


def test_cmyk_jpeg_converted() -> None:
    data = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red ink
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    r, g, b = out.image.getpixel((8, 8))  # type: ignore[misc]
    assert r > 240 and g < 15 and b < 15


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue", "lime")]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = decode_image(data)
    assert out.animated and out.format == "GIF"
    assert out.image.getpixel((3, 3)) == (255, 0, 0)


def test_palette_with_transparency_composited_on_white() -> None:
    im = Image.new("P", (10, 10), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (0, 0, 5, 10))  # left half red, right half index 0 = transparent black
    out = decode_image(_save(im, "PNG", transparency=0)).image
    assert out.getpixel((1, 1)) == (255, 0, 0)
    assert out.getpixel((8, 1)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(mode: str) -> None:
    im = Image.new(mode, (10, 10), (0, 0, 0, 0) if mode == "RGBA" else (0, 0))
    out = decode_image(_save(im, "PNG")).image
    assert out.getpixel((5, 5)) == (255, 255, 255)
    half = Image.new("RGBA", (10, 10), (0, 0, 0, 128))
    r, _, _ = decode_image(_save(half, "PNG")).image.getpixel((5, 5))  # type: ignore[misc]
    assert 125 <= r <= 129


def test_grayscale_and_bilevel_to_rgb() -> None:
    out = decode_image(_save(Image.new("L", (9, 9), 77), "PNG")).image
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (77, 77, 77)
    out = decode_image(_save(Image.new("1", (9, 9), 1), "BMP")).image
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_applied() -> None:
    im = Image.new("RGB", (40, 20), "blue")
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(_save(im, "JPEG", quality=95, exif=exif.tobytes()))
    assert (out.width, out.height) == (20, 40)
    r, _, b = out.image.getpixel((10, 5))  # type: ignore[misc]
    assert r > 200 and b < 60  # the stored left (red) half is on top once rotated


def test_float_mode_refused() -> None:
    data = _save(Image.new("F", (16, 16), 0.5), "TIFF")
    _bad(data, "mode 'F'", "not supported")


def test_image_id_is_sha256_of_bytes() -> None:
    assert image_id(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
