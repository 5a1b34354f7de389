"""Sets of images: set metrics (means with spread) and token embeddings (A5), computed as jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from backend.api.deps import ModelParam, ModelsDep, SetId, SetsDep
from backend.api.schemas import EmbeddingsOut, JobAccepted, SetIn, SetOut, errors
from backend.service import render
from backend.service.hot import View
from backend.service.jobs import Job

router = APIRouter(prefix="/sets", tags=["sets"])

_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": JobAccepted, "description": "Still computing: follow the job, then GET again"}
}


def _answer(result: View | Job) -> Response:
    if isinstance(result, View):
        return result.as_response()
    return render.json_object_view({"job": result.as_dict()}).as_response(
        202, {"Location": f"/api/v1/jobs/{result.id}", "Retry-After": "1"}
    )


@router.post(
    "", status_code=201, response_model=SetOut, responses=errors(400, 404, 422), summary="Define a set"
)
async def create_set(sets: SetsDep, body: SetIn) -> Response:
    """A set is the ordered list of its image ids (all uploaded before); the same list gives the same id."""
    set_id = await sets.create(body.images)
    return render.json_object_view(
        {"id": set_id, "images": body.images, "size": len(body.images)}
    ).as_response(201, {"Location": f"/api/v1/sets/{set_id}"})


@router.get("/{set_id}", response_model=SetOut, responses=errors(404, 422), summary="A set's members")
async def get_set(sets: SetsDep, set_id: SetId) -> Response:
    members = await sets.members(set_id)
    return render.json_object_view({"id": set_id, "images": members, "size": len(members)}).as_response()


@router.get(
    "/{set_id}/metrics",
    responses={**_ACCEPTED, **errors(400, 404, 409, 422, 503)},
    summary="Set metrics: the metrics.json object over the set (means over images, std = spread)",
)
async def set_metrics(sets: SetsDep, models: ModelsDep, set_id: SetId, model: ModelParam = None) -> Response:
    """The same object as ``/images/{id}/metrics`` with ``num_images`` = the set size: every value is the
    mean over images of the per-image value, ``std`` its population standard deviation over images, and
    ``per_head`` the per-head means. Answers 202 with a job when it takes over ``VITSCOPE_SET_WAIT_S``."""
    return _answer(await sets.metrics(set_id, model or models.default_model))


@router.get(
    "/{set_id}/embeddings",
    response_model=EmbeddingsOut,
    responses={**_ACCEPTED, **errors(400, 404, 409, 422, 503)},
    summary="2D projection of the patch tokens of every image (A5)",
)
async def embeddings(
    sets: SetsDep,
    models: ModelsDep,
    set_id: SetId,
    model: ModelParam = None,
    layer: Annotated[int, Query(ge=0, le=1024, description="Output of block K (0 = the embedding)")] = 1,
    method: Annotated[
        str, Query(pattern="^(pca|tsne)$", description="pca (fast) | tsne (perplexity 20)")
    ] = "pca",
) -> Response:
    """Raw patch tokens (prefix dropped, no normalization) of the output of block ``layer`` of every image,
    stacked and projected to 2D; ``image_index`` says which image each point comes from (ANALYSES.md A5).
    t-SNE is seeded (0) for reproducibility. With them, the singular values of each image's patch-token matrix
    (the same tokens, **not centred**: raw, as A5 says), each divided by its largest, their mean over the
    images, and each image's raw largest."""
    return _answer(await sets.embeddings(set_id, model or models.default_model, layer, method))
