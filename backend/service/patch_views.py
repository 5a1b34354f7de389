"""Patch-token views of one image: the cosine-similarity map of one patch and PCA of the tokens to RGB.

Both read the cached ``x_out`` patch tokens of one depth (float16, ``tokens_key``; a capture when missing) and
are cheap to recompute, so they are not cached as rendered views. The PCA fitted on a whole set is
``SetAnalyses.pca``; both PCA views share the parameters and the payload defined here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.cache import keys as K
from backend.errors import BadRequest
from backend.service import render
from backend.service.bundle import ModelInfo
from backend.service.hot import View
from backend.service.views import ViewService

if TYPE_CHECKING:
    from backend.analysis.patches import PcaRgb

FOREGROUND_RULE = (
    "foreground: the first principal component's score (fitted on all patches, its largest-magnitude score "
    "positive) above threshold x the scores' std; the PCA is then fitted on those patches, the others are 0"
)


def check_layer(info: ModelInfo, layer: int) -> None:
    if not 0 <= layer <= info.layers:
        raise BadRequest(
            f"layer {layer} is out of range: model {info.id} has {info.layers} blocks; "
            f"use 0..{info.layers} (the output of block K; 0 = the embedding)"
        )


THRESHOLD_STEP = 0.05  # the foreground threshold's grid: a bounded number of distinct jobs and cache entries


def foreground_threshold(mask: bool, threshold: float | None) -> float | None:
    """A PCA view's foreground parameters, parsed once: the threshold of ``foreground_mask`` (0 when only
    ``mask`` is given) on its grid of ``THRESHOLD_STEP`` (every other float would be a job and a cache entry
    of its own), or None without the mask."""
    if not mask:
        if threshold is not None:
            raise BadRequest(
                "threshold applies to the foreground mask only: add mask=true, or drop threshold"
            )
        return None
    if threshold is None:
        return 0.0
    steps = round(float(threshold) / THRESHOLD_STEP)
    if abs(float(threshold) / THRESHOLD_STEP - steps) > 1e-6:
        raise BadRequest(
            f"threshold {threshold!r} is not a multiple of {THRESHOLD_STEP}: use one in [-3, 3], "
            "e.g. 0, 0.5 or 1"
        )
    return round(steps * THRESHOLD_STEP, 2) + 0.0  # + 0.0: -0.0 is 0.0, one key


def pca_payload(grid: tuple[int, int], results: Sequence[PcaRgb], threshold: float | None) -> dict[str, Any]:
    """The PCA part of a view: each image's ``rgb`` (H x W x 3) and ``foreground`` (H x W, or None), their
    shared ``explained``, and ``mask`` (the rule, its threshold and the share of patches it kept)."""
    import torch

    rgb = [r.rgb.reshape(*grid, 3).tolist() for r in results]
    if threshold is None:
        return {"mask": None, "rgb": rgb, "foreground": None, "explained": results[0].explained.tolist()}
    masks = [r.foreground for r in results if r.foreground is not None]
    kept = float(torch.cat(masks).double().mean())
    return {
        "mask": {"threshold": threshold, "kept": kept, "rule": FOREGROUND_RULE},
        "rgb": rgb,
        "foreground": [m.reshape(grid).tolist() for m in masks],
        "explained": results[0].explained.tolist(),
    }


class PatchViews:
    """``GET /images/{id}/similarity`` and ``GET /images/{id}/pca`` on top of a ViewService."""

    def __init__(self, views: ViewService) -> None:
        self.views = views

    async def _tokens(self, image_id: str, model_id: str, layer: int) -> tuple[ModelInfo, np.ndarray]:
        await self.views.images.meta(image_id)
        info = await self.views.models.info(model_id)
        check_layer(info, layer)
        key = K.tokens_key(*info.addr(image_id), "out", layer)
        arr = await self.views.captures.array(key, image_id, info, lambda b: b.tokens[layer])
        return info, np.asarray(arr, dtype=np.float32)

    def _head(self, image_id: str, info: ModelInfo, layer: int) -> dict[str, Any]:
        return {"image": image_id, "model": info.id, "grid": list(info.grid), "layer": layer, "state": "out"}

    async def similarity(
        self, image_id: str, model_id: str, layer: int, query: int, centred: bool = False
    ) -> View:
        import torch

        from backend.analysis.patches import patch_similarity

        info, tokens = await self._tokens(image_id, model_id, layer)
        if not 0 <= query < info.num_patches:
            raise BadRequest(
                f"query {query} is out of range: the {info.grid[0]}x{info.grid[1]} grid of model {info.id} "
                f"has {info.num_patches} patches; use a row-major patch index 0..{info.num_patches - 1}"
            )
        sim = patch_similarity(torch.from_numpy(tokens), query, centred=centred).reshape(info.grid)
        return render.json_object_view(
            {**self._head(image_id, info, layer), "query": query, "centred": centred, "map": sim.tolist()}
        )

    async def pca(self, image_id: str, model_id: str, layer: int, threshold: float | None) -> View:
        """Fitted on the image's own patches; ``threshold``: the foreground mask's (None: no mask)."""
        import torch

        from backend.analysis.patches import pca_rgb

        info, tokens = await self._tokens(image_id, model_id, layer)
        # two SVDs with the mask: 0.5 s at 1369 x 1024 tokens, off the event loop as the set's PCA
        res = await asyncio.to_thread(pca_rgb, torch.from_numpy(tokens), threshold)
        one = pca_payload(info.grid, [res], threshold)
        one.update(rgb=one["rgb"][0], foreground=None if threshold is None else one["foreground"][0])
        return render.json_object_view({**self._head(image_id, info, layer), "fit": "image", **one})
