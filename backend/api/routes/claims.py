"""``GET /claims``: the paper's CL / MIM claims checked on an image or a set, with the numbers behind them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from backend.api.deps import ServiceDep
from backend.api.schemas import IMAGE_ID, errors
from backend.errors import BadRequest
from backend.service import render
from backend.service.claims import check_claims

router = APIRouter(tags=["claims"])

ModelRole = Annotated[str, Query(min_length=1, max_length=80, description="Model id (GET /models)")]
OptionalId = Annotated[str | None, Query(pattern=IMAGE_ID)]


class ClaimImage(BaseModel):
    held: bool
    values: dict[str, float] = Field(description="role -> this image's statistic")


class ClaimOut(BaseModel):
    id: str = Field(description="distance | nmi | fourier | hybrid")
    statement: str = Field(description="The paper's claim in words")
    held: bool = Field(description="On the set means (for one image: on that image)")
    values: dict[str, float] = Field(description="role (cl, mim, hybrid) -> the statistic, mean over images")
    models: dict[str, str]
    metric: str = Field(examples=["mean attention distance"])
    unit: str = Field(description="px, relative (distance / uniform-attention distance) or empty")
    where: str = Field(description="The blocks or depths averaged", examples=["blocks 7-12"])
    images: int
    images_held: int
    summary: str = Field(
        examples=["holds on the mean (NMI, blocks 7-12: CL 0.032, MIM 0.084); holds on 14 of 16 images"]
    )
    per_image: list[ClaimImage] = Field(description="In the order of image_ids")


class ClaimsOut(BaseModel):
    image: str | None = Field(description="The image checked (null for a set)")
    set: str | None = Field(description="The set checked (null for one image)")
    image_ids: list[str]
    models: dict[str, str] = Field(examples=[{"cl": "cifar-cl-vit-t4", "mim": "cifar-mim-vit-t4"}])
    preprocessing: dict[str, dict[str, Any]] = Field(description="Each model's preprocessing record")
    all_held: bool
    held: int
    total: int
    images: int
    distance_scale: str = Field(description="px when every grid and patch size agree, else relative")
    claims: list[ClaimOut]


@router.get(
    "/claims",
    response_model=ClaimsOut,
    responses=errors(400, 404, 409, 422, 503, 504),
    summary="Does it reproduce the paper? The CL / MIM claims on an image or a set, with the numbers",
)
async def claims(
    service: ServiceDep,
    cl: ModelRole,
    mim: ModelRole,
    hybrid: Annotated[str | None, Query(min_length=1, max_length=80, description="Hybrid model id")] = None,
    image: Annotated[OptionalId, Query(description="An uploaded image id")] = None,
    set: Annotated[OptionalId, Query(description="A set id (POST /sets)")] = None,
) -> Response:
    """Later-half attention distance CL > MIM; later-half NMI CL < MIM; delta log amplitude MIM > CL over
    depths 1..L; with ``hybrid``, its later-half distance between CL's and MIM's. Each claim is decided on the
    means over the images (``held``) and on every image (``images_held`` of ``images``). Distances are in px
    when the models share grid and patch size, else relative to the uniform-attention distance. Give exactly
    one of ``image`` and ``set``; the per-image metrics are the cached ones of ``/images/{id}/metrics``."""
    roles = {"cl": cl, "mim": mim} | ({"hybrid": hybrid} if hybrid else {})
    if image is not None and set is None:
        image_ids = [image]
    elif set is not None and image is None:
        image_ids = await service.sets.members(set)
    else:
        raise BadRequest("give exactly one of image (an uploaded image id) and set (a set id)")
    body = await check_claims(service, roles, image_ids, set_id=set)
    return render.json_object_view(body).as_response()
