"""The token-norm map of one image: each patch token's L2 norm at one depth, the outliers, the prefix's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from backend.api.deps import ImageId, ModelParam, ModelsDep, ViewsDep
from backend.api.schemas import TokenNormsOut, errors
from backend.service.token_norms import TokenNorms, TokenNormsView
from backend.service.views import MAX_LAYER

router = APIRouter(prefix="/images", tags=["images"])


@router.get(
    "/{image_id}/token_norms",
    response_model=TokenNormsOut,
    responses=errors(400, 404, 409, 422, 503, 504),
    summary="L2 norm of every patch token at one depth, the high-norm outliers and the prefix tokens' norms",
)
async def token_norms(
    views: ViewsDep,
    models: ModelsDep,
    image_id: ImageId,
    layer: Annotated[int, Query(ge=0, le=MAX_LAYER, description="Output of block K (0 = the embedding)")],
    model: ModelParam = None,
) -> Response:
    """``map``: ``H x W`` L2 norms of the patch tokens of the output of block ``layer`` (the cached float16
    tokens); ``median``: their median; ``outliers``: the row-major indices of the patches whose norm is above
    ``outlier_factor`` x ``median`` (the rule of ``metrics.json``'s ``token_norm``; ``stats`` are its values
    at this depth for this image, from the float16 tokens: equal up to their rounding, about 1e-5 of the
    norm, so a patch within that of the cut can count differently); ``prefix``: the norm of each prefix
    token, labelled ``cls`` and ``register 1``.. after the model's prefix (``has_cls_token``,
    ``num_prefix_tokens``)."""
    params = TokenNormsView.parse(layer)
    view = await TokenNorms(views).get(params, image_id, model or models.default_model)
    return view.as_response()
