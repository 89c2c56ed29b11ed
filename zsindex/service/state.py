"""The per-app state shared by the routes (one object, no globals)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from starlette.responses import Response

from zsindex.config import Settings
from zsindex.service.auth import KeyChecker
from zsindex.service.batching import MicroBatcher
from zsindex.service.limits import ConcurrencyLimiter, ServiceLimits
from zsindex.service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.local import LocalBackend
    from zsindex.service.follow import Follower

T = TypeVar("T")

INLINE_DECODE_PIXELS = 1_000_000
"""Images up to this many pixels may decode on the event loop (a few ms at most)."""


@dataclass
class ServiceState:
    settings: Settings
    backend: LocalBackend
    limits: ServiceLimits
    metrics: ServiceMetrics
    batcher: MicroBatcher
    limiter: ConcurrencyLimiter
    keys: KeyChecker
    refresh_interval_s: float
    owns_backend: bool = False
    draining: bool = False
    """Set when SIGTERM arrives: ``/readyz`` answers 503 from then on."""
    follower: Follower = field(init=False)
    _resolved: dict[str, LoadedLabelSet] = field(default_factory=dict)
    _generation: int = 0
    _models_ready: set[Any] = field(default_factory=set)

    def start_draining(self) -> None:
        """SIGTERM arrived: ``/readyz`` answers 503 from now on (any thread)."""
        self.draining = True
        self.metrics.set_draining(True)
        self.metrics.set_ready(False)

    def __post_init__(self) -> None:
        from zsindex.service.follow import Follower

        self.follower = Follower(self)

    # -- resolved label sets (event-loop thread only) ---------------------------------------------

    async def resolve(self, labelset: str) -> LoadedLabelSet:
        """``backend.resolve`` with a per-app memo, so a warm request needs no thread hop.

        The memo holds exactly what the backend resolved and is dropped after every
        ``backend.refresh()`` and every write (:meth:`invalidate`), so it never serves a version
        the backend itself would not; a resolve that raced with an invalidation is not stored
        (versions never go backwards). Must be called on the event loop.
        """
        loaded = self._resolved.get(labelset)
        if loaded is not None:
            return loaded
        generation = self._generation
        loaded = await asyncio.to_thread(self.backend.resolve, labelset)
        if generation == self._generation:
            self._resolved[labelset] = loaded
        return loaded

    async def ready_model(self, loaded: LoadedLabelSet, *, background: bool = False) -> None:
        """Load the label set's model in a worker thread on first use (never on the loop);
        with ``background``, in a daemon thread that shutdown does not wait for."""
        key = loaded.model_key
        if key not in self._models_ready:

            def load() -> None:
                self.backend.pipeline.encoder(loaded).load()

            await (in_daemon_thread(load) if background else asyncio.to_thread(load))
            self._models_ready.add(key)

    def invalidate(self) -> None:
        """Forget memoised label sets (after a refresh or a write; event-loop thread only)."""
        self._generation += 1
        self._resolved.clear()

    def prepare(
        self,
        loaded: LoadedLabelSet,
        source: bytes,
        name: str,
        *,
        fast_decode: bool,
        inline: bool = False,
    ) -> Any:
        """The pipeline's ``prepare`` stage (decode + the model's preprocessing) with this
        service's pixel limit.

        With ``inline=True`` (on the event loop) an image whose header claims more than
        :data:`INLINE_DECODE_PIXELS` pixels is not decoded: ``None`` is returned and the caller
        prepares it in a worker thread instead.
        """
        pipeline = self.backend.pipeline
        max_pixels = self.limits.max_image_pixels
        if inline:
            from zsindex.encoders.images import check_image

            header = check_image(source, max_pixels=max_pixels, name_for_errors=name)
            if header.width * header.height > INLINE_DECODE_PIXELS:
                return None
        return pipeline.prepare(
            loaded, source, name, fast_decode=fast_decode, max_pixels=max_pixels
        )


async def in_daemon_thread(fn: Callable[[], T]) -> T:
    """``await fn()`` run in a new daemon thread.

    For background work (preloading, following the store) that a shutdown must not wait for:
    ``asyncio.to_thread``'s pool threads are joined when the process exits, so a model or a
    large label set still loading would hold a stopping replica for as long as it takes.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:
            report = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(deliver, lambda: future.set_exception(report))
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, lambda: future.set_result(result))

    threading.Thread(target=run, name="zsindex-background", daemon=True).start()
    return await future


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response that also accepts numpy scalars and arrays."""
    body = json.dumps(
        content, default=_json_default, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )
    return Response(body, status_code=status_code, media_type="application/json")
