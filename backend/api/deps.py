"""``Annotated`` dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from backend.api.metrics import ApiMetrics
from backend.api.schemas import IMAGE_ID
from backend.config import Settings
from backend.service.analysis import AnalysisService


async def get_service(request: Request) -> AnalysisService:
    return request.app.state.service


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


ServiceDep = Annotated[AnalysisService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]

ImageId = Annotated[
    str,
    Path(
        pattern=IMAGE_ID,
        description="sha256 hex of the uploaded bytes (from POST /images)",
        examples=["3f8a1c0d9b2e4f6a7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"],
    ),
]
SetId = Annotated[str, Path(pattern=IMAGE_ID, description="Set id from POST /sets")]
ModelParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=80,
        description="Model id (GET /models); default: the server's first default model",
        examples=["random-vit-s16"],
    ),
]
Format = Annotated[str, Query(pattern="^(json|png|npy)$", description="json | png (over the image) | npy")]
