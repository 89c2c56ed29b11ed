"""Prometheus metrics on a per-app :class:`~prometheus_client.CollectorRegistry`.

Several apps in one process (tests) never collide because nothing touches the global registry.
docs/metrics.md says what each metric means. All are prefixed ``zsindex_``:

- ``http_requests_total{method,route,status}`` and ``http_request_duration_seconds{method,route}``
  — by route *template* (``/v1/labelsets/{name}``; every served route, ``/openapi.json`` and
  ``/docs`` included), paths no route serves as ``unmatched``, so cardinality stays bounded.
- ``classify_requests_total{labelset,outcome}``, ``classify_duration_seconds{labelset}``,
  ``classify_images_total{labelset}`` — per label set; a name that did not resolve is
  ``<unknown>``.
- ``batch_images`` / ``batch_requests`` — images and requests per encoder forward.
- ``batch_queue_depth`` — classify jobs waiting for the model worker.
- ``inflight_requests`` — classify requests being served.
- ``rejected_total{reason}`` — overload, timeout and body-limit rejections.
- ``labelset_labels{labelset}`` / ``labelset_version{labelset}`` — the store's current versions,
  read from the backend at scrape time.
- ``loaded_version{labelset}`` / ``loaded_load_seconds{labelset}``, ``labelset_load_seconds``,
  ``propagation_lag_seconds`` — what this replica serves, how long loading it took and how long
  after its registration it was served (fed by :meth:`ServiceMetrics.record_load`).
- ``refresh_total{outcome}`` — background hot-swap polls.
- ``ready`` / ``draining`` — 1 while ready to serve / while shutting down.

:class:`MetricsMiddleware` is also where every request gets its ``X-Request-ID`` and its JSON
access-log line (:mod:`zsindex.service.request_log`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zsindex.service import request_log
from zsindex.service.limits import error_body

log = logging.getLogger("zsindex.service")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

UNKNOWN_LABELSET = "<unknown>"
"""The ``labelset`` label of classify requests whose label set did not resolve (bounded)."""
UNMATCHED_ROUTE = "unmatched"
"""The ``route`` label of paths no route serves (bounded)."""


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
        self.classify_requests = Counter(
            "zsindex_classify_requests",
            "Classify requests by label set and outcome",
            ["labelset", "outcome"],
            registry=r,
        )
        self.classify_latency = Histogram(
            "zsindex_classify_duration_seconds",
            "Classify latency by label set",
            ["labelset"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.classify_images = Counter(
            "zsindex_classify_images",
            "Inputs (images or embedding rows) of classify requests by label set",
            ["labelset"],
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
        self.loaded_version = Gauge(
            "zsindex_loaded_version",
            "Version of the label set this replica serves",
            ["labelset"],
            registry=r,
        )
        self.loaded_load_seconds = Gauge(
            "zsindex_loaded_load_seconds",
            "Seconds the load that installed the served version took",
            ["labelset"],
            registry=r,
        )
        self.load_seconds = Histogram(
            "zsindex_labelset_load_seconds",
            "Seconds to load a label-set version",
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.propagation_lag = Histogram(
            "zsindex_propagation_lag_seconds",
            "Seconds from a version's registration in the store to serving it here",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.ready = Gauge("zsindex_ready", "1 while the replica is ready to serve", registry=r)
        self.draining = Gauge("zsindex_draining", "1 while the replica shuts down", registry=r)
        self._sizes_source: Callable[[], Iterable[tuple[str, int, int]]] | None = None
        r.register(_LabelSetCollector(self._sizes))

    def set_labelset_source(self, source: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        """``source()`` yields ``(name, version, num_labels)`` of every current label set."""
        self._sizes_source = source

    def _sizes(self) -> Iterable[tuple[str, int, int]]:
        return self._sizes_source() if self._sizes_source is not None else ()

    def record_classify(
        self, labelset: str | None, outcome: str, inputs: int | None, seconds: float
    ) -> None:
        """One classify request; ``labelset`` is ``None`` unless the name resolved."""
        name = labelset if labelset is not None else UNKNOWN_LABELSET
        self.classify_requests.labels(name, outcome).inc()
        self.classify_latency.labels(name).observe(seconds)
        if inputs:
            self.classify_images.labels(name).inc(inputs)

    def record_load(
        self, labelset: str, version: int, seconds: float, lag_seconds: float | None = None
    ) -> None:
        """A version of ``labelset`` was loaded in ``seconds`` and is now served here.

        ``lag_seconds``: from the version's creation in the store to now (clock skew between
        the store and this host can make it negative: counted as 0).
        """
        self.loaded_version.labels(labelset).set(version)
        self.loaded_load_seconds.labels(labelset).set(seconds)
        self.load_seconds.observe(seconds)
        if lag_seconds is not None:
            self.propagation_lag.observe(max(0.0, lag_seconds))

    def forget_loaded(self, labelset: str) -> None:
        """``labelset`` is no longer served (deleted): drop its gauge series."""
        for gauge in (self.loaded_version, self.loaded_load_seconds):
            with contextlib.suppress(KeyError):  # never loaded here
                gauge.remove(labelset)

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    def set_draining(self, draining: bool) -> None:
        self.draining.set(1 if draining else 0)


def route_paths(app: Any) -> list[str]:
    """The path templates of every route of ``app``, in matching order."""
    routes = list(getattr(getattr(app, "router", None), "routes", ()))
    try:  # FastAPI >= 0.165 keeps included routers nested; this walks into them
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI copies included routes into app.router.routes
        return [str(r.path) for r in routes if isinstance(getattr(r, "path", None), str)]
    return [str(rc.path) for rc in iter_route_contexts(routes) if isinstance(rc.path, str)]


class RouteTemplates:
    """Maps a request to the template of the route that serves its path.

    FastAPI's own routes put themselves in the scope. Plain Starlette routes (``/openapi.json``,
    ``/docs``) do not, and a request answered before routing (the body limit's 413) has none:
    those are matched against the app's templates here, compiled once. Only paths no route
    serves are :data:`UNMATCHED_ROUTE`.
    """

    def __init__(self) -> None:
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def __call__(self, scope: Scope) -> str:
        route: Any = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str) and path:
            return path
        if self._compiled is None:
            # Routes are all added before the first request, when this first runs.
            self._compiled = [(compile_path(p)[0], p) for p in route_paths(scope.get("app"))]
        request_path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        if root and request_path.startswith(root):  # behind a proxy prefix, as Starlette routes
            request_path = request_path[len(root) :]
        for regex, template in self._compiled:
            if regex.match(request_path):
                return template
        return UNMATCHED_ROUTE


_INTERNAL_ERROR = error_body("internal_error", "internal server error")


class MetricsMiddleware:
    """The outermost layer: request id, per-route counts and latency, one access-log line.

    Every answer gets ``X-Request-ID`` (an unhandled error's 500 too: it is answered here,
    before Starlette's outer error middleware, which then only logs). The access log names the
    path without its query string and never any header (:mod:`zsindex.service.request_log`).
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.route_of = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        note, token = request_log.begin(scope)
        id_header = (request_log.HEADER, note.request_id.encode("ascii"))
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
                headers = [h for h in message.get("headers", ()) if h[0] != request_log.HEADER]
                headers.append(id_header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if not started:
                # A client already gone must not mask the original error.
                with contextlib.suppress(Exception):
                    await send_with_id(
                        {
                            "type": "http.response.start",
                            "status": 500,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(_INTERNAL_ERROR)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": _INTERNAL_ERROR})
            raise
        finally:
            elapsed = time.perf_counter() - start
            method = str(scope.get("method", ""))
            route = self.route_of(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            request_log.finish(scope, note, route, status, elapsed)
            request_log.end(token)
