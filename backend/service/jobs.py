"""Long work (a set's metrics, an embedding, a model download) as jobs with progress: ``GET /jobs/{id}``.

A job is an asyncio task plus a small record. Jobs with the same key (the same work) are shared while one
runs; finished records are kept for ``history`` jobs, oldest first out. The result itself lives in the cache
(and the hot lane); a job points at it with ``result_url``. With a shared store (Redis) every record is also
published there (``job_key``, at each change of status and at most every ``PUBLISH_EVERY_S`` of progress),
so any process of the service answers ``GET /jobs/{id}`` for a job another one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from backend.cache import Store, decode_json, encode_json
from backend.cache import keys as K
from backend.errors import VitscopeError

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
PUBLISH_EVERY_S = 0.5
RECORD_TTL_S = 24 * 3600


@dataclass
class Job:
    id: str
    kind: str
    key: Hashable
    description: str
    result_url: str | None = None
    status: str = QUEUED
    done: int = 0
    total: int = 1
    error: dict[str, str] | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    on_change: Callable[[Job, bool], None] | None = field(default=None, repr=False)

    def advance(self, done: int | None = None, total: int | None = None) -> None:
        if total is not None:
            self.total = max(1, total)
        self.done = self.done + 1 if done is None else done
        self.updated = time.time()
        if self.on_change is not None:
            self.on_change(self, False)

    @property
    def progress(self) -> float:
        if self.status == SUCCEEDED:
            return 1.0
        return min(1.0, self.done / self.total) if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "description": self.description,
            "status": self.status,
            "progress": round(self.progress, 4),
            "done": self.done,
            "total": self.total,
            "result_url": self.result_url if self.status == SUCCEEDED else None,
            "result": None,
            "error": self.error,
            "created": self.created,
            "updated": self.updated,
        }


class JobManager:
    def __init__(self, history: int = 256, store: Store | None = None) -> None:
        self.history = history
        self.store = store if store is not None and store.backend != "memory" else None
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: dict[Hashable, Job] = {}
        self._published: dict[str, float] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def record(self, job_id: str) -> dict[str, Any] | None:
        """The job's record: from this process, else as another process published it."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job.as_dict()
        if self.store is None:
            return None
        data = await self.store.get(K.job_key(job_id))
        if data is None:
            return None
        try:
            obj = decode_json(data)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    def _publish(self, job: Job, force: bool) -> None:
        if self.store is None:
            return
        now = time.monotonic()
        if not force and now - self._published.get(job.id, 0.0) < PUBLISH_EVERY_S:
            return
        self._published[job.id] = now
        task = asyncio.create_task(
            self.store.set(K.job_key(job.id), encode_json(job.as_dict()), RECORD_TTL_S)
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def list(self) -> list[Job]:
        return list(reversed(self._jobs.values()))

    def ensure(
        self,
        key: Hashable,
        kind: str,
        description: str,
        work: Callable[[Job], Awaitable[Any]],
        *,
        result_url: str | None = None,
        total: int = 1,
    ) -> Job:
        """The running job for ``key``, or a new one running ``work(job)``."""
        job = self._running.get(key)
        if job is not None:
            return job
        job = Job(uuid.uuid4().hex, kind, key, description, result_url=result_url, total=max(1, total))
        job.on_change = self._publish
        self._jobs[job.id] = job
        self._running[key] = job
        job.task = asyncio.create_task(self._run(job, work), name=f"job-{kind}-{job.id[:8]}")
        job.task.add_done_callback(_retrieve)
        self._trim()
        return job

    async def _run(self, job: Job, work: Callable[[Job], Awaitable[Any]]) -> Any:
        job.status = RUNNING
        job.updated = time.time()
        self._publish(job, True)
        try:
            result = await work(job)
        except asyncio.CancelledError:
            job.status, job.error = FAILED, {"code": "cancelled", "message": "the job was cancelled"}
            raise
        except VitscopeError as exc:
            job.status, job.error = FAILED, {"code": exc.code, "message": str(exc)}
            raise
        except Exception as exc:
            log.exception("job %s (%s) failed", job.id, job.description)
            job.status = FAILED
            job.error = {"code": "internal", "message": f"{job.kind} job failed: {type(exc).__name__}: {exc}"}
            raise
        else:
            job.status = SUCCEEDED
            job.done = job.total
            return result
        finally:
            job.updated = time.time()
            self._published.pop(job.id, None)
            self._publish(job, True)
            if self._running.get(job.key) is job:
                del self._running[job.key]

    def _trim(self) -> None:
        while len(self._jobs) > self.history:
            oldest_id, oldest = next(iter(self._jobs.items()))
            if oldest.status in (QUEUED, RUNNING):
                break
            del self._jobs[oldest_id]

    async def stop(self) -> None:
        tasks = [j.task for j in self._running.values() if j.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):  # shutting down: every outcome is fine
                await task
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((QUEUED, RUNNING, SUCCEEDED, FAILED), 0)
        for job in self._jobs.values():
            out[job.status] += 1
        return out


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a job's exception as seen: it is reported through the job record, not the event loop's log."""
    if not task.cancelled():
        task.exception()
