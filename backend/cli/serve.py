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
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, access_log=False)
    return 0
