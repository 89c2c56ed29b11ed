"""The per-app state shared by the routes (one object, no globals)."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.responses import Response

from zsindex.config import Settings
from zsindex.service.auth import KeyChecker
from zsindex.service.batching import MicroBatcher, ServiceBackend
from zsindex.service.limits import ConcurrencyLimiter, ServiceLimits
from zsindex.service.metrics import ServiceMetrics

INLINE_DECODE_PIXELS = 1_000_000
"""Images up to this many pixels may decode on the event loop (a few ms at most)."""


@dataclass
class ServiceState:
    settings: Settings
    backend: ServiceBackend
    limits: ServiceLimits
    metrics: ServiceMetrics
    batcher: MicroBatcher
    limiter: ConcurrencyLimiter
    keys: KeyChecker
    refresh_interval_s: float
    owns_backend: bool = False
    initial_refresh_done: bool = False
    last_refresh_error: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _load_image: Callable[[Any, str], Any] | None = None
    _resolved: dict[str, Any] = field(default_factory=dict)
    _generation: int = 0
    _preprocess: dict[Any, Callable[[Any], Any]] = field(default_factory=dict)

    # -- resolved label sets (event-loop thread only) ---------------------------------------------

    async def resolve(self, labelset: str) -> Any:
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

    async def image_preprocess(self, loaded: Any) -> Callable[[Any], Any] | None:
        """The label set's model input transform (``backend.image_preprocess``), memoised per
        model; the first call loads the model in a worker thread. ``None`` when the backend has
        no such method (its ``encode_images`` then gets decoded images)."""
        key = loaded.model_key
        found = self._preprocess.get(key)
        if found is None:
            fn = getattr(self.backend, "image_preprocess", None)
            if fn is None:
                return None
            transform: Callable[[Any], Any] = await asyncio.to_thread(fn, loaded)
            self._preprocess[key] = found = transform
        return found

    def invalidate(self) -> None:
        """Forget memoised label sets (after a refresh or a write; event-loop thread only)."""
        self._generation += 1
        self._resolved.clear()

    def load_image(self, source: Any, name: str, *, inline: bool = False) -> Any:
        """``backend.load_image`` with this service's pixel limit.

        With ``inline=True`` (on the event loop) an image whose header claims more than
        :data:`INLINE_DECODE_PIXELS` pixels is not decoded: ``None`` is returned and the caller
        decodes it in a worker thread instead.
        """
        if inline:
            from zsindex.encoders.images import check_image

            header = check_image(
                source, max_pixels=self.limits.max_image_pixels, name_for_errors=name
            )
            if header.width * header.height > INLINE_DECODE_PIXELS:
                return None
        if self._load_image is None:
            fn = self.backend.load_image
            try:
                params = inspect.signature(fn).parameters
            except (TypeError, ValueError):  # pragma: no cover - builtins
                params = {}  # type: ignore[assignment]
            takes_limit = "max_pixels" in params
            max_pixels = self.limits.max_image_pixels
            if takes_limit:
                self._load_image = lambda src, nm: fn(src, nm, max_pixels=max_pixels)  # type: ignore[call-arg]
            else:
                from zsindex.encoders.images import check_image

                def checked(src: Any, nm: str) -> Any:
                    # The service's pixel limit, from the header, before the backend decodes.
                    check_image(src, max_pixels=max_pixels, name_for_errors=nm)
                    return fn(src, nm)

                self._load_image = checked
        return self._load_image(source, name)


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
