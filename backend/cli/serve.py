"""`vitscope serve`: the REST API (and, by default, the Dash UI at /) in one uvicorn process."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the REST API at /api/v1 (OpenAPI at /docs) and the UI at /",
        description="Settings come from VITSCOPE_* environment variables and REDIS_URL (see docs/API.md); "
        "these options override them. Without a Redis URL the cache is an in-process LRU.",
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1; VITSCOPE_HOST)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000; VITSCOPE_PORT)")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto; VITSCOPE_DEVICE)")
    parser.add_argument("--no-ui", action="store_true", help="serve the API only, without the Dash UI at /")
    parser.add_argument("--redis-url", help="redis://host:port/db for the cache (default: REDIS_URL or none)")
    parser.add_argument("--models", help="comma-separated models to warm up (VITSCOPE_DEFAULT_MODELS)")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Any:
    from backend.config import Settings

    overrides: dict[str, Any] = {}
    for name in ("host", "port", "device", "redis_url"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "models", None):
        overrides["default_models"] = args.models
    if getattr(args, "no_ui", False):
        overrides["ui"] = False
    return Settings(**overrides)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
            print(f"vitscope serve: {where}: {err.get('msg')}", file=sys.stderr)
        return 2

    import uvicorn

    from backend.api import create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    app = create_app(settings, api_url=f"http://{host}:{settings.port}")
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.token:
        logging.getLogger("vitscope").warning(
            "serving on %s without VITSCOPE_API_TOKEN: anyone who reaches this port can use the API",
            settings.host,
        )
    uvicorn.Server(uvicorn_config(app, settings, log_level=args.log_level)).run()
    return 0


def uvicorn_config(app: Any, settings: Any, *, log_level: str = "info") -> Any:
    """uvicorn's config with the connection limits of the settings: a deadline on the request headers
    (slowloris), the keep-alive timeout and the header size limit of h11. The body deadline is
    ``BodyLimit``'s, in the app."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        http=header_deadline_protocol(settings.header_timeout_s),
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


def header_deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection that has not sent a request's complete headers within
    ``seconds`` of opening or of its previous response. uvicorn alone waits forever: its keep-alive timer
    stops at the first byte of a request and never starts on a new connection."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # no response: the client never finished asking

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol
