"""The FastAPI app factory: :func:`create_app`.

Run it with uvicorn (``zsindex serve`` does). Every piece of state lives on the app (no module
globals), so several apps can live in one process.

Background work while the app runs:

- the micro-batcher's collector (when batching is on; see :mod:`zsindex.service.batching`);
- the :class:`~zsindex.service.follow.Follower`: preloads the label sets the replica serves
  (``/readyz`` is 503 until they are loaded), then follows the store — ``LISTEN``/``NOTIFY`` on
  PostgreSQL, polling every ``ZSINDEX_REFRESH_INTERVAL_S`` seconds (default 2; 0 turns polling
  off) — loading each new version before swapping it in. Each request resolves one immutable
  loaded version, so a response never mixes versions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from zsindex import __version__
from zsindex.config import Settings
from zsindex.service import routes_adapt, routes_classify, routes_labelsets, routes_ops
from zsindex.service.auth import KeyChecker
from zsindex.service.batching import MicroBatcher
from zsindex.service.draining import CloseWhileDraining
from zsindex.service.errors import install_error_handlers
from zsindex.service.limits import BodySizeLimitMiddleware, ConcurrencyLimiter, ServiceLimits
from zsindex.service.metrics import MetricsMiddleware, ServiceMetrics
from zsindex.service.schemas import ClassifyJsonRequest, ClassifyMultipartRequest
from zsindex.settings_types import BatchingConfig

if TYPE_CHECKING:
    from zsindex.local import LocalBackend

log = logging.getLogger("zsindex.service")

DESCRIPTION = """Zero-shot image classification with CLIP label sets stored in SQL.

Writes need `Authorization: Bearer <key>` (a key from `ZSINDEX_API_KEYS`); keys in the query
string are refused. Every error answer is `{"code", "message"}`.

Extensions beyond DESIGN.md: `GET /v1/labelsets/{name}/history`,
`GET|PUT /v1/labelsets/{name}/embeddings` (names + base64 little-endian matrix),
`GET /v1/labelsets/{name}/tree` (parents as row indices, ranks), `GET /v1/limits`.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state.zs
    await state.batcher.start()
    state.follower.start()
    try:
        yield
    finally:
        await asyncio.to_thread(state.follower.stop)
        await state.batcher.stop()
        if state.owns_backend:
            state.backend.close()


def _labelset_sizes(backend: LocalBackend) -> Iterable[tuple[str, int, int]]:
    for info in backend.labelsets():
        yield info.name, int(info.version), int(info.num_labels)


def _install_openapi(app: FastAPI) -> None:
    """Add the two classify request bodies (referenced by ``openapi_extra``) to components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (ClassifyJsonRequest, ClassifyMultipartRequest):
                extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in extra.pop("$defs", {}).items():
                    components.setdefault(name, sub)
                components[model.__name__] = extra
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI documents replacing app.openapi


def create_app(
    settings: Settings,
    backend: LocalBackend | None = None,
    *,
    limits: ServiceLimits | None = None,
    batching: BatchingConfig | bool | None = None,
    refresh_interval_s: float | None = None,
) -> FastAPI:
    """Build the zsindex HTTP app.

    Args:
        settings: the process settings (API keys, auth for reads, store, model, …).
        backend: the engine (default: a new ``LocalBackend(settings)``, closed on shutdown).
        limits: service limits (default: ``settings.limits``).
        batching: a :class:`BatchingConfig`, or ``True``/``False`` to switch micro-batching on
            or off with the other batching settings from ``settings.batching`` (default:
            ``settings.batching`` as it is).
        refresh_interval_s: seconds between polls of the store for new versions (default
            ``settings.refresh_interval_s``; 0: no polling, only the start-up load and, on
            PostgreSQL, notifications).

    Returns:
        The app; serve it with uvicorn.
    """
    from zsindex.service.state import ServiceState

    owns_backend = backend is None
    if backend is None:
        from zsindex.local import LocalBackend

        backend = LocalBackend(settings)
    limits = limits or settings.limits
    if isinstance(batching, BatchingConfig):
        batch_config = batching
    else:
        batch_config = settings.batching
        if batching is not None:
            batch_config = dataclasses.replace(batch_config, enabled=batching)
    if refresh_interval_s is None:
        refresh_interval_s = settings.refresh_interval_s

    metrics = ServiceMetrics()
    engine = backend
    metrics.set_labelset_source(lambda: _labelset_sizes(engine))
    state = ServiceState(
        settings=settings,
        backend=engine,
        limits=limits,
        metrics=metrics,
        batcher=MicroBatcher(engine.pipeline, batch_config, metrics),
        limiter=ConcurrencyLimiter(limits.max_concurrency),
        keys=KeyChecker(settings.api_keys),
        refresh_interval_s=refresh_interval_s,
        owns_backend=owns_backend,
    )

    app = FastAPI(
        title="zsindex",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.zs = state
    install_error_handlers(app)
    app.include_router(routes_ops.build_router(state))
    app.include_router(routes_classify.build_router(state))
    app.include_router(routes_labelsets.build_router(state))
    app.include_router(routes_adapt.build_router(state))
    # Last added is outermost: metrics see every answer, the 413s of the body limit included.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(CloseWhileDraining, draining=lambda: state.draining)
    _install_openapi(app)
    return app
