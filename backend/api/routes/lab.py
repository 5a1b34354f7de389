"""Frequency lab: a low-passed, high-passed or band-noised copy of an image, stored as a new image id."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from backend.api.deps import ImageId, ImagesDep
from backend.api.schemas import errors
from backend.perturb import MAX_SIDE, MIN_SIDE, Perturbation
from backend.service import lab, render

router = APIRouter(prefix="/images", tags=["images"])


class PerturbIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["low_pass", "high_pass", "band_noise"]
    side: int = Field(
        224, description=f"Shorter side (px, {MIN_SIDE}..{MAX_SIDE}) the image is resized to first"
    )
    cutoff: float | None = Field(
        None, description="low_pass / high_pass: radians per pixel, 0..pi (default 1)"
    )
    freq: float | None = Field(None, description="band_noise: the ring's centre, radians per pixel, 0..pi")
    half_width: float | None = Field(
        None, description="band_noise: the ring's half-width (default 0.2, A8's)"
    )
    eps: float | None = Field(
        None, description="band_noise: amplitude in pixel units, over 0 .. 1 (default 0.1)"
    )
    seed: int | None = Field(None, description="band_noise: noise seed (default 0)")


@router.post(
    "/{image_id}/perturb",
    status_code=201,
    responses=errors(400, 403, 404, 413, 422),
    summary="A low-passed, high-passed or band-noised copy of the image, stored as a new image",
)
async def perturb(images: ImagesDep, image_id: ImageId, body: PerturbIn) -> Response:
    """The image resized so its shorter side is ``side`` px, filtered with the A8 ring filter (frequencies in
    radians per pixel of that size), clipped to [0, 1] and stored as a PNG through the upload path. The answer
    is the new image's upload record with ``source``, the canonical ``perturbation`` and ``clipped`` (share of
    pixel values clipped)."""
    p = Perturbation.parse(body.kind, body.side, body.cutoff, body.freq, body.half_width, body.eps, body.seed)
    record = await lab.perturb(images, image_id, p)
    location = {"Location": f"/api/v1/images/{record['id']}"}
    return render.json_object_view(record).as_response(201, location)
