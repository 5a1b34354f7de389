"""The model runner: one per device, a queue with dynamic batching and a byte-bounded LRU of loaded models.

    submit(model_id, image, work) --> [waiting deque, bounded] --> batcher task --> worker thread:
        load (LRU, pinned) -> preprocess -> ONE capture for the batch -> work(loaded, trace, i) per image

- Dynamic batching: the batcher takes the oldest waiting request, then gathers requests *for the same model*
  until ``max_batch`` of them wait or ``max_wait_s`` has passed since it started gathering; requests for other
  models keep their place for the next batch.
- Back-pressure: at most ``queue_size`` requests wait, holding at most ``queue_bytes`` bytes of images (the
  service queues images already shrunk to what the model reads); one more raises ``QueueFull`` (503
  with ``Retry-After``: the waiting requests' batches at each model's own measured pace, plus loads).
  Each request has a timeout (``RequestTimeout``, 504); a request whose caller gave up before its batch
  started is dropped from the batch.
- Torch work runs on one dedicated thread per runner, so the event loop stays responsive and the device sees
  one batch at a time.
- Loaded models live in a byte-bounded LRU (``model_memory_bytes``); a model in use is pinned and never
  evicted. The default loader sizes a model before building it: one over the bound is refused, and older
  models are evicted first so that the bound holds while it loads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from backend.errors import NonFiniteResult, QueueFull, RequestTimeout, RunnerError, RunnerStopped

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from backend.capture import Trace

log = logging.getLogger(__name__)

T = TypeVar("T")
Loader = Callable[[str, "torch.device"], Any]  # (model_id, device) -> LoadedModel
Work = Callable[[Any, "Trace", int], Any]  # (loaded, trace, index in batch) -> result, on the worker thread


# ---------------------------------------------------------------------------------------------- device
def resolve_devices(device: str) -> list[str]:
    """``auto``: every CUDA device when torch sees one, else the CPU. ``cuda``: ``cuda:0``."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return ["cpu"]
    if device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunnerError(
                f"device {device!r} was asked for, but torch sees no CUDA device; use cpu or auto"
            )
        index = int(device.split(":")[1])
        if index >= torch.cuda.device_count():
            raise RunnerError(
                f"device {device!r} does not exist; torch sees {torch.cuda.device_count()} CUDA device(s)"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise RunnerError("device 'mps' was asked for but is not available; use cpu or auto")
    return [device]


def default_loader(
    model_id: str, device: torch.device, *, max_bytes: int | None = None, allow_random_init: bool = True
) -> Any:
    from backend.models import load_model

    return load_model(
        model_id, device, download=False, max_bytes=max_bytes, allow_random_init=allow_random_init
    )


def default_sizer(model_id: str, *, max_bytes: int | None = None, allow_random_init: bool = True) -> int:
    """Bytes ``model_id`` will take once loaded, decided before building it (refusals raise here)."""
    from backend.models import get_spec
    from backend.models.loading import check_loadable

    return check_loadable(get_spec(model_id), max_bytes=max_bytes, allow_random_init=allow_random_init)


# ---------------------------------------------------------------------------------------------- model LRU
@dataclass
class _Entry:
    loaded: Any
    nbytes: int
    pins: int = 0
    last_used: float = field(default_factory=time.monotonic)


class ModelLRU:
    """Byte-bounded LRU of loaded models; ``pinned(id)`` loads on a miss and protects the model while in use.

    Thread-safe: the worker thread loads and pins, the event loop reads the listing. ``sizer(id)`` (optional)
    says how many bytes a model will take before it is built, so that older models make room first and
    the bound holds while the new one loads.
    """

    def __init__(
        self, max_bytes: int, loader: Callable[[str], Any], sizer: Callable[[str], int] | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self._loader = loader
        self._sizer = sizer
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0
        self.evictions = 0
        self.load_seconds: dict[str, float] = {}  # how long each model took to load, last time

    @contextmanager
    def pinned(self, model_id: str) -> Iterator[Any]:
        entry = self._acquire(model_id)
        try:
            yield entry.loaded
        finally:
            with self._lock:
                entry.pins -= 1
                entry.last_used = time.monotonic()

    def _acquire(self, model_id: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is not None:
                entry.pins += 1
                self._entries.move_to_end(model_id)
                return entry
        if self._sizer is not None:
            need = self._sizer(model_id)  # refuses what must not be built, before anything is allocated
            with self._lock:
                self._evict(keep=model_id, need=need)
        started = time.perf_counter()
        loaded = self._loader(model_id)  # outside the lock: loading takes seconds
        nbytes = int(getattr(loaded, "nbytes", 0) or 0)
        with self._lock:
            self.load_seconds[model_id] = time.perf_counter() - started
            while len(self.load_seconds) > 256:
                del self.load_seconds[next(iter(self.load_seconds))]
            entry = self._entries.get(model_id)
            if entry is None:
                entry = _Entry(loaded, nbytes)
                self._entries[model_id] = entry
                self.loads += 1
            entry.pins += 1
            self._entries.move_to_end(model_id)
            self._evict(keep=model_id)
            return entry

    def _evict(self, keep: str, need: int = 0) -> None:
        total = need + sum(e.nbytes for e in self._entries.values())
        for model_id in list(self._entries):
            if total <= self.max_bytes:
                break
            entry = self._entries[model_id]
            if model_id == keep or entry.pins > 0:
                continue
            del self._entries[model_id]
            total -= entry.nbytes
            self.evictions += 1
            log.info("evicted model %s (%d bytes) from the model LRU", model_id, entry.nbytes)

    def get(self, model_id: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(model_id)
            return entry.loaded if entry is not None else None

    def listing(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: {"bytes": e.nbytes, "pins": e.pins} for k, e in self._entries.items()}

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())


# ---------------------------------------------------------------------------------------------- runner
@dataclass
class _Request(Generic[T]):
    model_id: str
    image: Image.Image
    work: Work
    future: asyncio.Future[T]
    enqueued: float
    nbytes: int = 0  # the image's pixels (8-bit RGB)


@dataclass
class RunnerStats:
    captures: int = 0  # forward passes (batches) run
    images: int = 0  # images captured
    batches: list[int] = field(default_factory=list)  # recent batch sizes (bounded)
    last_batch_seconds: float = 0.0
    mean_batch_seconds: float = 0.0

    def record(self, size: int, seconds: float) -> None:
        self.captures += 1
        self.images += size
        self.batches.append(size)
        del self.batches[:-256]
        self.last_batch_seconds = seconds
        alpha = 0.2 if self.mean_batch_seconds else 1.0
        self.mean_batch_seconds += alpha * (seconds - self.mean_batch_seconds)


class Runner:
    """One device's queue, batcher and model LRU. ``await start()`` before use, ``await stop()`` after."""

    def __init__(
        self,
        device: str = "cpu",
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.005,
        queue_size: int = 64,
        model_memory_bytes: int = 4 << 30,
        loader: Loader | None = None,
        observer: Callable[[str, float, int], None] | None = None,
        allow_random_init: bool = True,
        queue_bytes: int = 256 << 20,
    ) -> None:
        import torch

        self.device_name = device
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.peak_queued_bytes = 0  # the most image bytes that waited at once (tests, bench/memory.py)
        # The default loader refuses, before building, models over the bound and (unless allowed)
        # random-init models of arbitrary timm names; a loader given by a caller (tests) is used as it is.
        limits: dict[str, Any] = {"max_bytes": model_memory_bytes, "allow_random_init": allow_random_init}
        self._loader: Loader = loader or (lambda mid, dev: default_loader(mid, dev, **limits))
        sizer = None if loader is not None else (lambda mid: default_sizer(mid, **limits))
        self.models = ModelLRU(model_memory_bytes, lambda mid: self._loader(mid, self.device), sizer)
        self.stats = RunnerStats()
        self._observer = observer  # (model_id, seconds, batch size) after each batch, for Prometheus
        self._waiting: deque[_Request[Any]] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"runner-{device}")
        self._busy = False
        self._stopping = False
        # Seconds one batch of each model takes on this device (capture + analyses, load excluded), a moving
        # average, and the batch on the device now (model, size): what Retry-After is estimated from.
        self._pace: dict[str, float] = {}
        self._running: tuple[str, int] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._arrived = asyncio.Event()
            self._task = asyncio.create_task(self._batcher(), name=f"runner-{self.device_name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        while self._waiting:
            req = self._waiting.popleft()
            if not req.future.done():
                req.future.set_exception(RunnerStopped("the server is shutting down; retry in a moment"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- queries ---------------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch on the device)."""
        return len(self._waiting)

    @property
    def queued_bytes(self) -> int:
        """Bytes of the images waiting (not counting the batch on the device)."""
        return sum(r.nbytes for r in self._waiting)

    @property
    def load(self) -> int:
        return len(self._waiting) + (1 if self._busy else 0)

    def batch_seconds(self, model_id: str) -> float:
        """Measured seconds per batch of ``model_id``; a model not run yet counts at the runner's mean."""
        return self._pace.get(model_id) or self.stats.mean_batch_seconds or 1.0

    def drain_seconds(self) -> float:
        """How long the requests waiting now (and the batch on the device) take to be worked off: each
        model's batches at its own measured pace, plus a load for each model that is not loaded."""
        counts = Counter(r.model_id for r in self._waiting if not r.future.done())
        total = 0.0
        if self._running is not None:
            total += self.batch_seconds(self._running[0])
        for model_id, n in counts.items():
            total += math.ceil(n / self.max_batch) * self.batch_seconds(model_id)
            if self.models.get(model_id) is None:
                total += self.models.load_seconds.get(model_id, self.batch_seconds(model_id))
        return total

    def retry_after(self) -> int:
        return max(1, math.ceil(self.drain_seconds()))

    # -- work ------------------------------------------------------------------------------------------------
    async def submit(
        self, model_id: str, image: Image.Image, work: Work, *, timeout: float | None = None
    ) -> Any:
        """Queue one image for ``model_id``; ``work(loaded, trace, i)`` runs on the worker thread after it."""
        if self._task is None or self._arrived is None or self._stopping:
            raise RunnerStopped("the model runner is not running; retry in a moment")
        if len(self._waiting) >= self.queue_size:
            raise QueueFull(
                f"{len(self._waiting)} requests already wait for device {self.device_name} "
                f"(queue_size {self.queue_size}); retry later",
                self.retry_after(),
            )
        nbytes = 3 * int(image.width) * int(image.height)
        held = self.queued_bytes
        if self._waiting and held + nbytes > self.queue_bytes:
            raise QueueFull(
                f"the requests waiting for device {self.device_name} hold {held:,} bytes of images; "
                f"at most {self.queue_bytes:,} are allowed (queue_bytes); retry later",
                self.retry_after(),
            )
        loop = asyncio.get_running_loop()
        req: _Request[Any] = _Request(model_id, image, work, loop.create_future(), time.monotonic(), nbytes)
        self._waiting.append(req)
        self.peak_queued_bytes = max(self.peak_queued_bytes, held + nbytes)
        self._arrived.set()
        try:
            if timeout is None:
                return await req.future
            return await asyncio.wait_for(asyncio.shield(req.future), timeout)
        except TimeoutError:
            self._discard(req)
            raise RequestTimeout(
                f"the analysis did not finish within {timeout:g} s (request_timeout_s); the device is busy, "
                "retry later"
            ) from None
        except asyncio.CancelledError:
            self._discard(req)
            raise

    def _discard(self, req: _Request[Any]) -> None:
        """A caller gave up: drop its request so it neither runs nor holds a place in the queue."""
        req.future.cancel()
        with suppress(ValueError):
            self._waiting.remove(req)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on this runner's worker thread (between batches)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def with_model(self, model_id: str, fn: Callable[[Any], T]) -> T:
        """Load (or reuse) ``model_id`` and run ``fn(loaded)`` on the worker thread with the model pinned."""

        def run() -> T:
            with self.models.pinned(model_id) as loaded:
                return fn(loaded)

        return await self.call(run)

    async def warmup(self, model_ids: list[str]) -> dict[str, str]:
        """Load each model and run one dummy forward; returns ``{model_id: "ok" | error message}``."""
        import torch

        from backend.capture import capture

        def dummy(loaded: Any) -> None:
            size = _input_size(loaded)
            pixels = torch.zeros(1, 3, *size, device=self.device)
            capture(loaded.model, pixels, model_id=loaded.spec.id)

        results: dict[str, str] = {}
        for model_id in model_ids:
            try:
                await self.with_model(model_id, dummy)
                results[model_id] = "ok"
            except Exception as exc:  # a model that cannot load must not stop the service
                log.warning("warm-up of %s on %s failed: %s", model_id, self.device_name, exc)
                results[model_id] = str(exc)
        return results

    # -- the batcher -----------------------------------------------------------------------------------------
    async def _batcher(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            model_id = self._waiting[0].model_id
            deadline = loop.time() + self.max_wait_s
            while self._count(model_id) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take(model_id)
            if not batch:
                continue
            self._busy = True
            try:
                await loop.run_in_executor(self._executor, self._run_batch, loop, batch)
            except Exception as exc:  # _run_batch reports per request; this is a last resort
                log.exception("batch for %s failed", model_id)
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(exc)
            finally:
                self._busy = False

    def _count(self, model_id: str) -> int:
        return sum(1 for r in self._waiting if r.model_id == model_id)

    def _take(self, model_id: str) -> list[_Request[Any]]:
        batch: list[_Request[Any]] = []
        keep: deque[_Request[Any]] = deque()
        while self._waiting:
            req = self._waiting.popleft()
            if req.future.done():  # cancelled or timed out while waiting: drop it
                continue
            if req.model_id == model_id and len(batch) < self.max_batch:
                batch.append(req)
            else:
                keep.append(req)
        self._waiting = keep
        return batch

    def _record_pace(self, model_id: str, seconds: float) -> None:
        old = self._pace.pop(model_id, None)
        self._pace[model_id] = seconds if old is None else old + 0.3 * (seconds - old)
        while len(self._pace) > 256:
            del self._pace[next(iter(self._pace))]

    def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request[Any]]) -> None:
        """Worker thread: one capture for the whole batch, then each request's work on its slice."""
        import torch

        from backend.capture import capture
        from backend.imaging import model_preprocessing, preprocess

        model_id = batch[0].model_id

        def settle(req: _Request[Any], result: Any = None, error: BaseException | None = None) -> None:
            def apply() -> None:
                if req.future.done():
                    return
                if error is not None:
                    req.future.set_exception(error)
                else:
                    req.future.set_result(result)

            loop.call_soon_threadsafe(apply)

        self._running = (model_id, len(batch))
        try:
            with self.models.pinned(model_id) as loaded:
                started = time.perf_counter()  # after the load: the pace of batches, not of loads
                prep = model_preprocessing(loaded)  # the one rule (card, timm config, paper)
                pixels = preprocess([r.image for r in batch], prep).to(self.device)
                with torch.inference_mode():
                    trace = capture(loaded.model, pixels, model_id=model_id, preprocessing=prep.as_dict())
                seconds = time.perf_counter() - started
                self.stats.record(len(batch), seconds)
                if self._observer is not None:
                    self._observer(model_id, seconds, len(batch))
                check_finite_trace(trace)
                for i, req in enumerate(batch):
                    try:
                        settle(req, req.work(loaded, trace, i))
                    except Exception as exc:
                        settle(req, error=exc)
                del trace
                self._record_pace(model_id, time.perf_counter() - started)
        except Exception as exc:
            for req in batch:
                settle(req, error=exc)
        finally:
            self._running = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def check_finite_trace(trace: Trace) -> None:
    """NaN or Inf activations (finite weights can still overflow) would become NaN results: a clear error.

    A non-finite value anywhere reaches the last block's output (the residual stream carries it, LayerNorm
    and the softmax spread it to every token), so that one small tensor is checked; only when it fails are
    the states and attentions scanned for the first place to name."""
    import torch

    if bool(torch.isfinite(trace.x_out[-1]).all()):  # one device sync per batch
        return
    places = [
        (f"the output of block {k}" if k else "the patch embedding", x) for k, x in enumerate(trace.x_out)
    ]
    places += [(f"the attention of block {k + 1}", a) for k, a in enumerate(trace.attentions)]
    where = next(
        (w for w, state in places if not bool(torch.isfinite(state).all())), "the last block's output"
    )
    raise NonFiniteResult(
        f"model {trace.model_id} computed NaN or infinite values in {where} for this image; its weights "
        "overflow in float32, so nothing can be analysed: re-import or retrain the model"
    )


def _input_size(loaded: Any) -> tuple[int, int]:
    size = loaded.data_config.get("input_size", (3, 224, 224))
    return int(size[-2]), int(size[-1])


# ---------------------------------------------------------------------------------------------- pool
class RunnerPool:
    """One runner per device; a request goes to a runner that has its model loaded, else the least busy."""

    def __init__(self, runners: list[Runner]) -> None:
        if not runners:
            raise ValueError("a runner pool needs at least one runner")
        self.runners = runners

    def pick(self, model_id: str) -> Runner:
        if len(self.runners) == 1:
            return self.runners[0]
        holding = [r for r in self.runners if r.models.get(model_id) is not None]
        return min(holding or self.runners, key=lambda r: r.load)

    async def start(self) -> None:
        for r in self.runners:
            await r.start()

    async def stop(self) -> None:
        for r in self.runners:
            await r.stop()

    @property
    def depth(self) -> int:
        return sum(r.depth for r in self.runners)

    @property
    def captures(self) -> int:
        return sum(r.stats.captures for r in self.runners)

    def loaded(self) -> dict[str, list[str]]:
        """model id -> devices where it is loaded."""
        out: dict[str, list[str]] = {}
        for r in self.runners:
            for model_id in r.models.listing():
                out.setdefault(model_id, []).append(r.device_name)
        return out
