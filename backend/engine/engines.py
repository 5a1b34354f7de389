"""Where the two stages run. ``LocalEngine``: the models in this process, batches read and decoded ahead in
threads. ``RayEngine``: ``prepare_batch`` as Ray tasks on CPU workers, ``Worker`` as an actor pool (one per
GPU, or CPU actors), the pixels passed from task to actor through Ray's object store, never via the driver.

Plain Ray tasks and actors rather than Ray Data: the driver keeps a fixed window of batches in flight (memory
bounded by window x batch), results come back in dataset order (the Parquet file and ``metrics.json`` are
the same for both engines), resuming is a filter on the references before anything is submitted, and the
only dependency is Ray core. Both engines share ``submit`` / ``result`` / ``set_data`` / ``figure_data`` /
``close``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.analysis.modern import ModernValues
from backend.analysis.representation import PositionSums
from backend.analysis.summary import PerImage
from backend.engine.sources import ImageRef
from backend.engine.worker import BatchMeta, ModelInfo, Worker, prepare_batch
from backend.errors import BadRequest, VitscopeError

Result = tuple[BatchMeta, dict[str, tuple[list[int], PerImage, ModernValues]]]
SetData = tuple[list[str], dict[str, tuple[np.ndarray, PositionSums]]]  # the paths read, per model its data


@dataclass(frozen=True)
class WorkerArgs:
    model_ids: tuple[str, ...]
    device: str  # auto | cpu | cuda
    mode: str  # preprocessing mode
    download: bool


class LocalEngine:
    """Everything in this process: one Worker, ``readers`` threads reading and decoding ahead."""

    name = "local"

    def __init__(self, args: WorkerArgs, readers: int = 2) -> None:
        self.worker = Worker(args.model_ids, args.device, args.mode, args.download)
        self.device, self.infos = self.worker.describe()
        self.window = readers + 1
        self._pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="vitscope-read")

    def submit(self, refs: Sequence[ImageRef], wanted: Sequence[frozenset[str]]) -> Any:
        future: Future[tuple[BatchMeta, list[np.ndarray]]] = self._pool.submit(
            prepare_batch, refs, self.worker.preprocessings()
        )
        return future, wanted

    def result(self, handle: Any) -> Result:
        future, wanted = handle
        meta, pixels = future.result()
        return meta, (self.worker.analyze(meta, pixels, wanted) if meta.paths else {})

    def set_data(self, refs: Sequence[ImageRef]) -> SetData:
        meta, pixels = prepare_batch(refs, self.worker.preprocessings())
        return meta.paths, (self.worker.set_data(pixels) if meta.paths else {})

    def figure_data(self, refs: Sequence[ImageRef]) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
        _, pixels = prepare_batch(refs, self.worker.preprocessings())
        return self.worker.figure_data(pixels)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _raise_cause(exc: Exception) -> None:
    """A VitscopeError raised inside a task or actor, re-raised as itself (its message is the user's)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, VitscopeError):
        raise cause from None


class RayEngine:
    """``prepare_batch`` tasks and a pool of ``Worker`` actors on a Ray cluster (local without address)."""

    name = "ray"

    def __init__(
        self,
        args: WorkerArgs,
        address: str | None = None,
        actors: int | None = None,
        actor_cpus: float = 1.0,
        num_cpus: int | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a dependency
            raise BadRequest(f"--engine ray needs the ray package ({exc}); pip install 'ray>=2.40'") from None
        self.ray: Any = ray  # typed loosely: Ray's remote handles are dynamic
        self._started = not ray.is_initialized()
        if self._started:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        self.actors: list[Any] = []
        try:
            described = self._start(args, actors, actor_cpus)
        except BaseException:
            self.close()  # a Ray instance started here does not outlive a failed start
            raise
        count = len(self.actors)
        self.device = f"{described[0][0]} x {count} Ray actor(s)"
        self.infos: dict[str, ModelInfo] = described[0][1]
        self.window = 2 * count + 2
        self._next = 0

    def _start(self, args: WorkerArgs, actors: int | None, actor_cpus: float) -> list[Any]:
        """The actor pool (one per GPU, or CPU actors), each loading every model; what each reports."""
        ray = self.ray
        gpus = int(ray.cluster_resources().get("GPU", 0))
        on_gpu = args.device != "cpu" and gpus > 0
        if args.device == "cuda" and not gpus:
            raise BadRequest("--device cuda was asked for, but the Ray cluster has no GPU; use cpu or auto")
        count = actors or (gpus if on_gpu else 1)
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if not on_gpu and count * actor_cpus >= cpus:
            raise BadRequest(
                f"{count} actor(s) x {actor_cpus:g} CPU would take all {cpus:g} CPUs of the Ray cluster and "
                "leave none to decode images: lower --actors or --actor-cpus"
            )
        threads = max(1, int(actor_cpus))
        options: dict[str, Any] = {"num_cpus": actor_cpus, "num_gpus": 1 if on_gpu else 0}
        remote_worker: Any = ray.remote(Worker).options(**options)
        device = "cuda" if on_gpu else "cpu"
        self.actors = [
            remote_worker.remote(args.model_ids, device, args.mode, args.download, threads)
            for _ in range(count)
        ]
        self._prepare: Any = ray.remote(num_cpus=1, num_returns=2)(prepare_batch)
        try:
            described = ray.get([a.describe.remote() for a in self.actors])
            self._preps = ray.get(self.actors[0].preprocessings.remote())
        except ray.exceptions.RayError as exc:
            _raise_cause(exc)
            raise
        return described

    def submit(self, refs: Sequence[ImageRef], wanted: Sequence[frozenset[str]]) -> Any:
        meta, pixels = self._prepare.remote(list(refs), self._preps)
        actor = self.actors[self._next % len(self.actors)]
        self._next += 1
        return meta, actor.analyze.remote(meta, pixels, list(wanted))

    def result(self, handle: Any) -> Result:
        try:
            meta, values = self.ray.get(list(handle))
        except self.ray.exceptions.RayError as exc:
            _raise_cause(exc)
            raise
        return meta, values

    def set_data(self, refs: Sequence[ImageRef]) -> SetData:
        meta_ref, pixels = self._prepare.remote(list(refs), self._preps)
        meta: BatchMeta = self.ray.get(meta_ref)
        if not meta.paths:
            return [], {}
        return meta.paths, self.ray.get(self.actors[0].set_data.remote(pixels))

    def figure_data(self, refs: Sequence[ImageRef]) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
        _, pixels = self._prepare.remote(list(refs), self._preps)
        return self.ray.get(self.actors[0].figure_data.remote(pixels))

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self._started:
            self.ray.shutdown()


def default_readers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) - 1))
