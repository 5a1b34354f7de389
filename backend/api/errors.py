"""Every error is JSON ``{"error": {"code", "message"}}``; this module maps exceptions to status codes.

The message says what was wrong (echoing the bad value) and what is allowed; the status is the exception
class's own (``backend.errors``). FastAPI's validation errors keep
their 422 and get the same shape; unknown routes, wrong methods and oversized bodies too.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from backend.errors import VitscopeError

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def vitscope_error_response(exc: VitscopeError) -> Response:
    """The error's own status (each class in ``backend.errors`` carries one) and headers."""
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc)
    return error_response(exc.status, exc.code, str(exc), exc.headers or None)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    kinds = {"query": "query parameter", "path": "path parameter", "body": "body field", "header": "header"}
    if not loc:
        return "request"
    head, rest = str(loc[0]), [str(p) for p in loc[1:]]
    if head in kinds:
        if rest:
            return f"{kinds[head]} {'.'.join(rest)!r}"
        return "request body" if head == "body" else kinds[head]
    return ".".join([head, *rest])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = _where(err.get("loc", ()))
        msg = str(err.get("msg", "is invalid"))
        if err.get("type") == "missing":
            parts.append(f"{where} is required")
            continue
        got = f" (got {_short(err['input'])})" if "input" in err and err["input"] is not None else ""
        parts.append(f"{where}: {msg}{got}")
    if len(exc.errors()) > 5:
        parts.append(f"and {len(exc.errors()) - 5} more")
    return "; ".join(parts) or "the request is invalid"


def install(app: FastAPI) -> None:
    async def on_vitscope(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, VitscopeError)
        return vitscope_error_response(exc)

    async def on_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", validation_message(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        if status == 404:
            message = f"no route {request.url.path}; the API lives under /api/v1 (see /docs)"
        elif status == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(status, HTTP_CODES.get(status, "http_error"), message, dict(exc.headers or {}))

    async def on_other(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal", f"internal error ({type(exc).__name__}); see the server log")

    app.add_exception_handler(VitscopeError, on_vitscope)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_other)
