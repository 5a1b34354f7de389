"""Prometheus metrics of one app (own registry, so several apps in one process do not collide).

Counted on the request path: requests and latencies by route template and status. Read at scrape time from
the service (no cost per request): queue depth, batch sizes and times, captures, cache hits / misses / errors
(hot lane and store), loaded models and their bytes, jobs by status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from backend.service.core import AnalysisService

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "vitscope_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "vitscope_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "vitscope_batch_size",
            "Images per captured batch",
            ["device"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "vitscope_batch_seconds",
            "Seconds per batch (preprocess + capture + analyses)",
            ["device"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        pair = self._children.get(key)
        if pair is None:
            pair = (self.requests.labels(method, route, str(status)), self.latency.labels(route))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def batch_observer(self, device: str):  # noqa: ANN201 - the runner's observer callable
        size, seconds = self.batch_size.labels(device), self.batch_seconds.labels(device)

        def observe(_model_id: str, secs: float, n: int) -> None:
            size.observe(n)
            seconds.observe(secs)

        return observe

    def attach(self, service: AnalysisService) -> None:
        self.registry.register(ServiceCollector(service))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ServiceCollector(Collector):
    def __init__(self, service: AnalysisService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service
        depth = GaugeMetricFamily("vitscope_queue_depth", "Requests waiting for a device", labels=["device"])
        captures = CounterMetricFamily("vitscope_captures", "Forward passes run (batches)", labels=["device"])
        images = CounterMetricFamily("vitscope_captured_images", "Images captured", labels=["device"])
        loaded = GaugeMetricFamily("vitscope_models_loaded", "Models loaded", labels=["device"])
        model_bytes = GaugeMetricFamily(
            "vitscope_model_bytes", "Bytes of loaded models", labels=["device", "model"]
        )
        for r in s.pool.runners:
            depth.add_metric([r.device_name], r.depth)
            captures.add_metric([r.device_name], r.stats.captures)
            images.add_metric([r.device_name], r.stats.images)
            listing = r.models.listing()
            loaded.add_metric([r.device_name], len(listing))
            for model_id, entry in listing.items():
                model_bytes.add_metric([r.device_name, model_id], entry["bytes"])
        yield from (depth, captures, images, loaded, model_bytes)

        cache = CounterMetricFamily(
            "vitscope_cache", "Cache lookups by tier and result", labels=["tier", "result"]
        )
        cache.add_metric(["hot", "hit"], s.hot.hits)
        cache.add_metric(["hot", "miss"], s.hot.misses)
        stats = s.store.stats()
        for result, name in (("hit", "hits"), ("miss", "misses"), ("error", "errors")):
            cache.add_metric(["store", result], stats.get(name, 0))
        yield cache
        store = GaugeMetricFamily("vitscope_store", "Store counters and sizes", labels=["backend", "stat"])
        for name, value in stats.items():
            if name not in ("hits", "misses", "errors"):
                store.add_metric([s.store.backend, name], value)
        yield store
        hot = GaugeMetricFamily("vitscope_hot_cache_bytes", "Bytes in the in-process response lane")
        hot.add_metric([], s.hot.nbytes)
        yield hot
        jobs = GaugeMetricFamily("vitscope_jobs", "Jobs by status", labels=["status"])
        for status, n in s.jobs.counts().items():
            jobs.add_metric([status], n)
        yield jobs
        uploads = GaugeMetricFamily("vitscope_uploads", "Uploaded images on disk", labels=["stat"])
        uploads.add_metric(["images"], len(s.images.folder))
        uploads.add_metric(["bytes"], s.images.folder.total_bytes)
        yield uploads
        ready = GaugeMetricFamily("vitscope_ready", "1 once warm-up is done")
        ready.add_metric([], 1 if s.ready else 0)
        yield ready
