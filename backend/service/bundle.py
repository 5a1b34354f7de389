"""One capture per (image, model): the bundle of every result, built once per captured batch, and its storage.

A capture runs ONE forward pass for a batch of images (the runner batches requests for the same model);
``build_bundles`` then runs every analysis once over the whole batch, vectorized over images (metrics,
the attention of every layer, rollouts, spectra of every depth, patch tokens of every depth), and slices
the results per image. ``Captures`` answers from memory at once; encoding and storing happen in the
background (until they are done, the bundle itself answers). Identical requests in flight share one capture
(single flight by content address).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from backend.cache import SingleFlight, Store, decode_array, decode_json, encode_array, encode_json
from backend.cache import keys as K
from backend.config import Settings
from backend.runner import RunnerPool

if TYPE_CHECKING:
    from collections.abc import Callable

    from backend.capture import Trace
    from backend.service.images import ImageService

log = logging.getLogger(__name__)

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
    from backend.analysis.modern import modern_values, summarize_modern
    from backend.analysis.summary import PerImage, per_image_values, summarize

    prefix, grid = trace.num_prefix_tokens, trace.grid
    b = trace.batch_size
    values = per_image_values(trace)
    modern = modern_values(trace).cpu()
    host = PerImage(
        *(t.double().cpu() for t in (values.distance, values.nmi, values.entropy, values.scalars))
    )
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
        s = log_amplitude_spectrum(torch.cat(states), grid, prefix)  # (S * B, H, W), state-major
        return s.view(len(states), b, *s.shape[1:]).transpose(0, 1).float().cpu().numpy()

    spec_out, spec_attn = spectra(trace.x_out), spectra(trace.x_attn)
    tokens = torch.stack([x[:, prefix:].to(torch.float16) for x in trace.x_out], 1).cpu().numpy()
    out = []
    for i in range(b):
        one = PerImage(host.distance[:, i : i + 1], host.nmi[:, i : i + 1], host.entropy[:, i : i + 1],
                       host.scalars[:, i : i + 1])  # fmt: skip
        metrics = summarize(
            one,
            model=trace.model_id,
            family=info.family,
            preprocessing=trace.preprocessing,
            grid=grid,
            patch_size=trace.patch_size,
        )
        metrics.update(summarize_modern(modern.select(i)))
        spectrum = {"out": spec_out[i], "attn": spec_attn[i]}
        out.append(Bundle(metrics, attention[i], rollout[i], spectrum, tokens[i]))
    return out


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
    for d, t in enumerate(b.tokens):  # activations do not compress: do not spend the time trying
        out[K.tokens_key(*a, "out", d)] = encode_array(t, compress=False)
    return out


class _BatchMemo(threading.local):
    """The bundles of the batch a runner thread is working on: built on the first image's turn."""

    trace: Trace | None = None
    bundles: list[Bundle] | None = None


# ---------------------------------------------------------------------------------------------- captures
class Captures:
    """(image, model) -> its bundle: from memory while being stored, else one (single-flight) capture."""

    def __init__(self, settings: Settings, store: Store, pool: RunnerPool, images: ImageService) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.images = images
        self.flight = SingleFlight()
        self.requested = 0  # bundles computed (for tests and /metrics)
        self._memo = _BatchMemo()
        self._persisting: dict[str, Bundle] = {}
        self._persist_tasks: set[asyncio.Task[None]] = set()

    async def bundle(self, image_id: str, info: ModelInfo) -> Bundle:
        """Capture once for (image, model), answer from memory, store every result in the background."""
        key = K.bundle_key(*info.addr(image_id))
        pending = self._persisting.get(key)
        if pending is not None:  # computed a moment ago, still on its way into the store
            return pending
        return await self.flight.run(key, lambda: self._capture(key, image_id, info))

    def _work(self, info: ModelInfo) -> Callable[[Any, Trace, int], Bundle]:
        """The runner's per-image hook: the first image of a batch builds the bundles of all of them."""
        memo = self._memo

        def work(_loaded: Any, trace: Trace, i: int) -> Bundle:
            if memo.trace is not trace or memo.bundles is None:
                memo.trace, memo.bundles = trace, build_bundles(info, trace)
            bundle = memo.bundles[i]
            if i == len(memo.bundles) - 1:  # the batch is done: let its tensors go
                memo.trace = memo.bundles = None
            return bundle

        return work

    async def _capture(self, key: str, image_id: str, info: ModelInfo) -> Bundle:
        from backend.imaging import Preprocessing

        # Shrunk to what the model reads before it waits in the queue: a few hundred KB, not 120 MB.
        image = await self.images.model_view(image_id, Preprocessing.from_dict(info.preprocessing))
        runner = self.pool.pick(info.id)
        self.requested += 1
        bundle: Bundle = await runner.submit(
            info.id, image, self._work(info), timeout=self.settings.request_timeout_s
        )
        self._persisting[key] = bundle
        task = asyncio.create_task(self._persist(key, image_id, info, bundle), name=f"persist-{key[-8:]}")
        self._persist_tasks.add(task)
        task.add_done_callback(self._persist_tasks.discard)
        return bundle

    async def _persist(self, key: str, image_id: str, info: ModelInfo, bundle: Bundle) -> None:
        """Encode (the codec releases the GIL: this overlaps the next capture) and write every key."""
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

    async def array(
        self, key: str, image_id: str, info: ModelInfo, pick: Callable[[Bundle], np.ndarray]
    ) -> np.ndarray:
        """A stored array, else the one ``pick`` takes from the image's bundle."""
        data = await self.store.get(key)
        if data is not None:
            try:
                return decode_array(data)
            except ValueError as exc:
                log.warning("corrupt cache value under %s (%s); recomputing", key, exc)
        return pick(await self.bundle(image_id, info))

    async def metrics(self, image_id: str, info: ModelInfo) -> dict[str, Any]:
        """The stored metrics object of one image, else its bundle's."""
        data = await self.store.get(K.metrics_key(*info.addr(image_id)))
        if data is not None:
            try:
                obj = decode_json(data)
                if isinstance(obj, dict):
                    return obj
            except ValueError:
                pass
        return (await self.bundle(image_id, info)).metrics
