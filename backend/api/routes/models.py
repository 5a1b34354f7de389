"""The model catalogue, and downloads of weights as jobs."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from starlette.responses import Response

from backend.api.deps import ServiceDep
from backend.api.schemas import JobAccepted, ModelList, ModelOut, errors
from backend.service import render
from backend.service.analysis import AnalysisService

router = APIRouter(prefix="/models", tags=["models"])

ModelId = Annotated[
    str, PathParam(min_length=1, max_length=80, description="Model id", examples=["random-vit-s16"])
]
_PATCH_RE = re.compile(r"patch(\d+)")
_LISTING_TTL = 5.0


def missing_weights(spec: Any) -> tuple[str, str]:
    """Why a model cannot run (naming the file expected) and the command that fetches or imports it."""
    from backend.models.weights import expected_file

    if spec.source == "file":
        return (
            f"the weights file {spec.location} is missing",
            f"vitscope models import FILE --format timm --arch {spec.arch} --as {spec.id}",
        )
    expected = expected_file(spec)
    reason = f"no weights in the models cache (expected {expected})"
    if spec.source == "manual":
        name = PurePath(expected).name
        return (
            f"{reason}; {name} has no direct download: get it by hand from {spec.location}",
            f"vitscope models import {name} --format {spec.converter} --as {spec.id}",
        )
    return reason, f"vitscope models pull {spec.id}"


def _entry(
    service: AnalysisService,
    spec: Any,
    available: bool,
    loaded: set[str],
    missing: tuple[str, str] | None,
) -> dict[str, Any]:
    info = service.known_info(spec.id)
    # Not loaded yet: arch_kwargs override the name (the demo models are patch 4 on a patch16 arch).
    match = _PATCH_RE.search(spec.arch)
    declared = spec.arch_kwargs.get("patch_size", int(match.group(1)) if match else None)
    patch = info.patch_size if info is not None else declared
    reason, command = missing if missing is not None and not available else (None, None)
    return {
        "id": spec.id,
        "family": spec.family,
        "arch": spec.arch,
        "patch_size": patch,
        "available": available,
        "loaded": spec.id in loaded,
        "license": spec.license,
        "source": spec.source,
        "untrained": spec.untrained,
        "paper": spec.paper,
        "description": spec.description,
        "info": info.as_dict() if info is not None else None,
        "default": spec.id in service.settings.default_models,
        "unavailable_reason": reason,
        "fetch_command": command,
    }


def _state(spec: Any) -> tuple[Any, bool, tuple[str, str] | None]:
    from backend.models import weights_available

    available = weights_available(spec)
    return spec, available, None if available else missing_weights(spec)


def _catalogue() -> list[tuple[Any, bool, tuple[str, str] | None]]:
    from backend.models import list_specs

    return [_state(spec) for spec in list_specs()]


@router.get("", response_model=ModelList, summary="The catalogue: named models with family and availability")
async def list_models(service: ServiceDep) -> Response:
    """Every named model (built-in, demo, imported); any timm ViT name works too without being listed.

    ``available``: weights on disk (else ``unavailable_reason`` names the file expected and ``fetch_command``
    the command that fetches or imports it); ``loaded``: on a device right now; ``default``: one of the
    server's default models (warmed up at start; the only ones the UI offers in class mode).
    """
    cached = getattr(service, "_model_listing", None)
    now = time.monotonic()
    if cached is None or now - cached[0] > _LISTING_TTL:
        cached = (now, await asyncio.to_thread(_catalogue))
        service._model_listing = cached  # type: ignore[attr-defined]
    loaded = set(service.pool.loaded())
    body = {"models": [_entry(service, spec, ok, loaded, missing) for spec, ok, missing in cached[1]]}
    return render.json_object_view(body).as_response()


@router.get("/{model_id}", response_model=ModelOut, responses=errors(404), summary="One model")
async def get_model(service: ServiceDep, model_id: ModelId) -> Response:
    """Any timm ViT name answers too; ``info`` (layers, heads, grid, digest) once the model was loaded."""
    spec = await service.spec(model_id)
    spec, available, missing = await asyncio.to_thread(_state, spec)
    body = _entry(service, spec, available, set(service.pool.loaded()), missing)
    return render.json_object_view(body).as_response()


@router.post(
    "/{model_id}/pull",
    response_model=ModelOut,
    status_code=200,
    responses={
        202: {"model": JobAccepted, "description": "Download started: follow the job"},
        **errors(403, 404, 409),
    },
    summary="Download a model's weights (a job)",
)
async def pull_model(service: ServiceDep, model_id: ModelId) -> Response:
    """200 with the model when its weights are there; else 202 with a download job (``GET /jobs/{id}``).

    Needs ``VITSCOPE_ALLOW_DOWNLOADS=1`` on the server (403 otherwise); always 403 in class mode.
    """
    job = await service.pull(model_id)
    if job is None:
        return await get_model(service, model_id)
    return render.json_object_view({"job": job.as_dict()}).as_response(
        202, {"Location": f"/api/v1/jobs/{job.id}"}
    )
