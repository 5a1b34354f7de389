"""Pure ASGI middleware (no per-request task or body copy): bearer token, request body limit, metrics."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.errors import error_response

if TYPE_CHECKING:
    from backend.api.metrics import ApiMetrics

API_PREFIX = "/api/v1"
OPEN_PATHS = frozenset({f"{API_PREFIX}/health"})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class BearerAuth:
    """``Authorization: Bearer <token>`` on every ``/api/v1`` route but ``/health`` (and CORS preflights)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(API_PREFIX) and path not in OPEN_PATHS and scope["method"] != "OPTIONS":
                given = _header(scope, b"authorization")
                if given is None or not hmac.compare_digest(given, self.expected):
                    message = (
                        "this server needs a bearer token: send 'Authorization: Bearer <VITSCOPE_API_TOKEN>'"
                        if given is None
                        else "the bearer token is wrong; send 'Authorization: Bearer <VITSCOPE_API_TOKEN>'"
                    )
                    response = error_response(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over a limit while they stream (413), before the app reads them all, and
    bodies that do not arrive in full within ``deadline_s`` (408: a slow client holds a connection and the
    bytes it sent so far).

    A declared ``Content-Length`` over the limit is refused before one byte is read; otherwise the bytes are
    counted as they arrive and the request fails as soon as they pass the limit.
    """

    def __init__(
        self, app: ASGIApp, default_limit: int, limits: dict[str, int], deadline_s: float | None = None
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = limits  # exact path -> limit
        self.deadline_s = deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"].rstrip("/"), self.default_limit)
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length > limit:
                await _too_large(limit, length)(scope, receive, send)
                return
        seen = 0
        complete = False
        deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s

        async def counted() -> Message:
            nonlocal seen, complete
            if complete or deadline is None:  # after the body: waits for a disconnect, no deadline
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise HTTPException(
                        408,
                        f"the request body did not arrive within {self.deadline_s:g} s ({seen:,} bytes "
                        "came); send it faster or in a smaller file",
                        {"Connection": "close"},
                    ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched and reaches the
                    # error handlers, which answer 413 in the API's error shape.
                    raise HTTPException(413, _too_large_message(limit, None))
            return message

        await self.app(scope, counted, send)


def _too_large_message(limit: int, length: int | None) -> str:
    if length is None or length < 0:
        return (
            f"the request body passed {limit:,} bytes while it streamed; at most {limit:,} bytes are allowed"
        )
    return f"the request body is {length:,} bytes; at most {limit:,} bytes are allowed here"


def _too_large(limit: int, length: int):  # noqa: ANN202 - a Response
    return error_response(413, "too_large", _too_large_message(limit, length), {"Connection": "close"})


class Observe:
    """Count and time every request by route template (bounded label set) for Prometheus."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or scope.get("vitscope.route")
            if path is None:
                path = "ui" if not scope["path"].startswith(API_PREFIX) else "unmatched"
            self.metrics.observe(scope["method"], path, status, time.perf_counter() - started)
