"""One capture per (image, model): the bundle of every result, built once per captured batch, and its storage.

A capture runs ONE forward pass for a batch of images (the runner batches requests for the same model);
``build_bundles`` then runs every analysis once over the whole batch, vectorized over images (metrics,
the attention of every layer, rollouts, spectra of every depth, patch tokens of every depth), and slices
the results per image. ``Captures`` answers from memory at once; encoding and storing happen in the
background (until they are done, the bundle itself answers). Identical requests in flight share one capture
(single flight by content address), across the processes sharing a Redis too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import numpy as np

from backend.cache import (
    SharedLocks,
    SingleFlight,
    Store,
    decode_array,
    decode_json,
    encode_array,
    encode_json,
)
from backend.cache import keys as K
from backend.config import Settings
from backend.runner import RunnerPool

if TYPE_CHECKING:
    from collections.abc import Callable

    from backend.analysis.modern import ModernValues
    from backend.analysis.summary import PerImage
    from backend.capture import Trace
    from backend.service.images import ImageService

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
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
    has_cls: bool = True  # token 0 is a CLS token (I-JEPA, AIMv2 and register-only models have none)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def addr(self, image_id: str) -> Addr:
        """The content address of this model's results for one image (the leading parts of every key)."""
        return Addr(image_id, self.id, self.digest, self.preprocessing)

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "heads": self.heads,
            "grid": list(self.grid),
            "patch_size": self.patch_size,
            "num_prefix_tokens": self.num_prefix,
            "has_cls_token": self.has_cls,
            "embed_dim": self.embed_dim,
            "num_parameters": self.num_parameters,
            "weights_digest": self.digest,
            "preprocessing": self.preprocessing,
        }


class Addr(NamedTuple):
    """Spread into the key functions of ``backend.cache.keys``: ``K.attention_key(*addr, layer)``."""

    image_id: str
    model_id: str
    digest: str
    preprocessing: dict[str, Any]


def model_info_of(loaded: Any) -> ModelInfo:
    """Read ranges off a loaded model (runs on the runner's thread)."""
    import torch

    from backend.capture import grid_and_patch, has_cls_token
    from backend.imaging import model_preprocessing

    prep = model_preprocessing(loaded)  # the one rule (card, timm config, paper)
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
        has_cls=has_cls_token(model),
    )


# ---------------------------------------------------------------------------------------------- the bundle
@dataclass
class Bundle:
    """Everything one capture gives for one image, decoded (to answer at once) and encoded (to store)."""

    metrics: dict[str, Any]
    attention: np.ndarray  # (L, heads, N, N) float16, prefix rows and columns included
    rollout: np.ndarray  # (L, N, N) float16: attention rollout through block k (head mean)
    spectrum: dict[str, np.ndarray]  # "out": (L + 1, H, W), "attn": (L, H, W) float32, A4 step 5
    tokens: np.ndarray  # (L + 1, Np, C) float16, x_out patch tokens (prefix dropped)
    encoded: dict[str, bytes] = field(default_factory=dict)
    tokens_stored: bool = False  # the tokens are written only once a set analysis asks for them

    @property
    def nbytes(self) -> int:
        return sum(len(v) for v in self.encoded.values())


def build_bundles(info: ModelInfo, trace: Trace) -> list[Bundle]:
    """Every analysis of every image of a captured batch, each run once over the batch (on its device).

    Runs on the runner's thread. Per-image values come from ``backend.analysis`` (the only implementation);
    the metrics of image ``i`` are ``summarize`` of its slice of ``per_image_values``, exactly what
    ``compute_metrics`` gives on that image alone."""
    import torch

    from backend.analysis import attention_rollout, log_amplitude_spectrum
    from backend.analysis.modern import modern_values
    from backend.analysis.summary import per_image_values

    prefix, grid = trace.num_prefix_tokens, trace.grid
    b = trace.batch_size
    host, modern = per_image_values(trace).host(), modern_values(trace, positions=False).cpu()
    # Batch-first arrays: image i's results are contiguous views of one transfer per kind.
    attention = torch.stack([a.to(torch.float16) for a in trace.attentions], 1).cpu().numpy()
    rollouts: list[torch.Tensor] = []
    acc: torch.Tensor | None = None
    for a in trace.attentions:
        step = attention_rollout([a], prefix)  # head mean + identity, rows renormalized: (B, N, N)
        acc = step if acc is None else step @ acc
        rollouts.append(acc.to(torch.float16))
    rollout = torch.stack(rollouts, 1).cpu().numpy()

    def spectra(states: list[torch.Tensor]) -> np.ndarray:
        # one state at a time: the FFT temporaries of all states at once (complex, several x the tokens)
        # made it 3x slower at batch 8 (323 ms instead of 109 for 25 states of ViT-B/16)
        s = torch.stack([log_amplitude_spectrum(x, grid, prefix) for x in states], 1)  # (B, S, H, W)
        return s.float().cpu().numpy()

    spec_out, spec_attn = spectra(trace.x_out), spectra(trace.x_attn)
    tokens = torch.stack([x[:, prefix:].to(torch.float16) for x in trace.x_out], 1).cpu().numpy()
    out = []
    for i in range(b):
        metrics = image_metrics(info, host.select(i), modern.select(i))
        spectrum = {"out": spec_out[i], "attn": spec_attn[i]}
        out.append(Bundle(metrics, attention[i], rollout[i], spectrum, tokens[i]))
    return out


def image_metrics(info: ModelInfo, values: PerImage, modern: ModernValues) -> dict[str, Any]:
    """One image's ``metrics.json`` object from its per-image values (host copies): the same object
    ``compute_metrics`` gives on that image alone."""
    from backend.analysis.modern import summarize_modern
    from backend.analysis.summary import summarize

    metrics = summarize(
        values,
        model=info.id,
        family=info.family,
        preprocessing=info.preprocessing,
        grid=info.grid,
        patch_size=info.patch_size,
    )
    metrics.update(summarize_modern(modern))
    return metrics


def encode_bundle(info: ModelInfo, image_id: str, b: Bundle) -> dict[str, bytes]:
    a = info.addr(image_id)
    out = {K.metrics_key(*a): encode_json(b.metrics)}
    for k, (att, roll) in enumerate(zip(b.attention, b.rollout, strict=True), start=1):
        out[K.attention_key(*a, k)] = encode_array(att)
        out[K.rollout_key(*a, k)] = encode_array(roll)
    for state, maps in b.spectrum.items():
        first = 0 if state == "out" else 1
        for d, m in enumerate(maps, start=first):
            out[K.spectrum_key(*a, state, d)] = encode_array(m, dtype="float32", compress=False)
    return out


def encode_tokens(info: ModelInfo, image_id: str, b: Bundle) -> dict[str, bytes]:
    """The patch tokens of every depth (3.4 MB for ViT-B/16): stored only for images of a set analysis that
    reads them (embeddings, CKA, positional share), which keeps a viewed image under 8 MB (bench/codec.py)."""
    a = info.addr(image_id)
    return {K.tokens_key(*a, "out", d): encode_array(t) for d, t in enumerate(b.tokens)}


class _BatchMemo(threading.local):
    """What a runner thread built for the batch it is working on, by kind (one build per kind and batch)."""

    def __init__(self) -> None:
        self.trace: Trace | None = None
        self.built: dict[str, list[Any]] = {}


_MEMO = _BatchMemo()


def per_batch(kind: str, build: Callable[[Trace], list[T]]) -> Callable[[Any, Trace, int], T]:
    """A runner work hook (``work(loaded, trace, i)``) that runs ``build(trace)`` once per captured batch, on
    the turn of the first image that needs it, and answers each image with its element. Requests of one batch
    may come from different callers (a set job, a single image): each kind is built once for all of them."""

    def work(_loaded: Any, trace: Trace, i: int) -> T:
        memo = _MEMO
        if memo.trace is not trace:
            memo.trace, memo.built = trace, {}
        found = memo.built.get(kind)
        if found is None:
            found = memo.built[kind] = build(trace)
        if i == trace.batch_size - 1:  # the batch's last image: let its tensors go
            memo.trace, memo.built = None, {}
        return cast(T, found[i])

    return work


# ---------------------------------------------------------------------------------------------- captures
class Captures:
    """(image, model) -> its results: the store, else one capture, single-flight within this process and,
    through a lock in the store, across the processes sharing it (Redis).

    The process that takes the lock captures, answers from memory and stores every result in the background,
    then marks the bundle done (``bundle_key``) and releases the lock; a process that finds the lock taken
    waits for that mark and reads the store.
    """

    def __init__(self, settings: Settings, store: Store, pool: RunnerPool, images: ImageService) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.images = images
        self.flight = SingleFlight()
        self.locks = SharedLocks(store, ttl_s=int(settings.request_timeout_s) + 60)
        self.requested = 0  # bundles computed here (for tests and /metrics)
        self._persisting: dict[str, Bundle] = {}
        self._persist_tasks: set[asyncio.Task[None]] = set()

    async def run(self, image_id: str, info: ModelInfo, work: Callable[[Any, Trace, int], T]) -> T:
        """Queue one image on its model's runner; ``work`` runs on the runner thread after the capture."""
        from backend.imaging import Preprocessing

        # Shrunk to what the model reads before it waits in the queue: a few hundred KB, not 120 MB.
        image = await self.images.model_view(image_id, Preprocessing.from_dict(info.preprocessing))
        runner = self.pool.pick(info.id)
        result: T = await runner.submit(info.id, image, work, timeout=self.settings.request_timeout_s)
        return result

    async def bundle(self, image_id: str, info: ModelInfo) -> Bundle | None:
        """This process's bundle of (image, model), or None when another process captured and stored it."""
        key = K.bundle_key(*info.addr(image_id))
        pending = self._persisting.get(key)
        if pending is not None:  # computed a moment ago, still on its way into the store
            return pending
        return await self.flight.run(key, lambda: self._bundle_once(key, image_id, info))

    async def _bundle_once(self, key: str, image_id: str, info: ModelInfo) -> Bundle | None:
        token = await self.locks.acquire(key)
        if token is None:  # another process captures it right now
            if await self.locks.wait(key, lambda: self._stored(key)):
                return None
            token = await self.locks.acquire(key) or b""  # it failed: capture here
        try:
            self.requested += 1
            bundle = await self.run(image_id, info, per_batch("bundle", lambda t: build_bundles(info, t)))
        except BaseException:
            await self.locks.release(key, token)
            raise
        self._persisting[key] = bundle
        task = asyncio.create_task(
            self._persist(key, token, image_id, info, bundle), name=f"persist-{key[-8:]}"
        )
        self._persist_tasks.add(task)
        task.add_done_callback(self._persist_tasks.discard)
        return bundle

    async def _stored(self, key: str) -> bool:
        return await self.store.get(key) is not None

    async def _persist(self, key: str, token: bytes, image_id: str, info: ModelInfo, bundle: Bundle) -> None:
        """Encode (the codec releases the GIL: this overlaps the next capture), write every key, then mark the
        bundle stored and release the lock (waiting processes read the store from then on)."""
        try:
            bundle.encoded = await asyncio.to_thread(encode_bundle, info, image_id, bundle)
            items = list(bundle.encoded.items())
            for start in range(0, len(items), _WRITES_AT_ONCE):  # a few connections, not one per key
                await asyncio.gather(
                    *(self.store.set(k, v) for k, v in items[start : start + _WRITES_AT_ONCE])
                )
            await self.store.set(key, b"1")
        except Exception:  # the cache is best effort; the results were already served
            log.exception("storing the results of %s with %s failed", image_id[:12], info.id)
        finally:
            self._persisting.pop(key, None)
            await self.locks.release(key, token)

    async def settle(self) -> None:
        """Wait until every computed result is in the store (tests, shutdown)."""
        while self._persist_tasks:
            await asyncio.gather(*list(self._persist_tasks), return_exceptions=True)

    async def _result(
        self,
        key: str,
        image_id: str,
        info: ModelInfo,
        decode: Callable[[bytes], R],
        pick: Callable[[Bundle], R],
    ) -> R:
        """The value under ``key`` in the store, else from the image's bundle (captured here or elsewhere)."""
        tokens = K.kind_of(key) == "tokens"
        for attempt in range(2):
            data = await self.store.get(key)
            if data is not None:
                try:
                    return decode(data)
                except ValueError as exc:
                    log.warning("corrupt cache value under %s (%s); recomputing", key, exc)
            bundle = await self.bundle(image_id, info)
            if bundle is not None:
                if tokens:
                    await self._store_tokens(image_id, info, bundle)
                return pick(bundle)
            if attempt == 0:
                continue  # another process stored it: read it
        # Stored elsewhere but gone (evicted, Redis down, tokens not kept): capture here, without the lock.
        self.requested += 1
        bundle = await self.run(image_id, info, per_batch("bundle", lambda t: build_bundles(info, t)))
        if tokens:
            await self._store_tokens(image_id, info, bundle)
        return pick(bundle)

    async def _store_tokens(self, image_id: str, info: ModelInfo, bundle: Bundle) -> None:
        if bundle.tokens_stored:
            return
        bundle.tokens_stored = True
        items = list((await asyncio.to_thread(encode_tokens, info, image_id, bundle)).items())
        for start in range(0, len(items), _WRITES_AT_ONCE):
            await asyncio.gather(*(self.store.set(k, v) for k, v in items[start : start + _WRITES_AT_ONCE]))

    async def array(
        self, key: str, image_id: str, info: ModelInfo, pick: Callable[[Bundle], np.ndarray]
    ) -> np.ndarray:
        """A stored array, else the one ``pick`` takes from the image's bundle."""
        return await self._result(key, image_id, info, decode_array, pick)

    async def metrics(self, image_id: str, info: ModelInfo) -> dict[str, Any]:
        """The stored metrics object of one image, else its bundle's."""

        def decode(data: bytes) -> dict[str, Any]:
            obj = decode_json(data)
            if not isinstance(obj, dict):
                raise ValueError("the metrics value is not a JSON object")
            return obj

        return await self._result(
            K.metrics_key(*info.addr(image_id)), image_id, info, decode, lambda b: b.metrics
        )
