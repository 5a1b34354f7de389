"""Turn maps into response bodies: compact JSON, ``.npy`` (float32, no pickle) and PNG overlays.

JSON numbers carry 6 significant digits (maps are float16 in the cache: more would be noise).
"""

from __future__ import annotations

import io
import json
import math
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from backend.errors import NonFiniteResult
from backend.service.hot import View

JSON = "application/json"
PNG = "image/png"
NPY = "application/octet-stream"
MEDIA_TYPES = {"json": JSON, "png": PNG, "npy": NPY}


def _num(v: float) -> str:
    if not math.isfinite(v):
        return "null"
    return f"{v:.6g}"


def array_json(a: np.ndarray) -> str:
    """A numeric array as nested JSON lists, 6 significant digits."""
    if a.ndim == 0:
        return _num(float(a))
    if a.ndim == 1:
        return "[" + ",".join(_num(float(v)) for v in a.tolist()) + "]"
    return "[" + ",".join(array_json(sub) for sub in a) + "]"


def json_view(payload: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> View:
    """``payload`` as compact JSON with each of ``arrays`` spliced in (fast, and no float noise)."""
    text = json.dumps(payload, separators=(",", ":"))
    if arrays:
        parts = [text[:-1]]
        for name, arr in arrays.items():
            parts.append(f',"{name}":{array_json(np.asarray(arr))}')
        parts.append("}")
        text = "".join(parts)
    return View(text.encode(), JSON)


def json_object_view(obj: Any) -> View:
    try:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN / Inf: JSON has no such numbers, and a 500 would hide why
        raise NonFiniteResult(
            f"the result holds a value JSON cannot carry ({exc}): the model or the analysis produced NaN or "
            "infinity for this input; try another model or image"
        ) from None
    return View(text.encode(), JSON)


def npy_view(a: np.ndarray) -> View:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.float32), allow_pickle=False)
    return View(buf.getvalue(), NPY)


@lru_cache(maxsize=4)
def _lut(name: str) -> np.ndarray:
    """A 256 x 3 uint8 colour table from matplotlib (imported only when a PNG is first asked for)."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return (np.asarray(cmap(np.linspace(0.0, 1.0, 256)))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def _colour(m: np.ndarray, cmap: str) -> np.ndarray:
    """Scale a map to [0, 1] by its own min and max, then colour it: (H, W) -> (H, W, 3) uint8."""
    m = np.asarray(m, dtype=np.float64)
    lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
    scaled = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return _lut(cmap)[np.clip((scaled * 255.0).round(), 0, 255).astype(np.uint8)]


def overlay_png(
    base: Image.Image,
    maps: np.ndarray,
    patch_size: int,
    query_cell: tuple[int, int] | None = None,
    *,
    alpha: float = 0.6,
    cmap: str = "inferno",
    columns: int = 4,
    scale: int = 1,
) -> View:
    """Each ``(H, W)`` map of ``maps`` (k, H, W) drawn over ``base`` (the model's view of the image), tiled.

    A map cell ``(r, c)`` covers pixels ``[r*P, (r+1)*P) x [c*P, (c+1)*P)`` of the model input (ANALYSES.md
    A1 drawing note); the query patch, when there is one, is outlined in cyan. ``scale`` enlarges each tile
    by nearest neighbour (a 32 px model's map becomes large enough to look at, its patches still sharp).
    """
    base = base.convert("RGB")
    tiles = [_overlay(base, m, patch_size, query_cell, alpha, cmap) for m in maps]
    if scale > 1:
        tiles = [t.resize((t.width * scale, t.height * scale), Image.Resampling.NEAREST) for t in tiles]
    return View(_png(_tile(tiles, columns)), PNG)


def _overlay(
    base: Image.Image, m: np.ndarray, patch: int, cell: tuple[int, int] | None, alpha: float, cmap: str
) -> Image.Image:
    h, w = m.shape
    coloured = Image.fromarray(_colour(m, cmap)).resize((w * patch, h * patch), Image.Resampling.NEAREST)
    canvas = base.copy()
    if canvas.size != coloured.size:  # the grid may not cover the input exactly (dynamic sizes)
        full = Image.new("RGB", canvas.size)
        full.paste(coloured, (0, 0))
        coloured = full
    out = Image.blend(canvas, coloured, alpha)
    if cell is not None:
        r, c = cell
        draw = ImageDraw.Draw(out)
        box = [c * patch, r * patch, (c + 1) * patch - 1, (r + 1) * patch - 1]
        draw.rectangle(box, outline=(0, 255, 255), width=2)
    return out


def heatmap_png(m: np.ndarray, *, cell: int = 16, cmap: str = "viridis") -> View:
    """A map on its own (a spectrum), each cell ``cell`` pixels wide."""
    h, w = m.shape
    img = Image.fromarray(_colour(m, cmap)).resize((w * cell, h * cell), Image.Resampling.NEAREST)
    return View(_png(img), PNG)


def _tile(tiles: list[Image.Image], columns: int) -> Image.Image:
    if len(tiles) == 1:
        return tiles[0]
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    tw, th = tiles[0].size
    pad = 4
    sheet = Image.new("RGB", (cols * tw + (cols - 1) * pad, rows * th + (rows - 1) * pad), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * (tw + pad), (i // cols) * (th + pad)))
    return sheet


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
