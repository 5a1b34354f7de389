"""Sets of images: their definitions, set metrics and token embeddings (A5), computed as jobs.

A set is an ordered list of image ids, kept in ``<data_dir>/sets/<set id>.json`` (plus a memory index) and in
the cache (other replicas read it from there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.cache import Store, decode_json, encode_json
from backend.cache import keys as K
from backend.config import Settings
from backend.errors import BadRequest, NotFound
from backend.service import render
from backend.service.bundle import Captures, ModelInfo, image_metrics, per_batch
from backend.service.hot import HotCache, View
from backend.service.images import IMAGE_ID_RE, ImageService, atomic_write, sweep_partial
from backend.service.jobs import Job, JobManager
from backend.service.models import ModelService

if TYPE_CHECKING:
    from backend.capture import Trace

log = logging.getLogger(__name__)


class SetFolder:
    """Set definitions on disk, at most ``max_sets`` of them (least recently used out first), counted in the
    data folder's byte bound by the image folder (a companion of it); a bounded memory index of members.

    Thread-safe; every method does blocking file I/O.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_sets: int = 10_000,
        index_size: int = 1024,
        on_write: Callable[[], None] | None = None,
    ) -> None:
        self.root = Path(root) / "sets"
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_sets = max_sets
        self.index_size = index_size
        self._on_write = on_write
        self._lock = threading.Lock()
        self._index: OrderedDict[str, list[str]] = OrderedDict()  # members of recently used sets
        # id -> (last use, bytes) of every set on disk, least recently used first
        self._files: OrderedDict[str, tuple[float, int]] = OrderedDict()
        sweep_partial(self.root)
        found = []
        for path in self.root.glob("*.json"):
            with contextlib.suppress(OSError):
                if IMAGE_ID_RE.match(path.stem):
                    info = path.stat()
                    found.append((info.st_mtime, path.stem, info.st_size))
        for used, set_id, size in sorted(found):
            self._files[set_id] = (used, size)
        with self._lock:
            self._trim()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._files.values())

    def __len__(self) -> int:
        return len(self._files)

    def oldest(self) -> tuple[float, str] | None:
        with self._lock:
            for set_id, (used, _) in self._files.items():
                return used, set_id
            return None

    def remove(self, set_id: str) -> int:
        with self._lock:
            return self._remove(set_id)

    def _remove(self, set_id: str) -> int:
        self._index.pop(set_id, None)
        _, size = self._files.pop(set_id, (0.0, 0))
        with contextlib.suppress(OSError):
            (self.root / f"{set_id}.json").unlink()
        return size

    def _trim(self) -> None:
        while len(self._files) > self.max_sets:
            self._remove(next(iter(self._files)))
        while len(self._index) > self.index_size:
            self._index.popitem(last=False)

    def _used(self, set_id: str) -> None:
        entry = self._files.get(set_id)
        if entry is not None:
            self._files[set_id] = (time.time(), entry[1])
            self._files.move_to_end(set_id)

    def get(self, set_id: str) -> list[str] | None:
        with self._lock:
            members = self._index.get(set_id)
            if members is not None:
                self._index.move_to_end(set_id)
                self._used(set_id)
                return members
        path = self.root / f"{set_id}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if isinstance(data, list) and all(isinstance(v, str) for v in data):
            with self._lock:
                self._index[set_id] = data
                self._used(set_id)
                self._trim()
            return data
        log.warning("ignoring malformed set file %s", path)
        return None

    def put(self, set_id: str, members: list[str]) -> None:
        with self._lock:
            self._index[set_id] = list(members)
            path = self.root / f"{set_id}.json"
            if set_id in self._files and path.exists():
                self._used(set_id)
                self._trim()
                return
            data = json.dumps(members).encode()
            atomic_write(path, data)
            self._files[set_id] = (time.time(), len(data))
            self._trim()
        if self._on_write is not None:
            self._on_write()  # the data folder's byte bound (outside this lock: it calls oldest/remove)


class SetService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        hot: HotCache,
        jobs: JobManager,
        images: ImageService,
        models: ModelService,
        captures: Captures,
    ) -> None:
        self.settings = settings
        self.store = store
        self.hot = hot
        self.jobs = jobs
        self.images = images
        self.models = models
        self.captures = captures
        self.folder = SetFolder(settings.data_dir, max_sets=settings.max_sets, on_write=images.folder.enforce)
        images.folder.companions.append(self.folder)  # sets count in VITSCOPE_DATA_DIR_MAX_BYTES

    async def create(self, image_ids: list[str]) -> str:
        limit = self.settings.max_set_images
        if not image_ids:
            raise BadRequest(f"a set needs 1..{limit} image ids, got none")
        if len(image_ids) > limit:
            raise BadRequest(f"a set holds at most {limit} images (max_set_images), got {len(image_ids)}")
        for iid in image_ids:
            self.images.check_id(iid)
        missing = [iid for iid in image_ids if self.images.known(iid) is None]
        for iid in missing[:]:
            try:
                await self.images.meta(iid)
                missing.remove(iid)
            except NotFound:
                pass
        if missing:
            raise NotFound(
                f"unknown image ids: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; "
                "upload them first with POST /api/v1/images"
            )
        sid = K.set_id(image_ids)
        await asyncio.to_thread(self.folder.put, sid, image_ids)
        await self.store.set(K.set_key(sid), encode_json(image_ids))
        return sid

    async def members(self, set_id: str) -> list[str]:
        if not IMAGE_ID_RE.match(set_id):
            raise BadRequest(f"set id {set_id!r} is not 64 lowercase hex digits")
        members = self.folder.get(set_id)
        if members is None:
            data = await self.store.get(K.set_key(set_id))
            if data is not None:
                try:
                    obj = decode_json(data)
                    if isinstance(obj, list) and all(isinstance(v, str) for v in obj):
                        members = obj
                        await asyncio.to_thread(self.folder.put, set_id, members)
                except ValueError:
                    pass
        if members is None:
            raise NotFound(f"no set with id {set_id}: create it with POST /api/v1/sets")
        return members

    async def metrics(self, set_id: str, model_id: str) -> View | Job:
        members = await self.members(set_id)
        info = await self.models.info(model_id)
        hot_key = ("set-metrics", set_id, info.id, info.digest)
        skey = K.set_metrics_view_key(set_id, info.id, info.digest, info.preprocessing)
        found = await self._cached(hot_key, skey)
        if found is not None:
            return found

        async def work(job: Job) -> View:
            locks = self.captures.locks
            token = await locks.acquire(skey)
            if token is None:  # another process computes this set right now: wait for its answer
                if await locks.wait(skey, lambda: self._stored(skey)):
                    found = await self._cached(hot_key, skey)
                    if found is not None:
                        return found
                token = b""
            try:
                obj = await self._set_metrics(members, info, job)
                obj["set"] = set_id
                obj["images"] = members
                view = render.json_object_view(obj)
                await self.store.set(skey, view.body)
            finally:
                await locks.release(skey, token)
            self.hot.put(hot_key, view)
            return view

        url = f"/api/v1/sets/{set_id}/metrics?model={info.id}"
        job = self.jobs.ensure(
            hot_key,
            "set-metrics",
            f"metrics of set {set_id[:12]} with {info.id}",
            work,
            result_url=url,
            total=len(members),
        )
        return await self._wait(job)

    async def _set_metrics(self, members: list[str], info: ModelInfo, job: Job) -> dict[str, Any]:
        """``compute_metrics`` of the whole set, streamed through the runner in batches with bounded memory:
        each image's per-image values (small) are kept, the positional sums added up as images arrive; no
        maps are built or stored. Each image's own metrics object is stored on the way (its metrics view and
        the claims then need no capture)."""
        from backend.analysis.modern import ModernValues, summarize_modern
        from backend.analysis.representation import PositionSums
        from backend.analysis.summary import PerImage, summarize

        # Two batches in flight: the next one waits in the queue while the runner works on one.
        sem = asyncio.Semaphore(2 * max(1, self.settings.max_batch))
        work = per_batch("set-values", lambda trace: set_values(info, trace))
        values: list[ImageValues | None] = [None] * len(members)
        sums: list[PositionSums] = []

        async def one(index: int, iid: str) -> None:
            async with sem:
                found = await self.captures.run(iid, info, work)
            if found.positions is not None:  # add up at once, in place: one (L + 1, Np, C) sum for the set
                if not sums:
                    sums.append(PositionSums.zeros_like(found.positions))
                sums[0].accumulate(found.positions)
                found.positions = None
            values[index] = found
            await self.store.set(K.metrics_key(*info.addr(iid)), encode_json(found.metrics))
            job.advance()

        job.advance(0, len(members))
        await asyncio.gather(*(one(i, iid) for i, iid in enumerate(members)))
        done = [v for v in values if v is not None]
        obj = summarize(
            PerImage.concat([v.values for v in done]),
            model=info.id,
            family=info.family,
            preprocessing=info.preprocessing,
            grid=info.grid,
            patch_size=info.patch_size,
        )
        modern = ModernValues.concat([v.modern for v in done])
        obj.update(summarize_modern(replace(modern, positions=sums[0] if sums else None)))
        return obj

    async def embeddings(self, set_id: str, model_id: str, layer: int, method: str) -> View | Job:
        members = await self.members(set_id)
        info = await self.models.info(model_id)
        if not 0 <= layer <= info.layers:
            raise BadRequest(
                f"layer {layer} is out of range: model {info.id} has {info.layers} blocks; "
                f"use 0..{info.layers} "
                "(the output of block K; 0 = the embedding)"
            )
        if method not in ("pca", "tsne"):
            raise BadRequest(f"method {method!r} is not one of 'pca' or 'tsne'")
        self.check_points(members, info)
        hot_key = ("embeddings", set_id, info.id, info.digest, layer, method)
        skey = K.embeddings_view_key(set_id, info.id, info.digest, info.preprocessing, layer, method)
        found = await self._cached(hot_key, skey)
        if found is not None:
            return found

        async def work(job: Job) -> View:
            sem = asyncio.Semaphore(max(1, self.settings.max_batch))

            async def one(iid: str) -> np.ndarray:
                async with sem:
                    arr = await self.captures.array(
                        K.tokens_key(*info.addr(iid), "out", layer), iid, info, lambda b: b.tokens[layer]
                    )
                job.advance()
                return np.asarray(arr, dtype=np.float32)

            job.total = len(members) + 1
            tokens = await asyncio.gather(*(one(i) for i in members))
            coords = await asyncio.to_thread(_project, np.concatenate(tokens), method)
            spectra = await asyncio.to_thread(_singular_values, tokens)
            job.advance()
            n = info.num_patches
            payload = {
                "set": set_id,
                "model": info.id,
                "layer": layer,
                "state": "out",
                "method": method,
                "grid": list(info.grid),
                "images": members,
                "image_index": [i for i in range(len(members)) for _ in range(n)],
                "token_index": list(range(n)) * len(members),
                "singular_values_centred": False,
            }
            view = render.json_view(payload, {"coords": coords, **spectra})
            await self.store.set(skey, view.body)
            self.hot.put(hot_key, view)
            return view

        url = f"/api/v1/sets/{set_id}/embeddings?model={info.id}&layer={layer}&method={method}"
        job = self.jobs.ensure(
            hot_key,
            "embeddings",
            f"{method} of set {set_id[:12]}, {info.id} block {layer}",
            work,
            result_url=url,
            total=len(members) + 1,
        )
        return await self._wait(job)

    def check_points(self, members: list[str], info: ModelInfo) -> None:
        """A projection of all patch tokens of a set (embeddings, the set PCA) takes at most
        ``max_embedding_points`` tokens."""
        points = len(members) * info.num_patches
        if points > self.settings.max_embedding_points:
            raise BadRequest(
                f"{len(members)} images x {info.num_patches} patches = {points} points; at most "
                f"{self.settings.max_embedding_points} are allowed (max_embedding_points): use a smaller set"
            )

    async def _cached(self, hot_key: Hashable, skey: str) -> View | None:
        view = self.hot.get(hot_key)
        if view is not None:
            return view
        data = await self.store.get(skey)
        if data is not None:
            view = View(data, render.JSON)
            self.hot.put(hot_key, view)
            return view
        return None

    async def _stored(self, key: str) -> bool:
        return await self.store.get(key) is not None

    async def _wait(self, job: Job) -> View | Job:
        assert job.task is not None
        try:
            return await asyncio.wait_for(asyncio.shield(job.task), self.settings.set_wait_s)
        except TimeoutError:
            return job


@dataclass
class ImageValues:
    """One image's share of a set's metrics: its own metrics object, its per-image values and its sums."""

    metrics: dict[str, Any]
    values: Any  # summary.PerImage of this image (CPU, float64)
    modern: Any  # modern.ModernValues of this image (CPU, float64; positions None)
    positions: Any  # representation.PositionSums of this image, or None


def set_values(info: ModelInfo, trace: Trace) -> list[ImageValues]:
    """Runs on the runner's thread: the per-image values of every image of a batch, computed once over it."""
    from backend.analysis.modern import modern_values
    from backend.analysis.representation import PositionSums
    from backend.analysis.summary import per_image_values

    host, modern = per_image_values(trace).host(), modern_values(trace, positions=False).cpu()
    out = []
    for i, sums in enumerate(PositionSums.per_image(trace.x_out, trace.num_prefix_tokens)):
        values, mine = host.select(i), modern.select(i)
        positions = PositionSums(1, sums.total.cpu(), sums.square.cpu())
        out.append(ImageValues(image_metrics(info, values, mine), values, mine, positions))
    return out


def _singular_values(tokens: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A5's singular-value spectrum of each image's patch-token matrix (the cached tokens the projection
    stacks; raw, not centred, as A5 says), each divided by its own largest, then the mean of those curves over
    the images (per image first: ANALYSES.md 0); the raw largest kept per image."""
    import torch

    from backend.analysis import singular_values

    z = torch.from_numpy(np.ascontiguousarray(np.stack(tokens), dtype=np.float32))
    s = singular_values(z, num_prefix=0).double()  # the tokens come without their prefix
    largest = s[:, :1]
    # an all-zero token matrix has no direction: its curve is zeros, not 0 / 0
    normalized = torch.where(largest > 0, s / largest.clamp_min(torch.finfo(s.dtype).tiny), 0.0)
    return {
        "singular_values_normalized": normalized.numpy(),
        "singular_values_mean": normalized.mean(0).numpy(),
        "singular_values_largest": largest[:, 0].numpy(),
    }


def _project(x: np.ndarray, method: str) -> np.ndarray:
    import torch

    from backend.analysis import pca_2d, tsne_2d

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = pca_2d(t) if method == "pca" else tsne_2d(t, perplexity=20.0, seed=0)
    return out.cpu().numpy()
