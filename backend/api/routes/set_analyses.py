"""Set-level analyses: linear CKA between every depth of two models, the patch PCA fitted on a whole set."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from backend.api.deps import ModelParam, ModelsDep, SetId, SetsDep
from backend.api.routes.patch_views import MASK, THRESHOLD
from backend.api.routes.sets import _ACCEPTED, _answer
from backend.api.schemas import errors
from backend.service.patch_views import foreground_threshold
from backend.service.set_analyses import SetAnalyses

router = APIRouter(prefix="/sets", tags=["sets"])

_MODEL = Query(min_length=1, max_length=80, description="Model id (GET /models)")


@router.get(
    "/{set_id}/cka",
    responses={**_ACCEPTED, **errors(400, 404, 409, 422, 503)},
    summary="Linear CKA between every depth of two models on a set, with a permutation null",
)
async def cka(
    sets: SetsDep,
    set_id: SetId,
    model_a: Annotated[str, _MODEL],
    model_b: Annotated[str, _MODEL],
) -> Response:
    """``cka[i][j]``: linear CKA between depth ``i`` of ``model_a`` and depth ``j`` of ``model_b`` (0 = the
    embedding), on each image's mean patch token (N images x C, centred over images):
    ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``. ``null_mean`` / ``null_std``: the same with the images of
    ``model_b`` shuffled (20 permutations, seed 0); ``calibrated = cka - null_mean``. Needs 2+ images."""
    return _answer(await SetAnalyses(sets).cka(set_id, model_a, model_b))


@router.get(
    "/{set_id}/pca",
    responses={**_ACCEPTED, **errors(400, 404, 409, 422, 503)},
    summary="The patch tokens of every image on 3 principal components fitted on the whole set, as RGB",
)
async def pca(
    sets: SetsDep,
    models: ModelsDep,
    set_id: SetId,
    model: ModelParam = None,
    layer: Annotated[int, Query(ge=0, le=1024, description="Output of block K (0 = the embedding)")] = 1,
    mask: Annotated[bool, MASK] = False,
    threshold: Annotated[float | None, THRESHOLD] = None,
) -> Response:
    """As ``/images/{id}/pca``, with one PCA fitted on the patches of all images of the set (centred over
    all, signs fixed over all) and each channel scaled to [0, 1] over the whole set: ``rgb`` holds one
    ``H x W x 3`` picture per image of ``images`` (``foreground``: one ``H x W`` mask per image). The mask's
    rule runs over all patches of the set. At most ``max_embedding_points`` tokens (images x patches)."""
    parsed = foreground_threshold(mask, threshold)
    return _answer(await SetAnalyses(sets).pca(set_id, model or models.default_model, layer, parsed))
