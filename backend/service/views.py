"""The per-image views (metrics, attention maps, spectra): their parameters, cache keys and rendering.

Each view's parameters are one frozen dataclass (``AttentionView``, ``SpectrumView``, ``MetricsView``): the
route builds it from its validated query, the fast lane (``backend.api.fastlane``) from the raw query string,
both with ``parse``; ``check`` tests it against the model's ranges; ``key_parts`` are its canonical values,
the tail of both its hot-lane key and its store key.

Read path of every view, cheapest first:

1. the hot lane: rendered responses in this process, keyed by the full content address;
2. the store (Redis or the in-process LRU): the rendered response under its view key;
3. the store: the captured array it is rendered from (one key per image, model and layer);
4. a capture (``backend.service.bundle``): one forward pass computes everything for the image at once.

A store that fails answers "miss" (see ``backend.cache.store``), so a Redis outage only costs recomputation.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from backend.cache import SingleFlight, Store
from backend.cache import keys as K
from backend.errors import BadRequest
from backend.service import render
from backend.service.bundle import Captures, ModelInfo
from backend.service.hot import HotCache, View
from backend.service.images import ImageService
from backend.service.models import ModelService

FORMATS = ("json", "png", "npy")
FORMAT_PATTERN = "^(json|png|npy)$"
HEAD_PATTERN = r"^(\d{1,4}|mean|all)$"
QUERY_PATTERN = r"^(\d{1,6}|cls)$"
# Syntactic bounds (the route's and the fast lane's); the model's own ranges are checked after.
MAX_LAYER = 1024
MAX_PNG_SCALE = 16  # format=png: each pixel of the model's view drawn as up to 16 x 16
MAX_PNG_SIDE = 4096  # ... and never a map wider or taller than this
_HEAD = re.compile(HEAD_PATTERN)
_QUERY = re.compile(QUERY_PATTERN)
_INT = re.compile(r"^\d{1,4}$")
_BOOLS = {"true": True, "false": False}


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise BadRequest(f"format {fmt!r} is not one of json, png, npy")
    return fmt


def _small_int(name: str, value: str) -> int:
    if not _INT.match(value):
        raise BadRequest(f"{name} {value!r} is not an integer 0..{MAX_LAYER}")
    return int(value)


# ---------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class MetricsView:
    kind: ClassVar[str] = "metrics"

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> MetricsView:
        return cls()

    def key_parts(self) -> tuple[str | int, ...]:
        return ()


@dataclass(frozen=True)
class AttentionView:
    """A1: the map of one query (``None`` = CLS) at block ``layer``: one head, mean, all heads or rollout."""

    kind: ClassVar[str] = "attention"
    layer: int = 1
    head: str = "mean"  # "mean" | "all" | a head index as canonical digits
    query: int | None = None
    rollout: bool = False
    fmt: str = "json"
    scale: int = 1  # format=png only: nearest-neighbour enlargement (patches stay sharp)

    @classmethod
    def parse(
        cls,
        layer: int,
        head: str = "mean",
        query: str = "cls",
        rollout: bool = False,
        fmt: str = "json",
        scale: int = 1,
    ) -> AttentionView:
        """Syntax only (the model's ranges come in ``check``); the values in canonical form."""
        if not 1 <= layer <= MAX_LAYER:
            raise BadRequest(f"layer {layer} is out of range: use 1..{MAX_LAYER} (and at most the model's)")
        if rollout and head != "mean":
            raise BadRequest(f"rollout fuses the heads by their mean; head must be 'mean', got {head!r}")
        if not _HEAD.match(head):
            raise BadRequest(f"head {head!r} is not a head index, 'mean' or 'all'")
        if not _QUERY.match(query):
            raise BadRequest(f"query {query!r} is not a row-major patch index or 'cls'")
        if not 1 <= scale <= MAX_PNG_SCALE:
            raise BadRequest(f"scale {scale} is out of range: use 1..{MAX_PNG_SCALE} (format=png only)")
        head = head if head in ("mean", "all") else str(int(head))
        fmt = _format(fmt)
        query_v = None if query == "cls" else int(query)
        return cls(layer, head, query_v, rollout, fmt, scale if fmt == "png" else 1)

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> AttentionView:
        rollout = q.get("rollout", "false")
        if rollout not in _BOOLS:
            raise BadRequest(f"rollout {rollout!r} is not true or false")
        return cls.parse(
            _small_int("layer", q.get("layer", "1")),
            q.get("head", "mean"),
            q.get("query", "cls"),
            _BOOLS[rollout],
            q.get("format", "json"),
            _small_int("scale", q.get("scale", "1")),
        )

    def check(self, info: ModelInfo) -> None:
        if not 1 <= self.layer <= info.layers:
            raise BadRequest(
                f"layer {self.layer} is out of range: model {info.id} has {info.layers} blocks; "
                f"use 1..{info.layers}"
            )
        if self.head not in ("mean", "all") and int(self.head) >= info.heads:
            raise BadRequest(
                f"head {self.head!r} is out of range: model {info.id} has {info.heads} heads; "
                f"use 0..{info.heads - 1}, 'mean' or 'all'"
            )
        n = info.num_patches
        if self.query is None and not info.has_cls:  # token 0 may be a register: never show its map as CLS
            raise BadRequest(
                f"this model ({info.id}) has no CLS token; query a patch (a row-major patch index 0..{n - 1})"
            )
        if self.query is not None and self.query >= n:
            raise BadRequest(
                f"query '{self.query}' is out of range: the {info.grid[0]}x{info.grid[1]} grid of model "
                f"{info.id} has {n} patches; use a row-major patch index 0..{n - 1}"
                + (" or 'cls'" if info.has_cls else "")
            )
        side = max(int(v) for v in info.preprocessing["input_size"])
        if side * self.scale > MAX_PNG_SIDE:
            raise BadRequest(
                f"scale {self.scale} would draw the {side} px input of model {info.id} at "
                f"{side * self.scale} px; at most {MAX_PNG_SIDE} px are allowed: use scale "
                f"1..{max(1, MAX_PNG_SIDE // side)}"
            )

    def key_parts(self) -> tuple[str | int, ...]:
        parts: tuple[str | int, ...] = (self.layer, self.head, str(self.query), int(self.rollout), self.fmt)
        return parts if self.scale == 1 else (*parts, self.scale)


@dataclass(frozen=True)
class SpectrumView:
    """A4: the log-amplitude spectrum of the ``state`` tokens ("out" | "attn") at ``depth``."""

    kind: ClassVar[str] = "spectrum"
    state: str = "out"
    depth: int = 0
    fmt: str = "json"

    @classmethod
    def parse(cls, state: str = "out", depth: int = 0, fmt: str = "json") -> SpectrumView:
        if state not in ("out", "attn"):
            raise BadRequest(
                f"state {state!r} is not one of 'out' (block output) or 'attn' (after attention)"
            )
        if not 0 <= depth <= MAX_LAYER:
            raise BadRequest(f"depth {depth} is out of range: use 0..{MAX_LAYER} (and at most the model's)")
        return cls(state, depth, _format(fmt))

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> SpectrumView:
        return cls.parse(
            q.get("state", "out"), _small_int("depth", q.get("depth", "0")), q.get("format", "json")
        )

    @property
    def first(self) -> int:
        return 0 if self.state == "out" else 1

    def check(self, info: ModelInfo) -> None:
        if not self.first <= self.depth <= info.layers:
            raise BadRequest(
                f"depth {self.depth} is out of range for state {self.state!r}: model {info.id} has "
                f"{info.layers} blocks; use {self.first}..{info.layers}"
                + (" (0 = the embedding)" if self.state == "out" else "")
            )

    def key_parts(self) -> tuple[str | int, ...]:
        return (self.state, self.depth, self.fmt)


ImageView = MetricsView | AttentionView | SpectrumView
VIEWS: dict[str, type[MetricsView] | type[AttentionView] | type[SpectrumView]] = {
    v.kind: v for v in (MetricsView, AttentionView, SpectrumView)
}


def hot_key(view: ImageView, image_id: str, info: ModelInfo) -> tuple[object, ...]:
    """The hot-lane key of a rendered view: the kind, the content address and the canonical parameters."""
    return (view.kind, image_id, info.id, info.digest, *view.key_parts())


def store_key(view: ImageView, image_id: str, info: ModelInfo) -> str:
    a = info.addr(image_id)
    if isinstance(view, AttentionView):
        return K.attention_view_key(*a, *view.key_parts())
    if isinstance(view, SpectrumView):
        return K.spectrum_view_key(*a, *view.key_parts())
    return K.metrics_view_key(*a)


# ---------------------------------------------------------------------------------------------- the service
class ViewService:
    def __init__(
        self,
        store: Store,
        hot: HotCache,
        images: ImageService,
        models: ModelService,
        captures: Captures,
    ) -> None:
        self.store = store
        self.hot = hot
        self.images = images
        self.models = models
        self.captures = captures
        self._flight = SingleFlight()

    def hot_hit(self, view: ImageView, image_id: str, model_id: str) -> View | None:
        """The rendered view from the hot lane, with no awaits (the fast lane and the routes try it first)."""
        info = self.models.known_info(model_id)
        if info is None or self.images.known(image_id) is None:
            return None
        return self.hot.get(hot_key(view, image_id, info))

    async def get(self, view: ImageView, image_id: str, model_id: str) -> View:
        found = self.hot_hit(view, image_id, model_id)
        if found is not None:
            return found
        await self.images.meta(image_id)
        info = await self.models.info(model_id)
        if not isinstance(view, MetricsView):
            view.check(info)
        produce: Callable[[], Awaitable[View]]
        if isinstance(view, AttentionView):
            produce = lambda: self._attention(view, image_id, info)  # noqa: E731
        elif isinstance(view, SpectrumView):
            produce = lambda: self._spectrum(view, image_id, info)  # noqa: E731
        else:
            produce = lambda: self._metrics(image_id, info)  # noqa: E731
        media = render.MEDIA_TYPES[getattr(view, "fmt", "json")]
        return await self._cached(
            hot_key(view, image_id, info), store_key(view, image_id, info), media, produce
        )

    async def _cached(
        self, hkey: Hashable, skey: str, media: str, produce: Callable[[], Awaitable[View]]
    ) -> View:
        async def miss() -> View:
            data = await self.store.get(skey)
            if data is not None:
                found = View(data, media)
            else:
                found = await produce()
                await self.store.set(skey, found.body)
            self.hot.put(hkey, found)
            return found

        return await self._flight.run(hkey, miss)

    async def _metrics(self, image_id: str, info: ModelInfo) -> View:
        return render.json_object_view(await self.captures.metrics(image_id, info))

    async def _attention(self, v: AttentionView, image_id: str, info: ModelInfo) -> View:
        import torch

        from backend.analysis import query_map

        a = info.addr(image_id)
        k = v.layer - 1
        if v.rollout:
            key, pick = K.rollout_key(*a, v.layer), lambda b: b.rollout[k]
        else:
            key, pick = K.attention_key(*a, v.layer), lambda b: b.attention[k]
        arr = await self.captures.array(key, image_id, info, pick)
        att = torch.from_numpy(np.array(arr, dtype=np.float32))  # a writable float32 copy
        maps = query_map(att if not v.rollout else att[None], info.grid, info.num_prefix, v.query)
        if v.head == "mean" and not v.rollout:
            maps = maps.mean(0, keepdim=True)
        elif v.head not in ("mean", "all"):
            maps = maps[int(v.head) : int(v.head) + 1]
        return await self._render_maps(image_id, info, maps.numpy(), v)

    async def _render_maps(self, image_id: str, info: ModelInfo, maps: np.ndarray, v: AttentionView) -> View:
        single = v.head != "all" or v.rollout
        if v.fmt == "npy":
            return render.npy_view(maps[0] if single else maps)
        if v.fmt == "json":
            payload = {
                "image": image_id,
                "model": info.id,
                "grid": list(info.grid),
                "patch_size": info.patch_size,
                "layer": v.layer,
                "head": v.head if v.head in ("mean", "all") else int(v.head),
                "query": "cls" if v.query is None else v.query,
                "rollout": v.rollout,
            }
            return render.json_view(payload, {"map": maps[0] if single else maps})
        from backend.imaging import Preprocessing, model_view

        prep = Preprocessing.from_dict(info.preprocessing)
        image = await self.images.model_view(image_id, prep)
        cell = None if v.query is None else divmod(v.query, info.grid[1])

        def draw() -> View:
            return render.overlay_png(model_view(image, prep), maps, info.patch_size, cell, scale=v.scale)

        return await asyncio.to_thread(draw)

    async def _spectrum(self, v: SpectrumView, image_id: str, info: ModelInfo) -> View:
        import torch

        from backend.analysis import delta_bin, half_diagonal_delta, half_diagonal_frequencies

        key = K.spectrum_key(*info.addr(image_id), v.state, v.depth)
        m = await self.captures.array(key, image_id, info, lambda b: b.spectrum[v.state][v.depth - v.first])
        m = np.asarray(m, dtype=np.float32)
        if v.fmt == "npy":
            return render.npy_view(m)
        if v.fmt == "png":
            return await asyncio.to_thread(render.heatmap_png, m)
        delta = half_diagonal_delta(torch.from_numpy(m.astype(np.float64))).numpy()
        grid = (int(m.shape[0]), int(m.shape[1]))
        payload = {
            "image": image_id,
            "model": info.id,
            "grid": list(grid),
            "state": v.state,
            "depth": v.depth,
            "high_frequency_delta": float(delta[-1]),
            "delta_bin": delta_bin(grid),
        }
        # the bins' (row, column) frequencies beside delta, so a client plots delta(m) without the definition
        freqs = np.asarray(half_diagonal_frequencies(grid), dtype=np.float64)
        return render.json_view(payload, {"delta": delta, "frequencies": freqs, "map": m})


__all__ = [
    "AttentionView",
    "ImageView",
    "MetricsView",
    "SpectrumView",
    "ViewService",
    "hot_key",
    "store_key",
]
