"""Prometheus metrics on a per-app :class:`~prometheus_client.CollectorRegistry`.

Several apps in one process (tests) never collide because nothing touches the global registry.

Metrics (all prefixed ``zsindex_``):

- ``http_requests_total{method,route,status}`` and ``http_request_duration_seconds{method,route}``
  — by route *template* (``/v1/labelsets/{name}``), so cardinality stays bounded.
- ``batch_images`` / ``batch_requests`` — images and requests per encoder forward.
- ``batch_queue_depth`` — classify jobs waiting for the model worker.
- ``inflight_requests`` — classify requests being served.
- ``rejected_total{reason}`` — overload, timeout and body-limit rejections.
- ``labelset_labels{labelset}`` / ``labelset_version{labelset}`` — index sizes, read from the
  backend at scrape time.
- ``refresh_total{outcome}`` — background hot-swap polls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("zsindex.service.access")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _LabelSetCollector(Collector):
    """Reports label-set sizes by calling ``source()`` at scrape time."""

    def __init__(self, source: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = GaugeMetricFamily(
            "zsindex_labelset_labels", "Labels in the current version", labels=["labelset"]
        )
        versions = GaugeMetricFamily(
            "zsindex_labelset_version", "Current version number", labels=["labelset"]
        )
        try:
            rows = list(self._source())
        except Exception:  # a scrape must not fail because the store is down
            log.debug("label-set sizes unavailable for /metrics", exc_info=True)
            rows = []
        for name, version, num_labels in rows:
            labels.add_metric([name], float(num_labels))
            versions.add_metric([name], float(version))
        yield labels
        yield versions

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class ServiceMetrics:
    """The metrics of one app, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "zsindex_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "zsindex_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_images = Histogram(
            "zsindex_batch_images", "Images per encoder forward", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "zsindex_batch_requests",
            "Requests merged into one model batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "zsindex_batch_queue_depth", "Classify jobs waiting for the model worker", registry=r
        )
        self.inflight = Gauge(
            "zsindex_inflight_requests", "Classify requests being served", registry=r
        )
        self.rejected = Counter(
            "zsindex_rejected", "Requests refused by a limit", ["reason"], registry=r
        )
        self.refreshes = Counter(
            "zsindex_refresh", "Background label-set refresh polls", ["outcome"], registry=r
        )
        self._sizes_source: Callable[[], Iterable[tuple[str, int, int]]] | None = None
        r.register(_LabelSetCollector(self._sizes))

    def set_labelset_source(self, source: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        """``source()`` yields ``(name, version, num_labels)`` of every current label set."""
        self._sizes_source = source

    def _sizes(self) -> Iterable[tuple[str, int, int]]:
        return self._sizes_source() if self._sizes_source is not None else ()


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class MetricsMiddleware:
    """Counts requests and latency per route template and writes one access-log line.

    The access log names the path without its query string (a key sent by mistake in a URL must
    never reach a log) and never any header.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed = time.perf_counter() - start
            method = str(scope.get("method", ""))
            route = _route_of(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            log.info("%s %s %d %.1fms", method, scope.get("path", ""), status, elapsed * 1000)
