"""Set-level analyses computed as jobs like the set metrics: linear CKA between two models on a set (with its
permutation null), and the patch-token PCA fitted on the whole set (optionally on its foreground patches).

They need the representations of the whole set at once, so they cannot come from per-image metrics: they
read the cached ``x_out`` patch tokens (float16, ``tokens_key``; a capture when they are missing) image by
image. (The positional share, also set-level, is part of the set metrics.)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np

from backend.cache import keys as K
from backend.errors import BadRequest
from backend.service import render
from backend.service.bundle import ModelInfo
from backend.service.hot import View
from backend.service.jobs import Job
from backend.service.patch_views import check_layer, pca_payload
from backend.service.sets import SetService


def cka_view_key(set_id: str, a: ModelInfo, b: ModelInfo) -> str:
    """The rendered CKA of two models on a set (model b's address as extra parts)."""
    prep_b = json.dumps(b.preprocessing, sort_keys=True)
    return K.make_key("view-set-cka", set_id, a.id, a.digest, a.preprocessing, b.id, b.digest, prep_b)


class SetAnalyses:
    """``GET /sets/{id}/cka`` and ``GET /sets/{id}/pca`` on top of a SetService (its members, captures,
    cache, jobs and wait)."""

    def __init__(self, sets: SetService) -> None:
        self.sets = sets

    async def _members(self, set_id: str, what: str) -> list[str]:
        members = await self.sets.members(set_id)
        if len(members) < 2:
            raise BadRequest(f"{what} needs a set of 2 or more images, this set has {len(members)}")
        return members

    async def _tokens(self, info: ModelInfo, image_id: str, depth: int) -> np.ndarray:
        key = K.tokens_key(*info.addr(image_id), "out", depth)
        arr = await self.sets.captures.array(key, image_id, info, lambda b: b.tokens[depth])
        return np.asarray(arr, dtype=np.float64)  # (Np, C)

    async def _image_means(self, info: ModelInfo, members: list[str], job: Job) -> np.ndarray:
        """``(L + 1, N, C)``: each image's mean patch token at every depth."""
        sem = asyncio.Semaphore(max(1, self.sets.settings.max_batch))

        async def one(iid: str) -> np.ndarray:
            async with sem:
                means = [(await self._tokens(info, iid, d)).mean(0) for d in range(info.layers + 1)]
            job.advance()
            return np.stack(means)

        return np.stack(await asyncio.gather(*(one(i) for i in members)), axis=1)

    async def cka(self, set_id: str, model_a: str, model_b: str) -> View | Job:
        members = await self._members(set_id, "CKA")
        a, b = await self.sets.models.info(model_a), await self.sets.models.info(model_b)
        hot_key = ("set-cka", set_id, a.id, a.digest, b.id, b.digest)
        skey = cka_view_key(set_id, a, b)
        found = await self.sets._cached(hot_key, skey)
        if found is not None:
            return found

        async def work(job: Job) -> View:
            import torch

            from backend.analysis.cka import cka_payload, cka_with_null

            x = await self._image_means(a, members, job)
            y = x if b.id == a.id and b.digest == a.digest else await self._image_means(b, members, job)
            res = await asyncio.to_thread(cka_with_null, torch.from_numpy(x), torch.from_numpy(y))
            payload: dict[str, Any] = {
                "set": set_id,
                "images": members,
                "model_a": a.id,
                "model_b": b.id,
                **cka_payload(res),
            }
            view = render.json_object_view(payload)
            await self.sets.store.set(skey, view.body)
            self.sets.hot.put(hot_key, view)
            return view

        same = a.id == b.id and a.digest == b.digest
        job = self.sets.jobs.ensure(
            hot_key,
            "set-cka",
            f"CKA of set {set_id[:12]}: {a.id} vs {b.id}",
            work,
            result_url=f"/api/v1/sets/{set_id}/cka?model_a={a.id}&model_b={b.id}",
            total=len(members) * (1 if same else 2),
        )
        return await self.sets._wait(job)

    async def pca(self, set_id: str, model_id: str, layer: int, threshold: float | None) -> View | Job:
        """One PCA of the patch tokens of every image of the set at ``layer`` (``pca_rgb_set``);
        ``threshold``: the foreground mask's (None: no mask). At most ``max_embedding_points`` tokens, like
        the embeddings."""
        members = await self.sets.members(set_id)
        info = await self.sets.models.info(model_id)
        check_layer(info, layer)
        self.sets.check_points(members, info)
        hot_key = ("set-pca", set_id, info.id, info.digest, layer, threshold)
        skey = K.set_pca_view_key(set_id, info.id, info.digest, info.preprocessing, layer, threshold)
        found = await self.sets._cached(hot_key, skey)
        if found is not None:
            return found

        async def work(job: Job) -> View:
            import torch

            from backend.analysis.patches import pca_rgb_set

            sem = asyncio.Semaphore(max(1, self.sets.settings.max_batch))

            async def one(iid: str) -> torch.Tensor:
                async with sem:
                    key = K.tokens_key(*info.addr(iid), "out", layer)
                    arr = await self.sets.captures.array(key, iid, info, lambda b: b.tokens[layer])
                job.advance()
                return torch.from_numpy(np.asarray(arr, dtype=np.float32))

            tokens = await asyncio.gather(*(one(i) for i in members))
            results = await asyncio.to_thread(pca_rgb_set, tokens, threshold)
            job.advance()
            payload = {
                "set": set_id,
                "images": members,
                "model": info.id,
                "grid": list(info.grid),
                "layer": layer,
                "state": "out",
                "fit": "set",
                **pca_payload(info.grid, results, threshold),
            }
            view = render.json_object_view(payload)
            await self.sets.store.set(skey, view.body)
            self.sets.hot.put(hot_key, view)
            return view

        mask = "" if threshold is None else f"&mask=true&threshold={threshold!r}"
        job = self.sets.jobs.ensure(
            hot_key,
            "set-pca",
            f"PCA of set {set_id[:12]}, {info.id} block {layer}" + (" (foreground)" if mask else ""),
            work,
            result_url=f"/api/v1/sets/{set_id}/pca?model={info.id}&layer={layer}{mask}",
            total=len(members) + 1,
        )
        return await self.sets._wait(job)
