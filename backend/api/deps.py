"""``Annotated`` dependencies of the routes: one per resource of the service, and the path and query types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from backend.api.metrics import ApiMetrics
from backend.api.schemas import IMAGE_ID
from backend.config import Settings
from backend.service.core import AnalysisService
from backend.service.images import ImageService
from backend.service.jobs import JobManager
from backend.service.models import ModelService
from backend.service.sets import SetService
from backend.service.views import FORMAT_PATTERN, ViewService


def _service(request: Request) -> AnalysisService:
    service: AnalysisService = request.app.state.service
    return service


async def get_service(request: Request) -> AnalysisService:
    return _service(request)


async def get_images(request: Request) -> ImageService:
    return _service(request).images


async def get_models(request: Request) -> ModelService:
    return _service(request).models


async def get_views(request: Request) -> ViewService:
    return _service(request).views


async def get_sets(request: Request) -> SetService:
    return _service(request).sets


async def get_jobs(request: Request) -> JobManager:
    return _service(request).jobs


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


ServiceDep = Annotated[AnalysisService, Depends(get_service)]
ImagesDep = Annotated[ImageService, Depends(get_images)]
ModelsDep = Annotated[ModelService, Depends(get_models)]
ViewsDep = Annotated[ViewService, Depends(get_views)]
SetsDep = Annotated[SetService, Depends(get_sets)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
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
Format = Annotated[str, Query(pattern=FORMAT_PATTERN, description="json | png (over the image) | npy")]
