"""The model catalogue, and downloads of weights as jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from starlette.responses import Response

from backend.api.deps import ModelsDep
from backend.api.schemas import JobAccepted, ModelList, ModelOut, errors
from backend.service import render

router = APIRouter(prefix="/models", tags=["models"])

ModelId = Annotated[
    str, PathParam(min_length=1, max_length=80, description="Model id", examples=["random-vit-s16"])
]


@router.get("", response_model=ModelList, summary="The catalogue: named models with family and availability")
async def list_models(models: ModelsDep) -> Response:
    """Every named model (built-in, demo, imported); any timm ViT name works too without being listed.

    ``available``: weights on disk (else ``unavailable_reason`` names the file expected and ``fetch_command``
    the command that fetches or imports it); ``loaded``: on a device right now; ``default``: one of the
    server's default models (warmed up at start; the only ones the UI offers in class mode).
    """
    return render.json_object_view({"models": await models.listing()}).as_response()


@router.get("/{model_id}", response_model=ModelOut, responses=errors(404), summary="One model")
async def get_model(models: ModelsDep, model_id: ModelId) -> Response:
    """Any timm ViT name answers too; ``info`` (layers, heads, grid, digest) once the model was loaded."""
    return render.json_object_view(await models.entry(model_id)).as_response()


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
async def pull_model(models: ModelsDep, model_id: ModelId) -> Response:
    """200 with the model when its weights are there; else 202 with a download job (``GET /jobs/{id}``).

    Needs ``VITSCOPE_ALLOW_DOWNLOADS=1`` on the server (403 otherwise); always 403 in class mode.
    """
    job = await models.pull(model_id)
    if job is None:
        return await get_model(models, model_id)
    return render.json_object_view({"job": job.as_dict()}).as_response(
        202, {"Location": f"/api/v1/jobs/{job.id}"}
    )
