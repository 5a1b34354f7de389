"""Uploads and the per-image analyses: metrics, attention maps, spectra."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from starlette.responses import Response

from backend.api.deps import Format, ImageId, ImagesDep, ModelParam, ModelsDep, ViewsDep
from backend.api.schemas import AttentionOut, ImageOut, SpectrumOut, errors
from backend.errors import PayloadTooLarge
from backend.service import render
from backend.service.views import (
    HEAD_PATTERN,
    MAX_LAYER,
    MAX_PNG_SCALE,
    QUERY_PATTERN,
    AttentionView,
    MetricsView,
    SpectrumView,
)

router = APIRouter(prefix="/images", tags=["images"])

_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
_MAP_CONTENT = {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}


@router.post(
    "",
    status_code=201,
    response_model=ImageOut,
    responses=errors(400, 403, 413, 422, 429),
    summary="Upload an image (multipart field `file`)",
)
async def upload_image(
    images: ImagesDep,
    file: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF")],
) -> Response:
    """Decoded with a format allow-list, a pixel cap, EXIF orientation and explicit conversion to RGB.

    The id is the sha256 of the exact bytes: uploading the same bytes again gives the same id. The body is
    refused with 413 as soon as it passes ``VITSCOPE_MAX_UPLOAD_BYTES`` while it streams.

    Each client (its address, or what a trusted proxy says in ``X-Forwarded-For``) may upload
    ``VITSCOPE_CLIENT_UPLOADS_PER_HOUR`` images and ``VITSCOPE_CLIENT_UPLOAD_BYTES_PER_HOUR`` bytes per hour
    (429 with ``Retry-After`` beyond). In class mode only the example gallery's images are accepted (403).
    """
    limit = images.settings.max_upload_bytes
    data = await file.read(limit + 1)
    await file.close()
    if len(data) > limit:
        raise PayloadTooLarge(f"the upload is over {limit:,} bytes; at most {limit:,} bytes are allowed")
    image_id, meta = await images.upload(data)
    body = {
        "id": image_id,
        "width": meta.width,
        "height": meta.height,
        "format": meta.format,
        "animated": meta.animated,
        "bytes": meta.bytes,
    }
    return render.json_object_view(body).as_response(201, {"Location": f"/api/v1/images/{image_id}"})


@router.get(
    "/{image_id}",
    responses={
        200: {
            "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The bytes",
        },
        **errors(404, 422),
    },
    response_class=Response,
    summary="The uploaded image, byte for byte",
)
async def get_image(images: ImagesDep, image_id: ImageId) -> Response:
    data, meta = await images.read(image_id)
    return Response(data, media_type=meta.media_type, headers=_IMMUTABLE)


@router.get(
    "/{image_id}/metrics",
    responses=errors(400, 404, 409, 422, 503, 504),
    summary="The per-model metrics.json object of one image",
)
async def image_metrics(
    views: ViewsDep, models: ModelsDep, image_id: ImageId, model: ModelParam = None
) -> Response:
    """Exactly the object ``vitscope analyze`` writes as ``metrics.json`` for one image: mean attention
    distance (A2), NMI (A3), attention entropy, relative log amplitude (A4) and movement coherence (A6)
    per layer, with per-head values."""
    view = await views.get(MetricsView(), image_id, model or models.default_model)
    return view.as_response()


@router.get(
    "/{image_id}/attention",
    response_model=AttentionOut,
    responses={200: {"content": _MAP_CONTENT}, **errors(400, 404, 409, 422, 503, 504)},
    summary="Attention map of one query (A1), per head, mean, all heads, or rollout",
)
async def attention(
    views: ViewsDep,
    models: ModelsDep,
    image_id: ImageId,
    model: ModelParam = None,
    layer: Annotated[int, Query(ge=1, le=MAX_LAYER, description="1-based block")] = 1,
    head: Annotated[
        str, Query(pattern=HEAD_PATTERN, description="Head index (0-based), 'mean' or 'all'")
    ] = "mean",
    query: Annotated[
        str, Query(pattern=QUERY_PATTERN, description="Row-major patch index (0-based) or 'cls'")
    ] = "cls",
    rollout: Annotated[
        bool, Query(description="Attention rollout through this block (heads fused by mean)")
    ] = False,
    format: Format = "json",
    scale: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_PNG_SCALE,
            description="format=png: enlarge by this factor, nearest neighbour (at most 4096 px a side)",
        ),
    ] = 1,
) -> Response:
    """The query's row of the attention probabilities over the patch tokens, prefix dropped and renormalized
    to sum 1 (ANALYSES.md A1), as an ``H x W`` map. ``format=png`` draws it over the image as the model sees
    it (resized, centre-cropped), the query patch outlined, ``scale`` times larger by nearest neighbour (a
    32 px model's map is otherwise 32 px wide); ``format=npy`` gives the float32 array."""
    params = AttentionView.parse(layer, head, query, rollout, format, scale)
    view = await views.get(params, image_id, model or models.default_model)
    return view.as_response()


@router.get(
    "/{image_id}/spectrum",
    response_model=SpectrumOut,
    responses={200: {"content": _MAP_CONTENT}, **errors(400, 404, 409, 422, 503, 504)},
    summary="2D shifted log-amplitude spectrum of the tokens at one depth (A4)",
)
async def spectrum(
    views: ViewsDep,
    models: ModelsDep,
    image_id: ImageId,
    model: ModelParam = None,
    state: Annotated[
        str, Query(pattern="^(out|attn)$", description="'out': block output; 'attn': after attention")
    ] = "out",
    depth: Annotated[
        int, Query(ge=0, le=MAX_LAYER, description="0..L for out (0 = embedding), 1..L for attn")
    ] = 0,
    format: Format = "json",
) -> Response:
    """``log(|fft2| + 1e-6)`` of the patch tokens, averaged over channels, zero frequency at the centre
    (ANALYSES.md A4 step 5), with the half-diagonal ``delta``, each bin's ``frequencies`` (radians per patch)
    and the paper's scalar."""
    params = SpectrumView.parse(state, depth, format)
    view = await views.get(params, image_id, model or models.default_model)
    return view.as_response()
