"""Set metrics from per-image metrics objects, exactly as ``compute_metrics`` would give on the whole set.

``compute_metrics`` averages every value per image first, so the set value of a layer is the mean over images
of each image's value, and its ``std`` is the population standard deviation over images of that value.
Per-head values (``per_head``) are means over images too. Everything else (model, family, preprocessing,
grid, depth axes...) is the same for every image and copied; ``num_images`` counts the set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from backend.errors import BadRequest


def aggregate_metrics(objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not objects:
        raise BadRequest("a set needs at least one image to aggregate")
    out = _merge(list(objects))
    out["num_images"] = sum(int(o.get("num_images", 1)) for o in objects)
    return out


def _merge(nodes: list[Any]) -> Any:
    first = nodes[0]
    if all(n == first for n in nodes[1:]):
        return first  # the same everywhere (and exact: no float round trip); e.g. preprocessing
    if isinstance(first, dict) and all(isinstance(n, dict) for n in nodes):
        keys = list(first)
        out: dict[str, Any] = {}
        base = "mean" if "mean" in first else "value" if "value" in first else None
        for key in keys:
            values = [n.get(key) for n in nodes]
            if key == "std" and base is not None:
                stacked = _stack([n[base] for n in nodes])
                out[key] = _plain(stacked.std(0)) if stacked is not None else first[key]
            else:
                out[key] = _merge(values)
        return out
    if isinstance(first, bool | str | int) or first is None or key_is_axis(first):
        return first
    stacked = _stack(nodes)
    return _plain(stacked.mean(0)) if stacked is not None else first


def key_is_axis(value: Any) -> bool:
    """Integer lists (depth axes, grids) are copied, not averaged."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def _stack(nodes: list[Any]) -> np.ndarray | None:
    try:
        arr = np.asarray(nodes, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.dtype != np.float64 or arr.shape[0] != len(nodes):
        return None
    return arr


def _plain(a: np.ndarray) -> Any:
    return a.tolist() if a.ndim else float(a)
