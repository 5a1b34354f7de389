"""Long work (a set's metrics, an embedding, a model download) as jobs with progress: ``GET /jobs/{id}``.

A job is an asyncio task plus a small record. Jobs with the same key (the same work) are shared while one
runs; finished records are kept for ``history`` jobs, oldest first out. The result itself lives in the cache
(and the hot lane); a job points at it with ``result_url``.
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

from backend.errors import VitscopeError

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


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

    def advance(self, done: int | None = None, total: int | None = None) -> None:
        if total is not None:
            self.total = max(1, total)
        self.done = self.done + 1 if done is None else done
        self.updated = time.time()

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
    def __init__(self, history: int = 256) -> None:
        self.history = history
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: dict[Hashable, Job] = {}

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

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
        self._jobs[job.id] = job
        self._running[key] = job
        job.task = asyncio.create_task(self._run(job, work), name=f"job-{kind}-{job.id[:8]}")
        job.task.add_done_callback(_retrieve)
        self._trim()
        return job

    async def _run(self, job: Job, work: Callable[[Job], Awaitable[Any]]) -> Any:
        job.status = RUNNING
        job.updated = time.time()
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

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((QUEUED, RUNNING, SUCCEEDED, FAILED), 0)
        for job in self._jobs.values():
            out[job.status] += 1
        return out


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a job's exception as seen: it is reported through the job record, not the event loop's log."""
    if not task.cancelled():
        task.exception()
