"""The typed groups of settings that :class:`zsindex.config.Settings` holds.

Plain frozen dataclasses with their defaults and nothing else: no environment reading (that is
:mod:`zsindex.config`'s job) and no imports beyond the standard library, so this module sits in
the bottom layer with ``config``. The service re-exports :class:`ServiceLimits`
(``zsindex.service.limits``) and :class:`BatchingConfig` (``zsindex.service.batching``); the
encoders' reachability probe takes a :class:`NetworkSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["MIB", "BatchingConfig", "NetworkSettings", "ServiceLimits", "ServingConfig"]

MIB = 1024 * 1024

DEFAULT_BEAM_TOLERANCE = 1e-3
"""Without ``beam``, each level keeps nodes until the path probability it drops is at most this
(split over the levels); ``ZSINDEX_BEAM_TOLERANCE`` sets it."""

HF_ENDPOINT_DEFAULT = "https://huggingface.co"


@dataclass(frozen=True)
class ServiceLimits:
    """Limits of the HTTP service (environment variable in brackets).

    Attributes:
        max_body_bytes: largest request body, counted while streaming
            (``ZSINDEX_MAX_BODY_BYTES``, default 32 MiB).
        max_images_per_request: most images in one classify request
            (``ZSINDEX_MAX_IMAGES_PER_REQUEST``, default 64).
        max_embeddings_per_request: most embedding rows in one classify request
            (``ZSINDEX_MAX_EMBEDDINGS_PER_REQUEST``, default 4096).
        max_image_pixels: most pixels of one image, checked from its header before decoding
            (``ZSINDEX_MAX_IMAGE_PIXELS``, default 64 M).
        max_concurrency: most classify requests in flight; more are answered 503 at once
            (``ZSINDEX_MAX_CONCURRENCY``, default 32).
        request_timeout_s: longest a classify request may wait for and run its model work
            before it is answered 503 (``ZSINDEX_REQUEST_TIMEOUT_S``, default 60).
        max_form_fields: most non-file multipart fields (not configurable by environment).
    """

    max_body_bytes: int = 32 * MIB
    max_images_per_request: int = 64
    max_embeddings_per_request: int = 4096
    max_image_pixels: int = 64_000_000
    max_concurrency: int = 32
    request_timeout_s: float = 60.0
    max_form_fields: int = 32

    def with_overrides(self, **changes: Any) -> ServiceLimits:
        """A copy with some fields replaced (``None`` values ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class BatchingConfig:
    """Micro-batching settings.

    Attributes:
        enabled: merge concurrent requests (``ZSINDEX_BATCHING``, default on).
        max_batch_images: most images in one encoder forward (``ZSINDEX_BATCH_MAX_IMAGES``, 32).
        max_wait_s: longest the first job of a batch waits for company while other requests
            are on their way (``ZSINDEX_BATCH_MAX_WAIT_MS``, default 4 ms; a lone request
            never waits).
        model_workers: threads running model work (``ZSINDEX_MODEL_WORKERS``, default 1: one
            forward at a time, each using all of torch's intra-op threads).
        torch_threads: torch intra-op threads, set when the batcher starts
            (``ZSINDEX_TORCH_THREADS``; default ``None``: torch's own default, one per core).
    """

    enabled: bool = True
    max_batch_images: int = 32
    max_wait_s: float = 0.004
    model_workers: int = 1
    torch_threads: int | None = None


@dataclass(frozen=True)
class ServingConfig:
    """How a service replica starts, follows the store and stops.

    Attributes:
        preload: label sets loaded before ``/readyz`` says ready (``ZSINDEX_PRELOAD``, comma
            separated; default ``None``: every label set in the store, and new ones as they
            appear; ``()`` (``ZSINDEX_PRELOAD=-``): none, each loads on first use).
        notify: on PostgreSQL, follow writes through ``LISTEN``/``NOTIFY`` (``ZSINDEX_NOTIFY``,
            default on; polling every ``ZSINDEX_REFRESH_INTERVAL_S`` stays as the fallback).
        drain_s: after SIGTERM, seconds the replica keeps serving (``/readyz`` already 503) so
            load balancers stop sending before it stops accepting (``ZSINDEX_DRAIN_S``,
            default 5).
        shutdown_timeout_s: after the drain, the longest in-flight requests may take before
            the process exits anyway (``ZSINDEX_SHUTDOWN_TIMEOUT_S``, default 30).
    """

    preload: tuple[str, ...] | None = None
    notify: bool = True
    drain_s: float = 5.0
    shutdown_timeout_s: float = 30.0

    def preloads(self, name: str) -> bool:
        """Whether ``name`` is loaded eagerly (at start and whenever it changes)."""
        return self.preload is None or name in self.preload


@dataclass(frozen=True)
class NetworkSettings:
    """What the quick reachability probe before a weights download needs to know.

    These mirror variables that huggingface_hub and urllib read themselves, so the probe
    answers as the download would.

    Attributes:
        offline: never probe, answer "unreachable" (``ZSINDEX_OFFLINE``, ``HF_HUB_OFFLINE`` or
            ``TRANSFORMERS_OFFLINE`` set to 1; default off).
        hf_endpoint: the Hugging Face Hub's address (``HF_ENDPOINT``, default huggingface.co).
        http_proxy: proxy for ``http`` URLs (``http_proxy``, then ``HTTP_PROXY``; "": none).
        https_proxy: proxy for ``https`` URLs (``https_proxy``, then ``HTTPS_PROXY``).
        all_proxy: proxy for any scheme without its own (``all_proxy``, then ``ALL_PROXY``).
    """

    offline: bool = False
    hf_endpoint: str = HF_ENDPOINT_DEFAULT
    http_proxy: str = ""
    https_proxy: str = ""
    all_proxy: str = ""

    def proxy_for(self, scheme: str) -> str:
        """The proxy URL for ``scheme`` (``http`` or ``https``), or ``""`` for a direct line."""
        own = {"http": self.http_proxy, "https": self.https_proxy}.get(scheme.lower(), "")
        return own or self.all_proxy
