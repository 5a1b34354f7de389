"""The paper's published curves (Park et al., ICLR 2023), shipped as package data with their sources.

``paper_reference.json`` is a copy of the digitized series (MoCo v3 and SimMIM ViT-B/16 distance, NMI, delta
log amplitude and linear probe; the MAE encoder and decoder), each with the figure or notebook it was read
from. All of them are ViT-B/16 at 224 px: a 14 x 14 grid at patch 16. ``paper_reference`` adds, for the
attention-distance series, the same values on the relative scale (distance / the 14 x 14 grid's uniform-
attention distance) so that they can be drawn next to models of any grid.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import Any

PAPER_GRID = (14, 14)
PAPER_PATCH_SIZE = 16
PAPER_INPUT_SIZE = 224


@lru_cache(maxsize=1)
def _reference() -> dict[str, Any]:
    from backend.analysis.attention import uniform_attention_distance  # torch: only when the data is read

    raw = json.loads(resources.files(__package__).joinpath("paper_reference.json").read_text("utf-8"))
    uniform = uniform_attention_distance(PAPER_GRID, PAPER_PATCH_SIZE)
    for series in raw["series"]:
        if series["metric"] == "attention_distance":
            series["values_relative"] = [round(v / uniform, 4) for v in series["values"]]
    return {
        "about": raw["about"],
        "grid": list(PAPER_GRID),
        "patch_size": PAPER_PATCH_SIZE,
        "input_size": PAPER_INPUT_SIZE,
        "uniform_attention_distance": round(uniform, 4),
        "series": raw["series"],
        "not_available": raw["not_available"],
    }


def paper_reference(metric: str | None = None, family: str | None = None) -> dict[str, Any]:
    """The reference document, optionally only the series of one ``metric`` and/or ``family`` (a copy)."""
    doc = copy.deepcopy(_reference())
    doc["series"] = [
        s
        for s in doc["series"]
        if (metric is None or s["metric"] == metric) and (family is None or s["family"] == family)
    ]
    return doc


def reference_metrics() -> list[str]:
    """The metrics that have at least one series, in the file's order."""
    return list(dict.fromkeys(s["metric"] for s in _reference()["series"]))


def reference_families() -> list[str]:
    return list(dict.fromkeys(s["family"] for s in _reference()["series"]))


def paper_series(series_id: str) -> dict[str, Any]:
    """One series by id (e.g. ``mocov3-b16.attention_distance``); KeyError when there is none."""
    for s in _reference()["series"]:
        if s["id"] == series_id:
            return copy.deepcopy(s)
    raise KeyError(series_id)


def distance_scale(shapes: Iterable[tuple[tuple[int, int], int]], with_paper: bool = True) -> str:
    """The one rule for a distance axis: "px" when every curve on it (``(grid, patch_size)`` of each model,
    and the paper's 14 x 14 at patch 16 when its curves are overlaid) has one grid and patch size, else
    "relative" (distance / the grid's uniform-attention distance). Light: no torch, no matplotlib needed."""
    found = {((int(g[0]), int(g[1])), int(p)) for g, p in shapes}
    if with_paper:
        found.add((PAPER_GRID, PAPER_PATCH_SIZE))
    return "px" if len(found) <= 1 else "relative"
