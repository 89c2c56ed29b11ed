"""The per-app state shared by the routes (one object, no globals)."""

from __future__ import annotations

import asyncio
import json
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
    _models_ready: set[Any] = field(default_factory=set)

    def start_draining(self) -> None:
        """SIGTERM arrived: ``/readyz`` answers 503 from now on (any thread)."""
        self.draining = True
        self.metrics.set_draining(True)
        self.metrics.set_ready(False)

    def __post_init__(self) -> None:
        from zsindex.service.follow import Follower

        self.follower = Follower(self)

    # -- resolved label sets ----------------------------------------------------------------------

    async def resolve(self, labelset: str) -> LoadedLabelSet:
        """The version of ``labelset`` this replica serves now.

        A held version is taken straight from the classifier's registry (no thread hop, and a
        swap made by any thread is seen by the next request); only a load goes to a worker
        thread. Each request resolves once, so a response never mixes versions.
        """
        held = self.backend.classifier.held(labelset)
        if held is not None:
            return held
        return await asyncio.to_thread(self.backend.resolve, labelset)

    async def ready_model(self, loaded: LoadedLabelSet) -> None:
        """Load the label set's model in a worker thread on first use (never on the loop)."""
        if loaded.model_key not in self._models_ready:
            await asyncio.to_thread(self.load_model, loaded)

    def write_then_refresh(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a write (in a worker thread), then bring this replica's loaded sets up to
        date; a failed refresh is counted, not raised (the write itself succeeded and the
        background loop retries)."""
        result = fn(*args, **kwargs)
        try:
            self.backend.refresh()
        except Exception:
            self.metrics.refreshes.labels("error").inc()
        return result

    def load_model(self, loaded: LoadedLabelSet) -> None:
        """Load the label set's model here and now (a worker or the follower's thread)."""
        key = loaded.model_key
        if key not in self._models_ready:
            self.backend.pipeline.encoder(loaded).load()
            self._models_ready.add(key)

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
