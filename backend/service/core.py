"""The service the API serves: one object per resource, sharing the store, the hot lane and the runners.

images    uploads, meta, bytes, decoded pixels          (backend.service.images)
models    catalogue, availability, ranges, downloads    (backend.service.models)
captures  one capture per (image, model), stored        (backend.service.bundle)
views     per-image metrics, attention maps, spectra    (backend.service.views)
sets      sets, set metrics, embeddings                 (backend.service.sets)
jobs      long work with progress                       (backend.service.jobs)
"""

from __future__ import annotations

import asyncio
import logging
import time

from backend.cache import Store
from backend.config import Settings
from backend.errors import VitscopeError
from backend.runner import RunnerPool
from backend.service.bundle import Captures
from backend.service.hot import HotCache
from backend.service.images import ImageService
from backend.service.jobs import JobManager
from backend.service.models import ModelService
from backend.service.sets import SetService
from backend.service.views import ViewService

log = logging.getLogger(__name__)


class AnalysisService:
    def __init__(self, settings: Settings, store: Store, pool: RunnerPool) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.hot = HotCache(settings.hot_cache_bytes)
        self.jobs = JobManager(settings.job_history, store)
        self.images = ImageService(settings, store)
        self.models = ModelService(settings, pool, self.jobs)
        self.captures = Captures(settings, store, pool, self.images)
        self.views = ViewService(store, self.hot, self.images, self.models, self.captures)
        self.sets = SetService(settings, store, self.hot, self.jobs, self.images, self.models, self.captures)
        self.ready = False
        self.warmup_report: dict[str, str] = {}

    @property
    def default_model(self) -> str:
        return self.models.default_model

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
                    await self.models.info(model_id)
                except VitscopeError as exc:
                    report[model_id] = str(exc)
        self.warmup_report = report
        self.ready = True
        log.info("warm-up done in %.1f s: %s", time.perf_counter() - started, report)

    async def settle(self) -> None:
        """Wait until every computed result is in the store (tests, shutdown)."""
        await self.captures.settle()

    async def stop(self) -> None:
        await self.settle()
        await self.jobs.stop()
        await self.pool.stop()
        await self.store.close()
