"""``create_app``: the FastAPI service at ``/api/v1`` (OpenAPI at ``/docs``), the Dash UI at ``/``."""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.routing import Match

from backend import __version__
from backend.api import errors
from backend.api.clients import RedisUploadLedger, TrustedProxies, UploadCaps, UploadLedger
from backend.api.fastlane import FastLane
from backend.api.metrics import ApiMetrics
from backend.api.middleware import API_PREFIX, OPEN_PATHS, BearerAuth, BodyLimit, Observe
from backend.api.routes import api_router
from backend.cache import Store, make_store
from backend.config import Settings, get_settings, mounted_ui_problem
from backend.errors import MethodNotAllowed, NotFound, VitscopeError
from backend.runner import Loader, Runner, RunnerPool, resolve_devices
from backend.service.core import AnalysisService

log = logging.getLogger(__name__)

DESCRIPTION = """
What do self-supervised Vision Transformers learn? Upload images and compare how contrastive (CL), masked
image modeling (MIM), hybrid and supervised ViTs attend and which frequencies they use, layer by layer
(Park et al., ICLR 2023; the analyses are defined in ANALYSES.md).

* One forward pass per (image, model) captures every layer; results are cached by content address
  (image sha256, model, weights digest, preprocessing, analysis version).
* Every error is `{"error": {"code", "message"}}`; the message says what was wrong and what is allowed.
* With `VITSCOPE_API_TOKEN` set, every route but `/api/v1/health` needs `Authorization: Bearer <token>`.
* `POST /images` is capped per client and hour (429 with `Retry-After`); in class mode it takes only the
  example gallery's images (403 otherwise).
"""

TAGS = [
    {"name": "health", "description": "Liveness, readiness, Prometheus metrics"},
    {"name": "models", "description": "The model catalogue and weight downloads"},
    {"name": "images", "description": "Uploads and per-image analyses (A1-A4)"},
    {"name": "sets", "description": "Image sets: set metrics and token embeddings (A5)"},
    {"name": "jobs", "description": "Long work with progress"},
    {"name": "reference", "description": "The paper's published curves, for overlays"},
    {"name": "claims", "description": "The paper's claims checked on the selected models"},
]


def build_service(
    settings: Settings, metrics: ApiMetrics, store: Store | None, loader: Loader | None
) -> AnalysisService:
    runners = [
        Runner(
            device,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_s,
            queue_size=settings.queue_size,
            model_memory_bytes=settings.model_memory_bytes,
            loader=loader,
            observer=metrics.batch_observer(device),
            allow_random_init=settings.allow_random_init,
            queue_bytes=settings.queue_bytes,
        )
        for device in resolve_devices(settings.device)
    ]
    store = store or make_store(
        settings.redis_url, settings.cache_memory_bytes, redis_timeout=settings.redis_timeout_s
    )
    return AnalysisService(settings, store, RunnerPool(runners))


def client_ledgers(settings: Settings) -> dict[str, UploadLedger]:
    """The per-client hourly caps by route pattern: new images (uploads and perturbed copies: count, and the
    bytes each request sends) and set creations (count); in Redis when one is configured (shared by replicas,
    kept on restart)."""
    caps = {
        f"{API_PREFIX}/images(/[0-9a-f]{{64}}/perturb)?": (
            settings.client_uploads_per_hour, settings.client_upload_bytes_per_hour,
            "uploads", "VITSCOPE_CLIENT_UPLOADS_PER_HOUR"),
        f"{API_PREFIX}/sets": (settings.client_sets_per_hour, 0, "sets", "VITSCOPE_CLIENT_SETS_PER_HOUR"),
    }  # fmt: skip
    ledgers: dict[str, UploadLedger] = {}
    for pattern, (count, nbytes, what, setting) in caps.items():
        if settings.redis_url and (count or nbytes):
            ledgers[pattern] = RedisUploadLedger(
                settings.redis_url, count, nbytes, timeout=settings.redis_timeout_s,
                prefix=f"vitscope:{what}:", what=what, setting=setting,
            )  # fmt: skip
        else:
            ledgers[pattern] = UploadLedger(count, nbytes, what=what, setting=setting)
    return ledgers


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    loader: Loader | None = None,
    ui: bool | None = None,
    api_url: str | None = None,
) -> FastAPI:
    """The service. ``store`` and ``loader`` replace the configured ones (tests); ``ui`` overrides
    ``settings.ui``; ``api_url`` is where the mounted UI reaches this API (default ``http://127.0.0.1:PORT``).

    Raises ValueError when the UI is to be mounted with settings that would open the API through it."""
    settings = settings or get_settings()
    mount_ui = settings.ui if ui is None else ui
    problem = mounted_ui_problem(settings) if mount_ui else None
    if problem:
        raise ValueError(problem)
    metrics = ApiMetrics()
    service = build_service(settings, metrics, store, loader)
    metrics.attach(service)
    ledgers = client_ledgers(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            for ledger in ledgers.values():
                await ledger.close()

    app = FastAPI(
        title="vitscope",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # _install_docs: Swagger UI from local files
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics
    app.state.client_ledgers = ledgers
    errors.install(app)
    app.include_router(api_router)

    @app.api_route(
        f"{API_PREFIX}/{{path:path}}",
        methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
        include_in_schema=False,
    )
    async def unknown_route(request: Request, path: str) -> None:
        others = [r for r in app.router.routes if getattr(r, "endpoint", None) is not unknown_route]
        if any(r.matches(request.scope)[0] == Match.PARTIAL for r in others):
            raise MethodNotAllowed(f"method {request.method} is not allowed on {request.url.path}")
        raise NotFound(f"no route /api/v1/{path}; see /docs for the routes under /api/v1")

    _install_openapi(app)
    _install_docs(app)
    # Middleware, the last added runs first:
    # Observe -> CORS -> auth -> upload caps -> fast lane -> body limit -> app.
    limit = settings.max_upload_bytes + 64 * 1024  # the multipart envelope around the file
    # The mounted UI's upload route passes files on to POST /images: the same limit.
    # The mounted UI's "Export all panels" sends the page's figures (PNG and SVG) in one Dash callback.
    limits = {f"{API_PREFIX}/images": limit, "/_vitscope/upload": limit, "/_dash-update-component": limit}
    app.add_middleware(
        BodyLimit, default_limit=1024 * 1024, limits=limits, deadline_s=settings.body_timeout_s
    )
    if settings.hot_cache_bytes > 0:
        app.add_middleware(FastLane, service=service)
    trusted = TrustedProxies(settings.trusted_proxies)
    for pattern, ledger in ledgers.items():
        if ledger.enabled:
            app.add_middleware(
                UploadCaps, pattern=pattern, ledger=ledger, trusted=trusted, token=settings.token
            )
    if settings.token:
        app.add_middleware(BearerAuth, token=settings.token)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location", "Retry-After"],
        )
    app.add_middleware(Observe, metrics=metrics)

    if mount_ui:
        _mount_ui(app, api_url or f"http://127.0.0.1:{settings.port}", settings)
    return app


def _install_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI 5 from the files the ``fastapi-offline`` package ships (no CDN: works offline).

    Its URLs are relative to ``/docs``: the page also works behind a proxy that serves the API on a sub-path.
    """
    from pathlib import Path

    import fastapi_offline  # type: ignore[import-untyped,unused-ignore]
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"  # swagger-ui-bundle.js, swagger-ui.css, favicon
    app.mount("/docs/assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title="vitscope API",
            swagger_js_url="docs/assets/swagger-ui-bundle.js",
            swagger_css_url="docs/assets/swagger-ui.css",
            swagger_favicon_url="docs/assets/favicon.png",
        )


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes, tags=TAGS
        )
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "Only when the server sets VITSCOPE_API_TOKEN",
        }
        for path, item in schema.get("paths", {}).items():
            if path in OPEN_PATHS:
                continue
            for op in item.values():
                op["security"] = [{"bearer": []}, {}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _mount_ui(app: FastAPI, api_url: str, settings: Settings) -> None:
    """The Dash UI (a WSGI app) at ``/`` of this process, behind its login; the API keeps working when the UI
    cannot load."""
    try:
        from app.main import create_dash_app, ui_options  # type: ignore[import-not-found,unused-ignore]

        dash_app = create_dash_app(api_url, requests_pathname_prefix="/", **ui_options(settings))
    except (ImportError, VitscopeError, RuntimeError, ValueError, AttributeError, TypeError) as exc:
        log.warning("the Dash UI is not mounted (%s: %s); the API works on its own", type(exc).__name__, exc)
        return
    try:
        from a2wsgi import WSGIMiddleware  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from starlette.middleware.wsgi import WSGIMiddleware
    app.mount("/", WSGIMiddleware(dash_app.server))  # type: ignore[arg-type,unused-ignore]
