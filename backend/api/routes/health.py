"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from backend import __version__
from backend.api.deps import MetricsDep, ServiceDep
from backend.api.errors import error_response
from backend.api.metrics import CONTENT_TYPE
from backend.api.schemas import Health, Ready, errors
from backend.service import render

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="The process lives (never needs a token)")
async def health() -> Response:
    return render.json_object_view({"status": "ok", "version": __version__}).as_response()


@router.get(
    "/ready",
    response_model=Ready,
    responses=errors(503),
    summary="200 once the default models are loaded and have run once, else 503",
)
async def ready(service: ServiceDep) -> Response:
    if not service.ready:
        pending = ", ".join(service.settings.default_models) or "the runner"
        return error_response(
            503, "not_ready", f"warming up ({pending}); retry in a few seconds", {"Retry-After": "2"}
        )
    body = {
        "status": "ready",
        "devices": [r.device_name for r in service.pool.runners],
        "cache": service.store.backend,
        "cache_ok": await service.store.ping(),
        "models": service.warmup_report,
    }
    return render.json_object_view(body).as_response()


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=CONTENT_TYPE)
