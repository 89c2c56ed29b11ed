"""The real ``LocalBackend`` with observation and fault injection for the service tests.

:class:`RecordingBackend` *is* a ``LocalBackend`` (a real SQLite store, the real ``zsindex-tiny``
encoder, the real classifier). Its pipeline is a :class:`RecordingPipeline`: the real
:class:`~zsindex.classify.pipeline.ImagePipeline` that records what the service's micro-batcher
asked of its model stages (``encode``, ``score``) and can add delays before the real encoder
runs, for the batching, overload and timeout tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.classify.pipeline import ImagePipeline
from zsindex.local import LocalBackend
from zsindex.options import LabelSource

if TYPE_CHECKING:
    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.config import Settings
    from zsindex.encoders.pool import EncoderPool
    from zsindex.options import ClassifyOptions
    from zsindex.results import ClassificationResult

MODEL = "zsindex-tiny"
DIM = 128
"""Embedding width of ``zsindex-tiny``."""

COLORS = ["red", "green", "blue"]
UNREACHABLE_STORE = "postgresql+psycopg://postgres@127.0.0.1:1/none"
"""A store URL nothing listens on: connecting fails at once with ``connection refused``."""


class RecordingPipeline(ImagePipeline):
    """``ImagePipeline`` that records its model stages and can sleep before the real encoder.

    Attributes:
        encode_calls: input count of each ``encode`` call, in order.
        classify_calls: row count of each ``score`` call, in order.
        encode_delay_s: sleep this long before each forward (then encode for real).
        per_image_delay_s: and this long per image of the forward.
    """

    def __init__(self, encoders: EncoderPool, *, fast_decode: bool = False) -> None:
        super().__init__(encoders, fast_decode=fast_decode)
        self.encode_delay_s = 0.0
        self.per_image_delay_s = 0.0
        self.encode_calls: list[int] = []
        self.classify_calls: list[int] = []
        self._calls_lock = threading.Lock()

    def encode(self, loaded: LoadedLabelSet, inputs: Sequence[Any]) -> np.ndarray:
        with self._calls_lock:
            self.encode_calls.append(len(inputs))
        delay = self.encode_delay_s + self.per_image_delay_s * len(inputs)
        if delay > 0:
            time.sleep(delay)
        return super().encode(loaded, inputs)

    def score(
        self,
        loaded: LoadedLabelSet,
        embeddings: np.ndarray,
        names: Sequence[str],
        options: ClassifyOptions,
    ) -> list[ClassificationResult]:
        with self._calls_lock:
            self.classify_calls.append(len(names))
        return super().score(loaded, embeddings, names, options)


class RecordingBackend(LocalBackend):
    """``LocalBackend`` whose pipeline is a :class:`RecordingPipeline`; also counts refreshes.

    The service's micro-batcher takes ``backend.pipeline`` when the app is created, so the
    recording pipeline is installed here, before any app exists. ``encode_calls``,
    ``classify_calls``, ``encode_delay_s`` and ``per_image_delay_s`` are the pipeline's.

    Attributes:
        refresh_calls: how many times ``refresh`` ran.
    """

    pipeline: RecordingPipeline

    def __init__(
        self, settings: Settings, *, encode_delay_s: float = 0.0, per_image_delay_s: float = 0.0
    ) -> None:
        super().__init__(settings)
        self.pipeline = RecordingPipeline(self.encoders, fast_decode=settings.fast_decode)
        self.pipeline.encode_delay_s = encode_delay_s
        self.pipeline.per_image_delay_s = per_image_delay_s
        self.refresh_calls = 0
        self._refresh_lock = threading.Lock()

    @property
    def encode_calls(self) -> list[int]:
        return self.pipeline.encode_calls

    @property
    def classify_calls(self) -> list[int]:
        return self.pipeline.classify_calls

    @property
    def encode_delay_s(self) -> float:
        return self.pipeline.encode_delay_s

    @encode_delay_s.setter
    def encode_delay_s(self, value: float) -> None:
        self.pipeline.encode_delay_s = value

    @property
    def per_image_delay_s(self) -> float:
        return self.pipeline.per_image_delay_s

    @per_image_delay_s.setter
    def per_image_delay_s(self, value: float) -> None:
        self.pipeline.per_image_delay_s = value

    def refresh(self) -> list[str]:
        with self._refresh_lock:
            self.refresh_calls += 1
        return super().refresh()


def recording_backend(settings: Settings, **labelsets: list[str]) -> RecordingBackend:
    """A :class:`RecordingBackend` on ``settings``' store with flat label sets registered
    (``name=[labels]``, real text encoding with ``zsindex-tiny``)."""
    backend = RecordingBackend(settings)
    for name, labels in labelsets.items():
        backend.add_labelset(name, LabelSource(labels=labels).check(), model=MODEL)
    return backend
