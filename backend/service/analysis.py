"""The analysis service: (image, model) -> cached results, one capture per (image, model).

Read path of every image view (attention, spectrum, metrics), cheapest first:

1. the hot lane: rendered responses in this process, keyed by the full content address;
2. the store (Redis or the in-process LRU): the rendered response under its view key;
3. the store: the captured array it is rendered from (one key per image, model and layer);
4. a capture: ONE forward pass through the runner computes everything for the image at once (metrics, the
   attention of every layer, rollouts, spectra of every depth, patch tokens of every depth) and answers from
   memory; encoding and storing it all happen in the background (until they are done, the bundle itself
   answers). Identical requests in flight share one capture (single-flight by content address).

A store that fails answers "miss" (see ``backend.cache.store``), so a Redis outage only costs recomputation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from backend import ANALYSIS_VERSION
from backend.cache import SingleFlight, Store, decode_array, decode_json, encode_array, encode_json
from backend.cache import keys as K
from backend.config import Settings
from backend.errors import (
    BadImage,
    BadRequest,
    ClassModeRefused,
    DownloadsDisabled,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    VitscopeError,
)
from backend.runner import RunnerPool
from backend.service import render
from backend.service.aggregate import aggregate_metrics
from backend.service.hot import HotCache, View, view_key
from backend.service.images import IMAGE_ID_RE, ImageFolder, ImageMeta
from backend.service.jobs import Job, JobManager
from backend.service.sets import SetFolder

if TYPE_CHECKING:
    from PIL import Image

    from backend.capture import Trace

log = logging.getLogger(__name__)


# Uploads up to this size are also copied into the cache (other replicas sharing Redis can then serve them);
# larger ones would risk the cache's short timeouts and are kept on disk only.
IMAGE_IN_CACHE_MAX_BYTES = 4 * 1024 * 1024
_WRITES_AT_ONCE = 8


# ---------------------------------------------------------------------------------------------- model info
@dataclass(frozen=True)
class ModelInfo:
    """What a request needs to know about a model without touching it: ranges and the content address."""

    id: str
    family: str
    arch: str
    digest: str
    preprocessing: dict[str, Any]
    layers: int
    heads: int
    grid: tuple[int, int]
    patch_size: int
    num_prefix: int
    embed_dim: int
    num_parameters: int

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "heads": self.heads,
            "grid": list(self.grid),
            "patch_size": self.patch_size,
            "num_prefix_tokens": self.num_prefix,
            "embed_dim": self.embed_dim,
            "num_parameters": self.num_parameters,
            "weights_digest": self.digest,
            "preprocessing": self.preprocessing,
        }


def model_info_of(loaded: Any) -> ModelInfo:
    """Read ranges off a loaded model (runs on the runner's thread)."""
    import torch

    from backend.capture import grid_and_patch
    from backend.imaging import preprocessing_for

    prep = preprocessing_for(loaded.data_config)
    model = loaded.model
    grid, patch = grid_and_patch(model, torch.empty(1, 3, *prep.input_size, device="meta"))
    blocks = list(model.blocks)
    n_prefix = int(getattr(model, "num_prefix_tokens", 1))
    return ModelInfo(
        id=loaded.spec.id,
        family=loaded.spec.family,
        arch=loaded.spec.arch,
        digest=loaded.weights_digest,
        preprocessing=prep.as_dict(),
        layers=len(blocks),
        heads=int(blocks[0].attn.num_heads),
        grid=(int(grid[0]), int(grid[1])),
        patch_size=int(patch),
        num_prefix=n_prefix,
        embed_dim=int(getattr(model, "embed_dim", getattr(model, "num_features", 0))),
        num_parameters=int(loaded.num_parameters),
    )


# ---------------------------------------------------------------------------------------------- the bundle
@dataclass
class Bundle:
    """Everything one capture gives for one image, decoded (to answer at once) and encoded (to store)."""

    metrics: dict[str, Any]
    attention: list[np.ndarray]  # L x (heads, N, N) float16, prefix rows and columns included
    rollout: list[np.ndarray]  # L x (N, N) float16: attention rollout through block k (head mean)
    spectrum: dict[str, np.ndarray]  # "out": (L + 1, H, W), "attn": (L, H, W) float32, A4 step 5
    tokens: list[np.ndarray]  # L + 1 x (Np, C) float16, x_out patch tokens (prefix dropped)
    encoded: dict[str, bytes] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(v) for v in self.encoded.values())


def slice_trace(trace: Trace, i: int) -> Trace:
    from backend.capture import Trace

    return Trace(
        attentions=[a[i : i + 1] for a in trace.attentions],
        x_attn=[x[i : i + 1] for x in trace.x_attn],
        x_out=[x[i : i + 1] for x in trace.x_out],
        grid=trace.grid,
        patch_size=trace.patch_size,
        num_prefix_tokens=trace.num_prefix_tokens,
        model_id=trace.model_id,
        preprocessing=trace.preprocessing,
    )


def build_bundle(info: ModelInfo, image_id: str, trace: Trace, i: int, *, encode: bool = True) -> Bundle:
    """Runs on the runner's thread, right after the capture: every analysis of image ``i`` of the batch.

    ``encode=False`` leaves the (CPU-heavy) encoding for later, off the device's thread."""
    import torch

    from backend.analysis import attention_rollout, compute_metrics, log_amplitude_spectrum

    one = slice_trace(trace, i)
    prefix, grid = one.num_prefix_tokens, one.grid
    metrics = compute_metrics(one, info.family)
    attention = [a[0].to(torch.float16).cpu().numpy() for a in one.attentions]
    rollout: list[np.ndarray] = []
    acc: torch.Tensor | None = None
    for a in one.attentions:
        step = attention_rollout([a], prefix)  # head mean + identity, rows renormalized: (1, N, N)
        acc = step if acc is None else step @ acc
        rollout.append(acc[0].to(torch.float16).cpu().numpy())
    spectrum = {
        "out": log_amplitude_spectrum(torch.cat(one.x_out), grid, prefix).float().cpu().numpy(),
        "attn": log_amplitude_spectrum(torch.cat(one.x_attn), grid, prefix).float().cpu().numpy(),
    }
    tokens = [x[0, prefix:].to(torch.float16).cpu().numpy() for x in one.x_out]
    bundle = Bundle(metrics, attention, rollout, spectrum, tokens)
    if encode:
        bundle.encoded = encode_bundle(info, image_id, bundle)
    return bundle


def _addr(info: ModelInfo, image_id: str) -> tuple[str, str, str, dict[str, Any]]:
    return image_id, info.id, info.digest, info.preprocessing


def encode_bundle(info: ModelInfo, image_id: str, b: Bundle) -> dict[str, bytes]:
    a = _addr(info, image_id)
    out = {K.metrics_key(*a): encode_json(b.metrics)}
    for k, (att, roll) in enumerate(zip(b.attention, b.rollout, strict=True), start=1):
        out[K.attention_key(*a, k)] = encode_array(att)
        out[K.make_key("rollout", *a, k)] = encode_array(roll)
    for state, maps in b.spectrum.items():
        first = 0 if state == "out" else 1
        for d, m in enumerate(maps, start=first):
            out[K.spectrum_key(*a, state, d)] = encode_array(m, dtype="float32", compress=False)
    for d, t in enumerate(b.tokens):  # activations do not compress: do not spend the time trying
        out[K.tokens_key(*a, "out", d)] = encode_array(t, compress=False)
    return out


# ---------------------------------------------------------------------------------------------- the service
class AnalysisService:
    def __init__(self, settings: Settings, store: Store, pool: RunnerPool) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.images = ImageFolder(settings.data_dir, settings.data_dir_max_bytes)
        self.sets = SetFolder(settings.data_dir)
        self.hot = HotCache(settings.hot_cache_bytes)
        self.jobs = JobManager(settings.job_history)
        self.flight = SingleFlight()
        self._infos: dict[str, ModelInfo] = {}
        self._decoded: OrderedDict[str, Image.Image] = OrderedDict()
        self.ready = False
        self.warmup_report: dict[str, str] = {}
        self.captures_requested = 0  # bundles computed (for tests and /metrics)
        self._persisting: dict[str, Bundle] = {}
        self._persist_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self, warmup: bool = True) -> None:
        await self.pool.start()
        if warmup and self.settings.warmup:
            asyncio.create_task(self._warmup(), name="warmup")
        else:
            self.ready = True

    async def _warmup(self) -> None:
        started = time.perf_counter()
        report: dict[str, str] = {}
        for runner in self.pool.runners:
            report.update(await runner.warmup(list(self.settings.default_models)))
        for model_id, outcome in report.items():
            if outcome == "ok":
                try:
                    await self.model_info(model_id)
                except VitscopeError as exc:
                    report[model_id] = str(exc)
        self.warmup_report = report
        self.ready = True
        log.info("warm-up done in %.1f s: %s", time.perf_counter() - started, report)

    async def stop(self) -> None:
        await self.settle()
        await self.jobs.stop()
        await self.pool.stop()
        await self.store.close()

    # -- models ----------------------------------------------------------------------------------------------
    async def model_info(self, model_id: str) -> ModelInfo:
        info = self._infos.get(model_id)
        if info is not None:
            return info
        return await self.flight.run(("model-info", model_id), lambda: self._load_info(model_id))

    async def spec(self, model_id: str) -> Any:
        """The catalogue entry (``ModelSpec``) of a model id, or ``ModelNotFound``."""
        from backend.models import get_spec
        from backend.models.catalog import check_name

        try:
            check_name(model_id)
        except BadRequest:
            raise ModelNotFound(
                f"unknown model {model_id!r}: model ids are 1-80 lowercase letters, digits, '.', '_' or '-'; "
                "GET /api/v1/models lists them"
            ) from None
        return await asyncio.to_thread(get_spec, model_id)

    async def _load_info(self, model_id: str) -> ModelInfo:
        await self.spec(model_id)  # ModelNotFound before touching the runner
        runner = self.pool.pick(model_id)
        info = await runner.with_model(model_id, model_info_of)
        self._infos[model_id] = info
        return info

    @property
    def default_model(self) -> str:
        return self.settings.default_models[0] if self.settings.default_models else "random-vit-s16"

    def known_info(self, model_id: str) -> ModelInfo | None:
        return self._infos.get(model_id)

    # -- images ----------------------------------------------------------------------------------------------
    async def upload(self, data: bytes) -> tuple[str, ImageMeta]:
        from backend.uploads import decode_image, image_id

        limit = self.settings.max_upload_bytes
        if len(data) > limit:
            raise PayloadTooLarge(f"the upload is {len(data):,} bytes; at most {limit:,} bytes are allowed")
        iid = image_id(data)
        if self.settings.class_mode:
            from backend.service.gallery import gallery_digests

            if iid not in await asyncio.to_thread(gallery_digests):
                raise ClassModeRefused(
                    "this server runs in class mode (VITSCOPE_CLASS_MODE), which allows only the images of "
                    "the example gallery; pick one there (uploads of your own images are off)"
                )
        decoded = await asyncio.to_thread(decode_image, data, max_bytes=limit)
        meta = ImageMeta(decoded.width, decoded.height, decoded.format, len(data), decoded.animated)
        await asyncio.to_thread(self.images.put, iid, data, meta)
        self._remember_decoded(iid, decoded.image)
        if len(data) <= IMAGE_IN_CACHE_MAX_BYTES:  # disk is the source of truth
            await self.store.set(K.image_key(iid), data)
        return iid, meta

    def check_image_id(self, image_id: str) -> None:
        if not IMAGE_ID_RE.match(image_id):
            raise BadRequest(
                f"image id {image_id!r} is not 64 lowercase hex digits (the sha256 of the upload)"
            )

    async def image_meta(self, image_id: str) -> ImageMeta:
        self.check_image_id(image_id)
        meta = self.images.meta(image_id)
        if meta is not None:
            return meta
        data = await self.store.get(K.image_key(image_id))  # uploaded through another replica
        if data is not None:
            try:
                _, meta = await self.upload(data)
                return meta
            except BadImage:
                pass
        raise NotFound(f"no image with id {image_id}: upload it first with POST /api/v1/images")

    async def image_bytes(self, image_id: str) -> tuple[bytes, ImageMeta]:
        meta = await self.image_meta(image_id)
        data = await asyncio.to_thread(self.images.read, image_id)
        if data is None:
            data = await self.store.get(K.image_key(image_id))
        if data is None:
            raise NotFound(f"image {image_id} is no longer stored; upload it again")
        return data, meta

    async def decoded_image(self, image_id: str) -> Image.Image:
        image = self._decoded.get(image_id)
        if image is not None:
            self._decoded.move_to_end(image_id)
            return image
        from backend.uploads import decode_image

        data, _ = await self.image_bytes(image_id)
        decoded = await asyncio.to_thread(decode_image, data, max_bytes=max(len(data), 1))
        self._remember_decoded(image_id, decoded.image)
        return decoded.image

    def _remember_decoded(self, image_id: str, image: Image.Image) -> None:
        self._decoded[image_id] = image
        self._decoded.move_to_end(image_id)
        while len(self._decoded) > 8:
            self._decoded.popitem(last=False)

    # -- the capture -----------------------------------------------------------------------------------------
    async def bundle(self, image_id: str, info: ModelInfo) -> Bundle:
        """Capture once for (image, model), answer from memory, store every result in the background."""
        key = K.make_key("bundle", *_addr(info, image_id))
        pending = self._persisting.get(key)
        if pending is not None:  # computed a moment ago, still on its way into the store
            return pending
        return await self.flight.run(key, lambda: self._capture(key, image_id, info))

    async def _capture(self, key: str, image_id: str, info: ModelInfo) -> Bundle:
        image = await self.decoded_image(image_id)
        runner = self.pool.pick(info.id)
        self.captures_requested += 1

        def work(_loaded: Any, trace: Trace, i: int) -> Bundle:
            return build_bundle(info, image_id, trace, i, encode=False)

        bundle: Bundle = await runner.submit(info.id, image, work, timeout=self.settings.request_timeout_s)
        self._persisting[key] = bundle
        task = asyncio.create_task(self._persist(key, image_id, info, bundle), name=f"persist-{key[-8:]}")
        self._persist_tasks.add(task)
        task.add_done_callback(self._persist_tasks.discard)
        return bundle

    async def _persist(self, key: str, image_id: str, info: ModelInfo, bundle: Bundle) -> None:
        """Encode (zlib releases the GIL: this overlaps the next capture) and write every key."""
        try:
            bundle.encoded = await asyncio.to_thread(encode_bundle, info, image_id, bundle)
            items = list(bundle.encoded.items())
            for start in range(0, len(items), _WRITES_AT_ONCE):  # a few connections, not one per key
                await asyncio.gather(
                    *(self.store.set(k, v) for k, v in items[start : start + _WRITES_AT_ONCE])
                )
        except Exception:  # the cache is best effort; the results were already served
            log.exception("storing the results of %s with %s failed", image_id[:12], info.id)
        finally:
            self._persisting.pop(key, None)

    async def settle(self) -> None:
        """Wait until every computed result is in the store (tests, shutdown)."""
        while self._persist_tasks:
            await asyncio.gather(*list(self._persist_tasks), return_exceptions=True)

    async def _array(
        self, key: str, image_id: str, info: ModelInfo, pick: Callable[[Bundle], np.ndarray]
    ) -> np.ndarray:
        data = await self.store.get(key)
        if data is not None:
            try:
                return decode_array(data)
            except ValueError as exc:
                log.warning("corrupt cache value under %s (%s); recomputing", key, exc)
        return pick(await self.bundle(image_id, info))

    async def _image_metrics_obj(self, image_id: str, info: ModelInfo) -> dict[str, Any]:
        data = await self.store.get(K.metrics_key(*_addr(info, image_id)))
        if data is not None:
            try:
                obj = decode_json(data)
                if isinstance(obj, dict):
                    return obj
            except ValueError:
                pass
        return (await self.bundle(image_id, info)).metrics

    # -- views -----------------------------------------------------------------------------------------------
    async def _view(
        self,
        hot_key: Hashable,
        store_key: Callable[[], str],
        media: str,
        produce: Callable[[], Awaitable[View]],
    ) -> View:
        view = self.hot.get(hot_key)
        if view is not None:
            return view

        async def miss() -> View:
            skey = store_key()
            data = await self.store.get(skey)
            if data is not None:
                found = View(data, media)
            else:
                found = await produce()
                await self.store.set(skey, found.body)
            self.hot.put(hot_key, found)
            return found

        return await self.flight.run(hot_key, miss)

    async def metrics(self, image_id: str, model_id: str) -> View:
        await self.image_meta(image_id)
        info = await self.model_info(model_id)
        hot_key = view_key("metrics", image_id, info.id, info.digest)

        async def produce() -> View:
            return render.json_object_view(await self._image_metrics_obj(image_id, info))

        return await self._view(
            hot_key, lambda: K.make_key("view-metrics", *_addr(info, image_id)), render.JSON, produce
        )

    async def attention(
        self,
        image_id: str,
        model_id: str,
        layer: int,
        head: str,
        query: str,
        rollout: bool = False,
        fmt: str = "json",
    ) -> View:
        params = (layer, head, query, rollout, fmt)
        info = self._infos.get(model_id)
        if info is not None and self.images.meta(image_id) is not None:  # no awaits before a hot hit
            view = self.hot.get(view_key("attention", image_id, model_id, info.digest, *params))
            if view is not None:
                return view
        await self.image_meta(image_id)
        info = await self.model_info(model_id)
        layer_i = self._check_layer(info, layer, first=1)
        head_v = self._check_head(info, head, rollout)
        query_v = self._check_query(info, query)
        if fmt not in render.MEDIA_TYPES:
            raise BadRequest(f"format {fmt!r} is not one of json, png, npy")
        a = _addr(info, image_id)

        async def produce() -> View:
            if rollout:
                arr = await self._array(
                    K.make_key("rollout", *a, layer_i), image_id, info, lambda b: b.rollout[layer_i - 1]
                )
                maps = _query_maps(arr[None], info, query_v)  # (1, H, W)
            else:
                arr = await self._array(
                    K.attention_key(*a, layer_i), image_id, info, lambda b: b.attention[layer_i - 1]
                )
                maps = _query_maps(arr, info, query_v)  # (heads, H, W)
                if head_v == "mean":
                    maps = maps.mean(0, keepdims=True)
                elif head_v != "all":
                    maps = maps[int(head_v) : int(head_v) + 1]
            return await self._render_maps(image_id, info, maps, layer_i, head_v, query_v, rollout, fmt)

        return await self._view(
            view_key("attention", image_id, model_id, info.digest, *params),
            lambda: K.make_key("view-attention", *a, layer_i, head_v, str(query_v), int(rollout), fmt),
            render.MEDIA_TYPES[fmt],
            produce,
        )

    async def _render_maps(
        self,
        image_id: str,
        info: ModelInfo,
        maps: np.ndarray,
        layer: int,
        head: str,
        query: int | None,
        rollout: bool,
        fmt: str,
    ) -> View:
        single = head != "all" or rollout
        if fmt == "npy":
            return render.npy_view(maps[0] if single else maps)
        if fmt == "json":
            payload = {
                "image": image_id,
                "model": info.id,
                "grid": list(info.grid),
                "patch_size": info.patch_size,
                "layer": layer,
                "head": "mean" if rollout else (head if head in ("mean", "all") else int(head)),
                "query": "cls" if query is None else query,
                "rollout": rollout,
            }
            return render.json_view(payload, {"map": maps[0] if single else maps})
        from backend.imaging import Preprocessing, model_view

        image = await self.decoded_image(image_id)
        p = info.preprocessing
        prep = Preprocessing(
            input_size=(int(p["input_size"][0]), int(p["input_size"][1])),
            resize=int(p["resize"]),
            interpolation=str(p["interpolation"]),
            crop=str(p["crop"]),
            crop_pct=float(p["crop_pct"]),
            mean=tuple(p["mean"]),
            std=tuple(p["std"]),
            mode=str(p["mode"]),
        )
        cell = None if query is None else divmod(query, info.grid[1])

        def draw() -> View:
            return render.overlay_png(model_view(image, prep), maps, info.patch_size, cell)

        return await asyncio.to_thread(draw)

    async def spectrum(self, image_id: str, model_id: str, state: str, depth: int, fmt: str = "json") -> View:
        await self.image_meta(image_id)
        info = await self.model_info(model_id)
        if state not in ("out", "attn"):
            raise BadRequest(
                f"state {state!r} is not one of 'out' (block output) or 'attn' (after attention)"
            )
        first = 0 if state == "out" else 1
        if not first <= depth <= info.layers:
            raise BadRequest(
                f"depth {depth} is out of range for state {state!r}: model {info.id} has "
                f"{info.layers} blocks; "
                f"use {first}..{info.layers}" + (" (0 = the embedding)" if state == "out" else "")
            )
        if fmt not in render.MEDIA_TYPES:
            raise BadRequest(f"format {fmt!r} is not one of json, png, npy")
        a = _addr(info, image_id)

        async def produce() -> View:
            m = await self._array(
                K.spectrum_key(*a, state, depth), image_id, info, lambda b: b.spectrum[state][depth - first]
            )
            m = np.asarray(m, dtype=np.float32)
            if fmt == "npy":
                return render.npy_view(m)
            if fmt == "png":
                return await asyncio.to_thread(render.heatmap_png, m)
            h, w = m.shape
            bins = min(h, w) // 2
            diag = np.array([m[h // 2 + k, w // 2 + k] for k in range(bins)], dtype=np.float64)
            delta = diag - diag[0]
            payload = {
                "image": image_id,
                "model": info.id,
                "grid": [h, w],
                "state": state,
                "depth": depth,
                "high_frequency_delta": float(delta[-1]),
            }
            return render.json_view(payload, {"delta": delta, "map": m})

        return await self._view(
            view_key("spectrum", image_id, info.id, info.digest, state, depth, fmt),
            lambda: K.make_key("view-spectrum", *a, state, depth, fmt),
            render.MEDIA_TYPES[fmt],
            produce,
        )

    # -- range checks ----------------------------------------------------------------------------------------
    @staticmethod
    def _check_layer(info: ModelInfo, layer: int, first: int = 1) -> int:
        if not first <= layer <= info.layers:
            raise BadRequest(
                f"layer {layer} is out of range: model {info.id} has {info.layers} blocks; "
                f"use {first}..{info.layers}"
            )
        return layer

    @staticmethod
    def _check_head(info: ModelInfo, head: str, rollout: bool) -> str:
        head = head.strip().lower()
        if rollout:
            if head not in ("mean", ""):
                raise BadRequest(f"rollout fuses the heads by their mean; head must be 'mean', got {head!r}")
            return "mean"
        if head in ("mean", "all"):
            return head
        if head.isdigit() and int(head) < info.heads:
            return str(int(head))
        raise BadRequest(
            f"head {head!r} is out of range: model {info.id} has {info.heads} heads; "
            f"use 0..{info.heads - 1}, "
            "'mean' or 'all'"
        )

    @staticmethod
    def _check_query(info: ModelInfo, query: str) -> int | None:
        query = query.strip().lower()
        n = info.num_patches
        if query == "cls":
            if info.num_prefix < 1:
                raise BadRequest(f"model {info.id} has no CLS token; query must be a patch index 0..{n - 1}")
            return None
        if query.isdigit() and int(query) < n:
            return int(query)
        raise BadRequest(
            f"query {query!r} is out of range: the {info.grid[0]}x{info.grid[1]} grid of model {info.id} has "
            f"{n} patches; use a row-major patch index 0..{n - 1} or 'cls'"
        )

    # -- sets ------------------------------------------------------------------------------------------------
    async def create_set(self, image_ids: list[str]) -> str:
        limit = self.settings.max_set_images
        if not image_ids:
            raise BadRequest(f"a set needs 1..{limit} image ids, got none")
        if len(image_ids) > limit:
            raise BadRequest(f"a set holds at most {limit} images (max_set_images), got {len(image_ids)}")
        for iid in image_ids:
            self.check_image_id(iid)
        missing = [iid for iid in image_ids if self.images.meta(iid) is None]
        for iid in missing[:]:
            try:
                await self.image_meta(iid)
                missing.remove(iid)
            except NotFound:
                pass
        if missing:
            raise NotFound(
                f"unknown image ids: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; "
                "upload them first with POST /api/v1/images"
            )
        sid = K.set_id(image_ids)
        await asyncio.to_thread(self.sets.put, sid, image_ids)
        await self.store.set(K.set_key(sid), encode_json(image_ids))
        return sid

    async def set_members(self, set_id: str) -> list[str]:
        if not IMAGE_ID_RE.match(set_id):
            raise BadRequest(f"set id {set_id!r} is not 64 lowercase hex digits")
        members = self.sets.get(set_id)
        if members is None:
            data = await self.store.get(K.set_key(set_id))
            if data is not None:
                try:
                    obj = decode_json(data)
                    if isinstance(obj, list) and all(isinstance(v, str) for v in obj):
                        members = obj
                        await asyncio.to_thread(self.sets.put, set_id, members)
                except ValueError:
                    pass
        if members is None:
            raise NotFound(f"no set with id {set_id}: create it with POST /api/v1/sets")
        return members

    async def set_metrics(self, set_id: str, model_id: str) -> View | Job:
        members = await self.set_members(set_id)
        info = await self.model_info(model_id)
        hot_key = ("set-metrics", set_id, info.id, info.digest)
        skey = K.make_key("view-set-metrics", set_id, info.id, info.digest, info.preprocessing)
        found = await self._cached(hot_key, skey, render.JSON)
        if found is not None:
            return found

        async def work(job: Job) -> View:
            sem = asyncio.Semaphore(max(1, self.settings.max_batch))

            async def one(iid: str) -> dict[str, Any]:
                async with sem:
                    obj = await self._image_metrics_obj(iid, info)
                job.advance()
                return obj

            objs = await asyncio.gather(*(one(i) for i in members))
            obj = aggregate_metrics(objs)
            obj["set"] = set_id
            obj["images"] = members
            view = render.json_object_view(obj)
            await self.store.set(skey, view.body)
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

    async def embeddings(self, set_id: str, model_id: str, layer: int, method: str) -> View | Job:
        members = await self.set_members(set_id)
        info = await self.model_info(model_id)
        if not 0 <= layer <= info.layers:
            raise BadRequest(
                f"layer {layer} is out of range: model {info.id} has {info.layers} blocks; "
                f"use 0..{info.layers} "
                "(the output of block K; 0 = the embedding)"
            )
        if method not in ("pca", "tsne"):
            raise BadRequest(f"method {method!r} is not one of 'pca' or 'tsne'")
        points = len(members) * info.num_patches
        if points > self.settings.max_embedding_points:
            raise BadRequest(
                f"{len(members)} images x {info.num_patches} patches = {points} points; at most "
                f"{self.settings.max_embedding_points} are allowed (max_embedding_points): use a smaller set"
            )
        hot_key = ("embeddings", set_id, info.id, info.digest, layer, method)
        skey = K.make_key("view-embeddings", set_id, info.id, info.digest, info.preprocessing, layer, method)
        found = await self._cached(hot_key, skey, render.JSON)
        if found is not None:
            return found

        async def work(job: Job) -> View:
            sem = asyncio.Semaphore(max(1, self.settings.max_batch))

            async def one(iid: str) -> np.ndarray:
                async with sem:
                    arr = await self._array(
                        K.tokens_key(*_addr(info, iid), "out", layer), iid, info, lambda b: b.tokens[layer]
                    )
                job.advance()
                return np.asarray(arr, dtype=np.float32)

            job.total = len(members) + 1
            tokens = await asyncio.gather(*(one(i) for i in members))
            coords = await asyncio.to_thread(_project, np.concatenate(tokens), method)
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
            }
            view = render.json_view(payload, {"coords": coords})
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

    async def _cached(self, hot_key: Hashable, skey: str, media: str) -> View | None:
        view = self.hot.get(hot_key)
        if view is not None:
            return view
        data = await self.store.get(skey)
        if data is not None:
            view = View(data, media)
            self.hot.put(hot_key, view)
            return view
        return None

    async def _wait(self, job: Job) -> View | Job:
        assert job.task is not None
        try:
            return await asyncio.wait_for(asyncio.shield(job.task), self.settings.set_wait_s)
        except TimeoutError:
            return job

    # -- model downloads -------------------------------------------------------------------------------------
    async def pull(self, model_id: str) -> Job | None:
        """None when the weights are already there; else a download job (downloads must be allowed)."""
        from backend.models import pull, weights_available

        if self.settings.class_mode:
            raise ClassModeRefused(
                f"this server runs in class mode (VITSCOPE_CLASS_MODE), which offers only the preloaded "
                f"models and never downloads; an operator can run `vitscope models pull {model_id}` before "
                "the lesson"
            )
        spec = await self.spec(model_id)
        if await asyncio.to_thread(weights_available, spec):
            return None
        if not self.settings.allow_downloads:
            raise DownloadsDisabled(
                "downloads are disabled on this server; an operator can run "
                f"`vitscope models pull {model_id}`, "
                "or start the server with VITSCOPE_ALLOW_DOWNLOADS=1"
            )

        async def work(job: Job) -> None:
            await asyncio.to_thread(pull, model_id, False)
            job.advance()

        return self.jobs.ensure(
            ("pull", model_id),
            "pull",
            f"download weights of {model_id}",
            work,
            result_url=f"/api/v1/models/{model_id}",
        )


def _query_maps(att: np.ndarray, info: ModelInfo, query: int | None) -> np.ndarray:
    """A1 on cached float16 attention ``(k, N, N)``: the query row over patches, renormalized -> (k, H, W)."""
    p = info.num_prefix
    row = 0 if query is None else p + query
    r = np.asarray(att[:, row, p:], dtype=np.float32)
    r = r / r.sum(-1, keepdims=True)
    return r.reshape(r.shape[0], info.grid[0], info.grid[1])


def _project(x: np.ndarray, method: str) -> np.ndarray:
    import torch

    from backend.analysis import pca_2d, tsne_2d

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = pca_2d(t) if method == "pca" else tsne_2d(t, perplexity=20.0, seed=0)
    return out.cpu().numpy()


__all__ = [
    "ANALYSIS_VERSION",
    "AnalysisService",
    "Bundle",
    "ClassModeRefused",
    "ModelInfo",
    "NotFound",
    "PayloadTooLarge",
]
