"""The real ``LocalBackend`` with observation and fault injection for the service tests.

:class:`RecordingBackend` *is* a ``LocalBackend`` (a real SQLite store, the real ``zsindex-tiny``
encoder, the real classifier); it only records what the service asked of it and can add delays
before the real encoder runs, for the batching, overload and timeout tests.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.local import LocalBackend

if TYPE_CHECKING:
    from PIL import Image

    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.config import Settings
    from zsindex.results import ClassificationResult

MODEL = "zsindex-tiny"
DIM = 128
"""Embedding width of ``zsindex-tiny``."""

COLORS = ["red", "green", "blue"]
UNREACHABLE_STORE = "postgresql+psycopg://postgres@127.0.0.1:1/none"
"""A store URL nothing listens on: connecting fails at once with ``connection refused``."""


class RecordingBackend(LocalBackend):
    """``LocalBackend`` that records calls and can sleep before the real encoder runs.

    Attributes:
        encode_calls: image count of each ``encode_images`` call, in order.
        classify_calls: row count of each ``classify_embeddings`` call, in order.
        refresh_calls: how many times ``refresh`` ran.
        encode_delay_s: sleep this long before each forward (then encode for real).
        per_image_delay_s: and this long per image of the forward.
    """

    def __init__(
        self, settings: Settings, *, encode_delay_s: float = 0.0, per_image_delay_s: float = 0.0
    ) -> None:
        super().__init__(settings)
        self.encode_delay_s = encode_delay_s
        self.per_image_delay_s = per_image_delay_s
        self.encode_calls: list[int] = []
        self.classify_calls: list[int] = []
        self.refresh_calls = 0
        self._calls_lock = threading.Lock()

    def encode_images(self, loaded: LoadedLabelSet, images: list[Image.Image]) -> np.ndarray:
        with self._calls_lock:
            self.encode_calls.append(len(images))
        delay = self.encode_delay_s + self.per_image_delay_s * len(images)
        if delay > 0:
            time.sleep(delay)
        return super().encode_images(loaded, images)

    def classify_embeddings(
        self,
        loaded: LoadedLabelSet,
        embeddings: np.ndarray,
        image_names: list[str],
        **opts: Any,
    ) -> list[ClassificationResult]:
        with self._calls_lock:
            self.classify_calls.append(len(image_names))
        return super().classify_embeddings(loaded, embeddings, image_names, **opts)

    def refresh(self) -> None:
        with self._calls_lock:
            self.refresh_calls += 1
        super().refresh()


def recording_backend(settings: Settings, **labelsets: list[str]) -> RecordingBackend:
    """A :class:`RecordingBackend` on ``settings``' store with flat label sets registered
    (``name=[labels]``, real text encoding with ``zsindex-tiny``)."""
    backend = RecordingBackend(settings)
    for name, labels in labelsets.items():
        backend.add_labelset(name, labels=labels, model=MODEL)
    return backend
