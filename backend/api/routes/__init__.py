"""One module per resource; ``api_router`` gathers them under ``/api/v1``."""

from fastapi import APIRouter

from backend.api.routes import (
    claims,
    health,
    images,
    jobs,
    lab,
    models,
    patch_views,
    reference,
    set_analyses,
    sets,
    token_norms,
)

api_router = APIRouter(prefix="/api/v1")
for module in (
    health,
    models,
    images,
    patch_views,
    token_norms,
    lab,
    sets,
    set_analyses,
    jobs,
    reference,
    claims,
):
    api_router.include_router(module.router)

__all__ = ["api_router"]
