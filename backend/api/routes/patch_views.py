"""Patch-token views of one image: cosine similarity of one patch to every patch, PCA of the tokens to RGB."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from backend.api.deps import ImageId, ModelParam, ModelsDep, ViewsDep
from backend.api.schemas import errors
from backend.service.patch_views import PatchViews

router = APIRouter(prefix="/images", tags=["images"])

_LAYER = Query(ge=0, le=1024, description="Output of block K (0 = the embedding)")


@router.get(
    "/{image_id}/similarity",
    responses=errors(400, 404, 409, 422, 503),
    summary="Cosine similarity of one patch's token to every patch token",
)
async def similarity(
    views: ViewsDep,
    models: ModelsDep,
    image_id: ImageId,
    query: Annotated[int, Query(ge=0, le=1_000_000, description="Row-major patch index")],
    model: ModelParam = None,
    layer: Annotated[int, _LAYER] = 1,
) -> Response:
    """``map``: ``H x W`` cosine similarity between the patch token ``query`` and every patch token of the
    output of block ``layer`` (raw tokens, prefix dropped; the patch itself is 1)."""
    pv = PatchViews(views)
    return (await pv.similarity(image_id, model or models.default_model, layer, query)).as_response()


@router.get(
    "/{image_id}/pca",
    responses=errors(400, 404, 409, 422, 503),
    summary="The patch tokens on their top 3 principal components, as RGB",
)
async def pca(
    views: ViewsDep,
    models: ModelsDep,
    image_id: ImageId,
    model: ModelParam = None,
    layer: Annotated[int, _LAYER] = 1,
) -> Response:
    """``rgb``: ``H x W x 3`` in [0, 1]: the patch tokens of the output of block ``layer`` projected on the
    top 3 principal components fitted on this image's patches (centred, signs fixed), each scaled to [0, 1];
    ``explained``: each component's share of the variance."""
    return (await PatchViews(views).pca(image_id, model or models.default_model, layer)).as_response()
