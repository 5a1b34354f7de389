"""Frequency lab: ``POST /images/{id}/perturb`` makes a perturbed copy of an image and stores it
through the images service's upload path (its size limit, class mode and the folder's byte bound apply), so
from then on it is an ordinary image id every view reads."""

from __future__ import annotations

import asyncio
from typing import Any

from backend.perturb import Perturbation, perturb_image
from backend.service.images import ImageService, decode_cost


async def perturb(images: ImageService, image_id: str, p: Perturbation) -> dict[str, Any]:
    """The new image's upload record, with its source, the canonical perturbation and the clipped share."""
    from backend.uploads import decode_image

    data, meta = await images.read(image_id)
    async with images.decode_budget.hold(decode_cost(meta.width, meta.height)):

        def run() -> Any:
            decoded = decode_image(data, max_bytes=max(len(data), 1))
            return perturb_image(decoded.image, p)

        out = await asyncio.to_thread(run)
    new_id, new_meta = await images.upload(out.png)
    return {
        "id": new_id,
        "width": new_meta.width,
        "height": new_meta.height,
        "format": new_meta.format,
        "animated": new_meta.animated,
        "bytes": new_meta.bytes,
        "source": image_id,
        "perturbation": p.as_dict(),
        "clipped": out.clipped,
    }
