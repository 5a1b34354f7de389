"""The paper's claims for an image or a set, from the per-image metrics the service caches.

Each image's metrics object is the one ``GET /images/{id}/metrics`` answers (one capture per image and model,
stored), so a claims check after the curves costs no forward pass. The evaluation itself is
``backend.analysis.claims``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from backend.analysis.claims import ModelValues, claims_report, evaluate_claims
from backend.errors import BadRequest
from backend.service.core import AnalysisService

ROLES = ("cl", "mim", "hybrid")


async def check_claims(
    service: AnalysisService, roles: dict[str, str], image_ids: list[str], set_id: str | None = None
) -> dict[str, Any]:
    """``roles``: ``{"cl": id, "mim": id[, "hybrid": id]}``; every image's metrics with every model."""
    if not image_ids:
        raise BadRequest("a claims check needs at least one image")
    for image_id in image_ids:
        await service.images.meta(image_id)  # 404 for an unknown image, before any model loads
    infos = {role: await service.models.info(model_id) for role, model_id in roles.items()}
    sem = asyncio.Semaphore(max(1, service.settings.max_batch))

    async def one(image_id: str, role: str) -> dict[str, Any]:
        async with sem:
            return await service.captures.metrics(image_id, infos[role])

    values = {}
    for role in roles:
        objects = await asyncio.gather(*(one(i, role) for i in image_ids))
        values[role] = ModelValues.from_metrics([o | {"num_images": 1} for o in objects])
    claims = evaluate_claims(values["cl"], values["mim"], values.get("hybrid"))
    report = claims_report(claims)
    return {
        "image": image_ids[0] if set_id is None else None,
        "set": set_id,
        "image_ids": image_ids,
        "models": dict(roles),
        "preprocessing": {info.id: info.preprocessing for info in infos.values()},
        **report,
    }
