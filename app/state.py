"""The view state a permalink carries, its query-string form, and the checks of every value the page stores.

``?images=<sha>,<sha>&name=cat.png&name=dog.png&active=0&models=a,b&layer=6&head=mean&query=cls&opacity=0.6``
``&rollout=1&query2=0.3,0.7&spectrum=out&projection=pca&open=heads,tokens`` (``query=R,C`` is a patch given as
fractions of the model input's height and width, so it names the same place of the image for models whose
patch grids differ; ``query=cls`` the CLS token; ``query2`` the attention panel's second query, absent when
there is none; ``rollout=1`` the rollout maps). Anything malformed is dropped, never an error: a hand-edited
link still opens.

The browser's stores can be forged (plain JSON the page sends back), so every callback reads image ids
and model ids through :func:`image_id`, :func:`clean_images` and :func:`clean_models` before they reach an API
URL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

MAX_MODELS = 4  # models side by side: the one limit (columns, the picker, permalinks)
MIN_MODELS = 2
MAX_IMAGES = 64
MAX_NAME = 120
IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")  # the API's image id: the sha256 of the file, in hex
_MODEL_ID = re.compile(r"^[A-Za-z0-9_.:/+-]{1,200}$")
SPECTRUM_STATES = ("out", "attn")  # as app.components.spectrum offers them
PROJECTIONS = ("pca", "tsne")
PANELS = ("heads", "tokens", "norms")  # parts of the page opened on demand (disclosures)
DEFAULT_OPACITY = 0.6


def image_id(value: Any) -> str | None:
    """``value`` if it is an image id (64 lowercase hex digits), else None."""
    return value if isinstance(value, str) and IMAGE_ID.match(value) else None


def model_id(value: Any) -> str | None:
    return value if isinstance(value, str) and _MODEL_ID.match(value) and ".." not in value else None


def clean_name(value: Any) -> str:
    """A display name without control characters, at most ``MAX_NAME`` characters."""
    text = "".join(ch for ch in str(value or "") if ch.isprintable())
    return text.strip()[:MAX_NAME]


def clean_images(store: Any) -> dict[str, Any]:
    """The image store with only well-formed ids: ``{"ids", "names", "active"}``."""
    raw = store if isinstance(store, dict) else {}
    ids = (
        [i for i in raw.get("ids") or [] if image_id(i)][:MAX_IMAGES]
        if isinstance(raw.get("ids"), list)
        else []
    )
    ids = list(dict.fromkeys(ids))
    given = raw.get("names")
    names_raw: dict[str, Any] = given if isinstance(given, dict) else {}
    names = {i: clean_name(names_raw[i]) for i in ids if i in names_raw and clean_name(names_raw[i])}
    active = raw.get("active") if raw.get("active") in ids else (ids[0] if ids else None)
    return {"ids": ids, "names": names, "active": active}


def clean_models(models: Any, allowed: set[str] | None = None) -> list[str]:
    """Well-formed model ids, at most ``MAX_MODELS``, without repeats; only ``allowed`` ones when given."""
    if not isinstance(models, list):
        return []
    out = [m for m in dict.fromkeys(m for m in models if model_id(m)) if allowed is None or m in allowed]
    return out[:MAX_MODELS]


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
    def second(value: Any) -> Query | None:
        """The second query from its store or link form: ``"cls"``, ``{"y", "x"}`` or ``"y,x"``; None (no
        second query) for anything else."""
        if value == "cls":
            return Query()
        q = Query.from_param(value) if isinstance(value, str) else Query.from_store(value)
        return None if q.is_cls else q

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
    names: list[str] = field(default_factory=list)  # display names, in the order of ``images`` ("" = none)
    active: int = 0
    models: list[str] = field(default_factory=list)
    layer: int | None = None
    head: str = "mean"
    query: Query = field(default_factory=Query)
    query2: Query | None = None  # the attention panel's second row of maps (None: no second row)
    rollout: bool = False  # the attention maps show the rollout through the chosen block
    opacity: float = DEFAULT_OPACITY
    spectrum: str = SPECTRUM_STATES[0]
    projection: str = PROJECTIONS[0]
    panels: list[str] = field(default_factory=list)

    def to_search(self) -> str:
        params: list[tuple[str, str]] = []
        if self.images:
            params.append(("images", ",".join(self.images)))
            if any(self.names):
                params += [("name", n) for n in self.names]
            if self.active:
                params.append(("active", str(self.active)))
        if self.models:
            params.append(("models", ",".join(self.models)))
        if self.layer is not None:
            params.append(("layer", str(self.layer)))
        params.append(("head", self.head))
        params.append(("query", self.query.to_param()))
        if self.query2 is not None:
            params.append(("query2", self.query2.to_param()))
        if self.rollout:
            params.append(("rollout", "1"))
        if self.opacity != DEFAULT_OPACITY:
            params.append(("opacity", f"{self.opacity:.2f}"))
        if self.spectrum != SPECTRUM_STATES[0]:
            params.append(("spectrum", self.spectrum))
        if self.projection != PROJECTIONS[0]:
            params.append(("projection", self.projection))
        if self.panels:
            params.append(("open", ",".join(self.panels)))
        return "?" + urlencode(params, safe=",:/")

    @staticmethod
    def from_search(search: str | None) -> ViewState:
        qs = parse_qs((search or "").lstrip("?"), keep_blank_values=False)

        def one(name: str) -> str:
            values = qs.get(name)
            return values[-1].strip() if values else ""

        images = [i for i in one("images").lower().split(",") if IMAGE_ID.match(i)][:MAX_IMAGES]
        images = list(dict.fromkeys(images))
        models = [m for m in one("models").split(",") if _MODEL_ID.match(m)]
        models = list(dict.fromkeys(models))[:MAX_MODELS]
        names = [clean_name(n) for n in qs.get("name", [])][: len(images)]
        if any(names):
            names += [""] * (len(images) - len(names))
        else:
            names = []
        state = ViewState(images=images, names=names, models=models)
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
        state.query2 = Query.second(one("query2"))
        state.rollout = one("rollout") in ("1", "true")
        try:
            opacity = float(one("opacity") or DEFAULT_OPACITY)
        except ValueError:
            opacity = DEFAULT_OPACITY
        state.opacity = round(opacity, 2) if 0.0 <= opacity <= 1.0 else DEFAULT_OPACITY
        if one("spectrum") in SPECTRUM_STATES:
            state.spectrum = one("spectrum")
        if one("projection") in PROJECTIONS:
            state.projection = one("projection")
        state.panels = [p for p in PANELS if p in one("open").split(",")]
        return state


def head_param(head: str | int | None) -> int | str:
    """The dropdown's value -> the API's ``head`` (an int, or ``"mean"``)."""
    if head is None or str(head) == "mean":
        return "mean"
    try:
        return int(head)
    except ValueError:
        return "mean"
