"""The view state a permalink carries, and its query-string form.

``?images=<sha>,<sha>&active=0&models=a,b&layer=6&head=mean&query=cls`` (``query=R,C`` is a patch given as
fractions of the model input's height and width, so it names the same place of the image for models whose
patch grids differ; ``query=cls`` the CLS token). Anything malformed is dropped, never an error: a hand-edited
link still opens.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

MAX_MODELS = 4
MIN_MODELS = 2
MAX_IMAGES = 64
_IMAGE_ID = re.compile(r"^[0-9a-f]{8,128}$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9_.:/+-]{1,200}$")


@dataclass
class Query:
    """The attention query: the CLS token, or a place in the model input as fractions (y, x) in [0, 1)."""

    y: float | None = None
    x: float | None = None

    @property
    def is_cls(self) -> bool:
        return self.y is None or self.x is None

    def patch(self, grid: tuple[int, int]) -> tuple[int, int] | None:
        """The (row, col) of the patch that holds this place in a ``grid``; None for CLS."""
        if self.y is None or self.x is None:
            return None
        h, w = grid
        return min(h - 1, max(0, int(math.floor(self.y * h)))), min(
            w - 1, max(0, int(math.floor(self.x * w)))
        )

    def index(self, grid: tuple[int, int]) -> int | str:
        """The API's ``query``: the row-major patch index, or ``"cls"``."""
        rc = self.patch(grid)
        return "cls" if rc is None else rc[0] * grid[1] + rc[1]

    @staticmethod
    def at_patch(row: int, col: int, grid: tuple[int, int]) -> Query:
        """The centre of patch (row, col) of ``grid``."""
        h, w = grid
        return Query(round((row + 0.5) / h, 4), round((col + 0.5) / w, 4))

    def to_store(self) -> dict[str, float] | str:
        return "cls" if self.y is None or self.x is None else {"y": self.y, "x": self.x}

    @staticmethod
    def from_store(value: Any) -> Query:
        if isinstance(value, dict):
            try:
                y, x = float(value["y"]), float(value["x"])
            except (KeyError, TypeError, ValueError):
                return Query()
            if 0.0 <= y < 1.0 and 0.0 <= x < 1.0:
                return Query(y, x)
        return Query()

    def to_param(self) -> str:
        return "cls" if self.y is None or self.x is None else f"{self.y:.4g},{self.x:.4g}"

    @staticmethod
    def from_param(text: str) -> Query:
        parts = text.split(",")
        if len(parts) != 2:
            return Query()
        try:
            return Query.from_store({"y": float(parts[0]), "x": float(parts[1])})
        except ValueError:
            return Query()


@dataclass
class ViewState:
    images: list[str] = field(default_factory=list)
    active: int = 0
    models: list[str] = field(default_factory=list)
    layer: int | None = None
    head: str = "mean"
    query: Query = field(default_factory=Query)

    def to_search(self) -> str:
        params: dict[str, str] = {}
        if self.images:
            params["images"] = ",".join(self.images)
            if self.active:
                params["active"] = str(self.active)
        if self.models:
            params["models"] = ",".join(self.models)
        if self.layer is not None:
            params["layer"] = str(self.layer)
        params["head"] = self.head
        params["query"] = self.query.to_param()
        return "?" + urlencode(params, safe=",:/")

    @staticmethod
    def from_search(search: str | None) -> ViewState:
        qs = parse_qs((search or "").lstrip("?"), keep_blank_values=False)

        def one(name: str) -> str:
            values = qs.get(name)
            return values[-1].strip() if values else ""

        images = [i for i in one("images").lower().split(",") if _IMAGE_ID.match(i)][:MAX_IMAGES]
        images = list(dict.fromkeys(images))
        models = [m for m in one("models").split(",") if _MODEL_ID.match(m)]
        models = list(dict.fromkeys(models))[:MAX_MODELS]
        state = ViewState(images=images, models=models)
        active = one("active")
        if active.isdigit() and int(active) < len(images):
            state.active = int(active)
        layer = one("layer")
        if layer.isdigit() and 1 <= int(layer) <= 1000:
            state.layer = int(layer)
        head = one("head")
        if head == "mean" or (head.isdigit() and int(head) < 1000):
            state.head = head
        state.query = Query.from_param(one("query"))
        return state


def head_param(head: str | int | None) -> int | str:
    """The dropdown's value -> the API's ``head`` (an int, or ``"mean"``)."""
    if head is None or str(head) == "mean":
        return "mean"
    try:
        return int(head)
    except ValueError:
        return "mean"
