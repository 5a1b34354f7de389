"""The cached path without the framework: rendered image views answered straight from the hot lane.

A GET of ``/api/v1/images/{id}/attention|spectrum|metrics`` whose exact parameters were answered before is
served here from the in-process hot lane (``backend.service.hot``) in a few microseconds: no routing, no
dependency injection, no validation (the entry exists only because the same raw parameters passed validation
when it was computed). Anything else, including every parameter this parser does not recognize in its
canonical form, falls through to FastAPI unchanged. It sits inside the bearer-token check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.service.hot import view_key

if TYPE_CHECKING:
    from backend.service.analysis import AnalysisService

_PATH = re.compile(r"^/api/v1/images/([0-9a-f]{64})/(attention|spectrum|metrics)$")
_SMALL_INT = re.compile(r"^\d{1,4}$")
_HEAD = re.compile(r"^(\d{1,4}|mean|all)$")
_QUERY = re.compile(r"^(\d{1,6}|cls)$")
_FORMATS = frozenset({"json", "png", "npy"})
_ROUTES = {
    "attention": "/api/v1/images/{image_id}/attention",
    "spectrum": "/api/v1/images/{image_id}/spectrum",
    "metrics": "/api/v1/images/{image_id}/metrics",
}


def _attention(q: dict[str, str]) -> tuple[object, ...] | None:
    layer, head, query = q.pop("layer", "1"), q.pop("head", "mean"), q.pop("query", "cls")
    rollout, fmt = q.pop("rollout", "false"), q.pop("format", "json")
    if not (_SMALL_INT.match(layer) and _HEAD.match(head) and _QUERY.match(query) and fmt in _FORMATS):
        return None
    if rollout not in ("true", "false") or not 1 <= int(layer) <= 1024:
        return None
    return (int(layer), head, query, rollout == "true", fmt)


def _spectrum(q: dict[str, str]) -> tuple[object, ...] | None:
    state, depth, fmt = q.pop("state", "out"), q.pop("depth", "0"), q.pop("format", "json")
    if state not in ("out", "attn") or not _SMALL_INT.match(depth) or fmt not in _FORMATS:
        return None
    return (state, int(depth), fmt)


def _metrics(_q: dict[str, str]) -> tuple[object, ...] | None:
    return ()


_PARSERS: dict[str, Callable[[dict[str, str]], tuple[object, ...] | None]] = {
    "attention": _attention,
    "spectrum": _spectrum,
    "metrics": _metrics,
}


class FastLane:
    def __init__(self, app: ASGIApp, service: AnalysisService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            hit = self._lookup(scope)
            if hit is not None:
                body, media_type = hit
                scope["vitscope.route"] = _ROUTES[_PATH.match(scope["path"]).group(2)]  # type: ignore[union-attr]
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", media_type),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _lookup(self, scope: Scope) -> tuple[bytes, bytes] | None:
        match = _PATH.match(scope["path"])
        if match is None:
            return None
        image_id, kind = match.group(1), match.group(2)
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        q = dict(pairs)
        if len(q) != len(pairs):  # a repeated parameter: leave it to the framework
            return None
        service = self.service
        model_id = q.pop("model", service.default_model)
        params = _PARSERS[kind](q)
        if params is None or not 1 <= len(model_id) <= 80:
            return None
        info = service.known_info(model_id)
        if info is None or service.images.meta(image_id) is None:
            return None
        view: Any = service.hot.get(view_key(kind, image_id, model_id, info.digest, *params))
        if view is None:
            return None
        return view.body, view.media_type.encode()
