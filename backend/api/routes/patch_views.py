"""Patch-token views of one image: cosine similarity of one patch to every patch, PCA of the tokens to RGB."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from backend.api.deps import ImageId, ModelParam, ModelsDep, ViewsDep
from backend.api.schemas import errors
from backend.service.patch_views import PatchViews, foreground_threshold

router = APIRouter(prefix="/images", tags=["images"])

_LAYER = Query(ge=0, le=1024, description="Output of block K (0 = the embedding)")
CENTRED = Query(description="Subtract the image's mean patch token before the cosines (default: raw tokens)")
# The foreground mask of both PCA views (this image's and the set's): backend.analysis.patches.foreground_mask
MASK = Query(description="Keep only the foreground patches: first-component score > threshold x its std")
THRESHOLD = Query(
    ge=-3,
    le=3,
    description="The mask's threshold in std of the first component: a multiple of 0.05 (default 0)",
)


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
    centred: Annotated[bool, CENTRED] = False,
) -> Response:
    """``map``: ``H x W`` cosine similarity between the patch token ``query`` and every patch token of the
    output of block ``layer`` (prefix dropped; the patch itself is 1): of the raw tokens, or with
    ``centred=true`` of the tokens minus their mean over the image's patches."""
    pv = PatchViews(views)
    view = await pv.similarity(image_id, model or models.default_model, layer, query, centred)
    return view.as_response()


@router.get(
    "/{image_id}/pca",
    responses=errors(400, 404, 409, 422, 503),
    summary="The patch tokens on their top 3 principal components, as RGB (optionally the foreground only)",
)
async def pca(
    views: ViewsDep,
    models: ModelsDep,
    image_id: ImageId,
    model: ModelParam = None,
    layer: Annotated[int, _LAYER] = 1,
    mask: Annotated[bool, MASK] = False,
    threshold: Annotated[float | None, THRESHOLD] = None,
) -> Response:
    """``rgb``: ``H x W x 3`` in [0, 1]: the patch tokens of the output of block ``layer`` projected on the
    top 3 principal components fitted on this image's patches (centred, each sign fixed so that its
    largest-magnitude score is positive), each scaled to [0, 1]; ``explained``: each component's share of
    the variance. ``mask=true``: the foreground patches only, those whose first-component score is above
    ``threshold`` (default 0) standard deviations of the scores; the PCA is then fitted and scaled on them,
    the others are 0 (black); ``foreground``: ``H x W`` booleans, ``mask.kept``: their share."""
    parsed = foreground_threshold(mask, threshold)
    view = await PatchViews(views).pca(image_id, model or models.default_model, layer, parsed)
    return view.as_response()
