"""The paper's published curves, for overlays: ``GET /reference`` (static package data, no model runs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from backend.api.schemas import errors
from backend.errors import BadRequest
from backend.reference import paper_reference, reference_families, reference_metrics
from backend.service import render

router = APIRouter(tags=["reference"])


class ReferenceSeries(BaseModel):
    id: str = Field(examples=["mocov3-b16.attention_distance"])
    model: str = Field(examples=["MoCo v3 ViT-B/16 (CL)"])
    family: str = Field(description="cl | mim")
    metric: str = Field(description="attention_distance | nmi | delta_log_amplitude | linear_probe_top1")
    unit: str = Field(description="px, % or empty")
    x: str = Field(description="block (1-based) or depth (0 = the embedding)")
    x_values: list[int]
    values: list[float]
    values_relative: list[float] | None = Field(
        default=None,
        description="attention_distance only: values / the 14 x 14 grid's uniform-attention distance",
    )
    source: str = Field(description="The figure or notebook output the values were read from")


class ReferenceOut(BaseModel):
    about: str = Field(description="What the curves are, their setting and the digitization error")
    grid: list[int] = Field(examples=[[14, 14]])
    patch_size: int = Field(examples=[16])
    input_size: int = Field(examples=[224])
    uniform_attention_distance: float = Field(
        description="A2 of uniform attention on the paper's grid, px (the relative scale's 1)",
        examples=[116.4922],
    )
    series: list[ReferenceSeries]
    not_available: str = Field(description="What the paper does not publish as numbers")


def _check(name: str, value: str | None, allowed: list[str]) -> None:
    if value is not None and value not in allowed:
        raise BadRequest(f"{name} {value!r} has no reference series; use one of {', '.join(allowed)}")


@router.get(
    "/reference",
    response_model=ReferenceOut,
    responses=errors(400, 422),
    summary="The paper's published curves (ViT-B/16, ImageNet), digitized, with the source of each series",
)
async def reference(
    metric: Annotated[str | None, Query(description="Only this metric's series", max_length=40)] = None,
    family: Annotated[
        str | None, Query(description="Only this family's series (cl, mim)", max_length=20)
    ] = None,
) -> Response:
    """Park et al.'s curves for MoCo v3 (CL) and SimMIM (MIM) ViT-B/16 at 224 px: attention distance, NMI,
    delta log amplitude and linear probe per block, and MAE's encoder and decoder. Attention-distance series
    also carry ``values_relative`` for drawing next to models with other grids."""
    _check("metric", metric, reference_metrics())
    _check("family", family, reference_families())
    body: dict[str, Any] = paper_reference(metric, family)
    return render.json_object_view(body).as_response()
