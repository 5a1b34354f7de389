"""The token-norm view of one image (``GET /images/{id}/token_norms``): each patch token's L2 norm at one
depth of ``x_out`` as an ``H x W`` map, the image's median patch norm, the high-norm outliers (above
``OUTLIER_FACTOR`` x the median: the rule of ``metrics.json``'s ``token_norm``) and the prefix tokens' norms
(CLS, registers), each labelled.

The patch norms read the cached float16 ``x_out`` patch tokens (``tokens_key``, as ``/similarity`` and
``/pca``). Those have no prefix, so the prefix tokens' norms of every depth are one small array of their own
(``prefix_norms_key``, ``(L + 1, P)`` float32), from a capture when it is missing; models without a prefix
need none. Cheap to recompute from there, so the rendered view is not cached.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.cache import decode_array, encode_array
from backend.cache import keys as K
from backend.errors import BadRequest
from backend.service import render
from backend.service.bundle import ModelInfo, per_batch
from backend.service.hot import View
from backend.service.views import MAX_LAYER, ViewService

if TYPE_CHECKING:
    from backend.capture import Trace


@dataclass(frozen=True)
class TokenNormsView:
    """The norms of the output of block ``layer`` (0 = the embedding)."""

    layer: int = 0

    @classmethod
    def parse(cls, layer: int) -> TokenNormsView:
        """Syntax only (the model's depth comes in ``check``)."""
        if not 0 <= layer <= MAX_LAYER:
            raise BadRequest(f"layer {layer} is out of range: use 0..{MAX_LAYER} (and at most the model's)")
        return cls(layer)

    def check(self, info: ModelInfo) -> None:
        if not 0 <= self.layer <= info.layers:
            raise BadRequest(
                f"layer {self.layer} is out of range: model {info.id} has {info.layers} blocks; "
                f"use 0..{info.layers} (the output of block K; 0 = the embedding)"
            )


def prefix_labels(num_prefix: int, has_cls: bool) -> list[str]:
    """The prefix tokens in order: ``cls`` (if token 0 is one), then ``register 1``, ``register 2``..."""
    first = ["cls"] if has_cls and num_prefix > 0 else []
    return first + [f"register {i}" for i in range(1, num_prefix - len(first) + 1)]


def prefix_norms(trace: Trace) -> list[np.ndarray]:
    """Per image of a captured batch, ``(L + 1, P)`` float32: the prefix tokens' norms at every depth. The
    tokens are rounded to float16 first, as the cached patch tokens are: both norms read the same numbers."""
    import torch

    from backend.analysis.patches import token_l2

    p = trace.num_prefix_tokens
    norms = torch.stack([token_l2(x[:, :p].to(torch.float16)) for x in trace.x_out], 1)  # (B, L + 1, P)
    return list(norms.float().cpu().numpy())


class TokenNorms:
    """``GET /images/{id}/token_norms`` on top of a ViewService (its store, captures, images and models)."""

    def __init__(self, views: ViewService) -> None:
        self.views = views

    async def _patch_tokens(self, image_id: str, info: ModelInfo, layer: int) -> np.ndarray:
        key = K.tokens_key(*info.addr(image_id), "out", layer)
        arr = await self.views.captures.array(key, image_id, info, lambda b: b.tokens[layer])
        return np.asarray(arr, dtype=np.float32)  # (Np, C)

    async def _prefix_norms(self, image_id: str, info: ModelInfo) -> np.ndarray:
        """``(L + 1, P)``: stored, else one capture (shared by concurrent requests), then stored."""
        if info.num_prefix == 0:
            return np.zeros((info.layers + 1, 0), dtype=np.float32)
        key = K.prefix_norms_key(*info.addr(image_id))
        captures, store = self.views.captures, self.views.store

        async def compute() -> np.ndarray:
            data = await store.get(key)
            if data is not None:
                try:
                    return decode_array(data)
                except ValueError:
                    pass  # corrupt: capture again
            found: np.ndarray = await captures.run(image_id, info, per_batch("prefix-norms", prefix_norms))
            await store.set(key, encode_array(found, dtype="float32", compress=False))
            return found

        return await captures.flight.run(key, compute)

    async def get(self, view: TokenNormsView, image_id: str, model_id: str) -> View:
        import torch

        from backend.analysis.patches import norm_map
        from backend.analysis.representation import OUTLIER_FACTOR, TOKEN_NORM_STATS, token_norms

        await self.views.images.meta(image_id)
        info = await self.views.models.info(model_id)
        view.check(info)
        tokens, prefix = await asyncio.gather(
            self._patch_tokens(image_id, info, view.layer), self._prefix_norms(image_id, info)
        )
        z = torch.from_numpy(tokens)
        res = norm_map(z, OUTLIER_FACTOR)
        stats = token_norms([z[None]], 0, OUTLIER_FACTOR)[:, 0, 0]  # (4,): mean, p99, max, outlier share
        labels = prefix_labels(info.num_prefix, info.has_cls)
        payload: dict[str, Any] = {
            "image": image_id,
            "model": info.id,
            "grid": list(info.grid),
            "layer": view.layer,
            "state": "out",
            "has_cls_token": info.has_cls,
            "num_prefix_tokens": info.num_prefix,
            "median": float(res.median),
            "outlier_factor": OUTLIER_FACTOR,
            "outliers": torch.nonzero(res.outliers).flatten().tolist(),
            "stats": {name: float(v) for name, v in zip(TOKEN_NORM_STATS, stats, strict=True)},
            "prefix": [
                {"token": i, "label": label, "norm": float(prefix[view.layer, i])}
                for i, label in enumerate(labels)
            ],
            "map": res.norms.reshape(info.grid).tolist(),
        }
        return render.json_object_view(payload)
