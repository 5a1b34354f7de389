"""Decode untrusted image bytes into a plain 8-bit RGB picture, or refuse with a `BadImage`.

Rules, in the order they are applied:

1. Size: at most `MAX_UPLOAD_BYTES` (the API enforces it while the body streams; `decode_image`
   checks again so other callers get the same limit), never empty.
2. Format allow-list: JPEG (MPO photos count as JPEG), PNG, WebP, BMP, GIF, TIFF. Pillow is only
   allowed to try these plugins, so any other format (ICO, PDF, SVG, text...) is "unidentified".
3. Pixels are capped from the header, before any pixel data is decoded, and Pillow's
   `DecompressionBombWarning` is raised as an error (belt and braces for the same check).
4. Integrity: `Image.verify()`, then a fresh open and a full `load()`; truncated files fail.
5. Animated images (GIF, WebP, APNG, multi-page TIFF) are accepted and their FIRST frame is used;
   `DecodedImage.animated` says so. This is the "GIF first frame" of the allow-list: an animated GIF is
   a supported input, not an error, and is converted explicitly like every other mode below.
6. EXIF orientation is applied (a malformed EXIF block is ignored rather than failing the upload).
7. Modes are converted explicitly to RGB: grayscale and 1-bit by replication; 16-bit grayscale
   (`I;16*`, `I`) by scaling 0..65535 to 0..255 (`round(v / 257)`, not Pillow's clipping `convert`);
   CMYK and YCbCr by Pillow's conversion; palette with transparency and every alpha mode (LA, PA,
   RGBA) by compositing on white. Float images (`F`) and exotic modes are refused.
8. Each side at least `min_side` pixels (after orientation).
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from backend.errors import BadImage

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 8

# Pillow format names we let Image.open try (its plugin ids).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_ALLOWED_TEXT = "JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF"
# Multi-picture JPEGs from phones are opened by the JPEG plugin as "MPO"; report them as JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_DIRECT_RGB_MODES = {"RGB", "L", "1", "CMYK", "YCbCr", "P"}
_ORIENTATION = 0x0112  # the EXIF orientation tag


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # mode "RGB", EXIF orientation applied
    width: int
    height: int
    format: str  # one of ALLOWED_FORMATS
    animated: bool = False  # True when the source had several frames and only the first is used


def image_id(data: bytes) -> str:
    """The content address of an upload: sha256 hex of its exact bytes."""
    return hashlib.sha256(data).hexdigest()


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> DecodedImage:
    """Decode `data` into an RGB image, or raise `BadImage` saying what was wrong and what is allowed."""
    if not data:
        raise BadImage(f"the upload is empty (0 bytes); send an image file: {_ALLOWED_TEXT}")
    if len(data) > max_bytes:
        raise BadImage(f"the upload is {len(data):,} bytes; at most {max_bytes:,} bytes are allowed")

    # warnings.catch_warnings mutates process-wide filters; the explicit header check in _open
    # is the real guard, the filter only makes Pillow's own bomb warning fatal too.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with _open(data, max_pixels) as probe:
                probe.verify()  # structural checks (e.g. PNG CRCs); the object is unusable afterwards
            with _open(data, max_pixels) as im:
                fmt = _FORMAT_ALIASES.get(im.format or "", im.format or "")
                animated = bool(getattr(im, "is_animated", False))
                im.seek(0)
                im.load()
                rgb = _to_rgb(_orient(im))
        except BadImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage(
                f"the image is a decompression bomb ({exc}); at most {max_pixels:,} pixels are allowed"
            ) from None
        except UnidentifiedImageError:
            raise BadImage(
                f"the upload is not a readable image (unknown format or damaged header); "
                f"allowed formats: {_ALLOWED_TEXT}"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            # Pillow reports truncated or corrupt data with these (SyntaxError from some plugins).
            raise BadImage(
                f"the image data is corrupt or truncated ({exc}); send a complete {_ALLOWED_TEXT} file"
            ) from None

    width, height = rgb.size
    if width < min_side or height < min_side:
        raise BadImage(f"the image is {width}x{height} pixels; each side must be at least {min_side} pixels")
    return DecodedImage(image=rgb, width=width, height=height, format=fmt, animated=animated)


def probe_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from the header alone (nothing decoded); ``(0, 0)`` when it cannot be read
    (``decode_image`` then says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # any unreadable header: decode_image reports it properly
        return 0, 0


def release_memory() -> None:
    """Hand freed heap pages back to the system after a large decode.

    glibc keeps freed blocks below its (self-raising) mmap threshold on its free lists, so a process that
    once decoded many 40 Mpx images stays at that size; ``malloc_trim`` returns them. A no-op elsewhere.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) with the format allow-list and check the pixel count before decoding."""
    im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise BadImage(
            f"the image is {width}x{height} = {width * height:,} pixels; "
            f"at most {max_pixels:,} pixels are allowed"
        )
    return im


def _orient(im: Image.Image) -> Image.Image:
    try:
        if im.getexif().get(_ORIENTATION, 1) == 1:
            return im  # upright: no copy (a 40 Mpx frame is 120 MB)
        return ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block should not cost the user their upload
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return im
    if mode in _DIRECT_RGB_MODES:
        return im.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples: scale the full range, Pillow's convert("L") would clip at 255 instead.
        arr = np.asarray(im).astype(np.float64)
        gray = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    raise BadImage(
        f"images with pixel mode {mode!r} are not supported; send 8- or 16-bit grayscale, RGB, RGBA, "
        "CMYK or palette images"
    )
