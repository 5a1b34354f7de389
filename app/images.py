"""Image helpers of the UI: the model-input view the overlays are drawn on, thumbnails, data URIs.

The images come from the API (already validated there); the UI only resizes what it shows. The model-input
view repeats the backend's documented preprocessing (ANALYSES.md section 0: resize the shorter side to
``input / crop_pct`` (256 for 224), centre-crop) from the record the metrics carry, so a patch (row, col)
covers pixels ``[row*P, (row+1)*P) x [col*P, (col+1)*P)`` of the picture under the heatmap.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable

from PIL import Image, ImageOps

from app.metrics import ModelShape

PAPER_CROP_PCT = 0.875
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def decode(data: bytes) -> Image.Image:
    opened = Image.open(io.BytesIO(data))
    opened.seek(0)
    image: Image.Image = ImageOps.exif_transpose(opened) or opened
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def model_view(image: Image.Image, shape: ModelShape) -> Image.Image:
    """Resize the shorter side and centre-crop like the backend's preprocessing (torchvision's rounding)."""
    th, tw = shape.input_size
    resize = shape.resize or int(math.floor(min(th, tw) / (shape.crop_pct or PAPER_CROP_PCT)))
    w, h = image.size
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    resized = image.resize((new_w, new_h), _RESAMPLE.get(shape.interpolation, Image.Resampling.BILINEAR))
    top = int(round((new_h - th) / 2.0))
    left = int(round((new_w - tw) / 2.0))
    return resized.crop((left, top, left + tw, top + th))


def to_data_uri(image: Image.Image, *, quality: int = 88) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(image: Image.Image, size: int = 96) -> Image.Image:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    return thumb


class UriCache:
    """A small LRU of data URIs keyed by (image id, what): encoding the same picture twice is wasted work."""

    def __init__(self, max_items: int = 256) -> None:
        self._items: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._max = max_items
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...], make: Callable[[], str]) -> str:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return value
