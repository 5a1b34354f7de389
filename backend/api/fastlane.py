"""The cached path without the framework: rendered image views answered straight from the hot lane.

A GET of ``/api/v1/images/{id}/attention|spectrum|metrics`` whose exact parameters were answered before is
served here from the in-process hot lane (``backend.service.hot``) in a few microseconds: no routing, no
dependency injection. The parameters are parsed by the view's own ``from_query`` (``backend.service.views``,
the same parser the routes use), and an entry exists only for parameters that passed the model's range
checks when it was computed. Anything this parser does not accept (a repeated parameter, another spelling
of a boolean...) falls through to FastAPI unchanged. It sits inside the bearer-token check.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.errors import BadRequest
from backend.service.views import VIEWS

if TYPE_CHECKING:
    from backend.service.core import AnalysisService

_PATH = re.compile(r"^/api/v1/images/([0-9a-f]{64})/(attention|spectrum|metrics)$")
_ROUTES = {
    "attention": "/api/v1/images/{image_id}/attention",
    "spectrum": "/api/v1/images/{image_id}/spectrum",
    "metrics": "/api/v1/images/{image_id}/metrics",
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
        model_id = q.get("model", service.default_model)
        if not 1 <= len(model_id) <= 80:
            return None
        try:
            params = VIEWS[kind].from_query(q)  # the parameters' one parser (the routes' too)
        except BadRequest:
            return None
        view = service.views.hot_hit(params, image_id, model_id)
        if view is None:
            return None
        return view.body, view.media_type.encode()
