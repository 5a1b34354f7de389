"""Patch-token views of one image: the cosine-similarity map of one patch and PCA of the tokens to RGB.

Both read the cached ``x_out`` patch tokens of one depth (float16, ``tokens_key``; a capture when missing) and
are cheap to recompute, so they are not cached as rendered views.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backend.cache import keys as K
from backend.errors import BadRequest
from backend.service import render
from backend.service.bundle import ModelInfo
from backend.service.hot import View
from backend.service.views import ViewService


class PatchViews:
    """``GET /images/{id}/similarity`` and ``GET /images/{id}/pca`` on top of a ViewService."""

    def __init__(self, views: ViewService) -> None:
        self.views = views

    async def _tokens(self, image_id: str, model_id: str, layer: int) -> tuple[ModelInfo, np.ndarray]:
        await self.views.images.meta(image_id)
        info = await self.views.models.info(model_id)
        if not 0 <= layer <= info.layers:
            raise BadRequest(
                f"layer {layer} is out of range: model {info.id} has {info.layers} blocks; "
                f"use 0..{info.layers} (the output of block K; 0 = the embedding)"
            )
        key = K.tokens_key(*info.addr(image_id), "out", layer)
        arr = await self.views.captures.array(key, image_id, info, lambda b: b.tokens[layer])
        return info, np.asarray(arr, dtype=np.float32)

    def _head(self, image_id: str, info: ModelInfo, layer: int) -> dict[str, Any]:
        return {"image": image_id, "model": info.id, "grid": list(info.grid), "layer": layer, "state": "out"}

    async def similarity(self, image_id: str, model_id: str, layer: int, query: int) -> View:
        import torch

        from backend.analysis.patches import patch_similarity

        info, tokens = await self._tokens(image_id, model_id, layer)
        if not 0 <= query < info.num_patches:
            raise BadRequest(
                f"query {query} is out of range: the {info.grid[0]}x{info.grid[1]} grid of model {info.id} "
                f"has {info.num_patches} patches; use a row-major patch index 0..{info.num_patches - 1}"
            )
        sim = patch_similarity(torch.from_numpy(tokens), query).reshape(info.grid)
        return render.json_object_view(
            {**self._head(image_id, info, layer), "query": query, "map": sim.tolist()}
        )

    async def pca(self, image_id: str, model_id: str, layer: int) -> View:
        import torch

        from backend.analysis.patches import pca_rgb

        info, tokens = await self._tokens(image_id, model_id, layer)
        res = pca_rgb(torch.from_numpy(tokens))
        rgb = res.rgb.reshape(*info.grid, 3)
        payload = {**self._head(image_id, info, layer), "fit": "image", "rgb": rgb.tolist()}
        return render.json_object_view({**payload, "explained": res.explained.tolist()})
