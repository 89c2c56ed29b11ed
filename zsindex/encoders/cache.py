"""The text-embedding cache interface and an in-memory implementation.

A cache maps ``(model fingerprint, templates digest, label key)`` to one L2-normalised label
embedding. The SQL-backed implementation lives in the store and follows the same Protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["MemoryTextEmbeddingCache", "TextEmbeddingCache"]


@runtime_checkable
class TextEmbeddingCache(Protocol):
    """Where label embeddings are kept between builds.

    Keys come from :func:`zsindex.encoders.label_key`, digests from
    :func:`zsindex.encoders.templates_digest`, fingerprints from ``ModelInfo.fingerprint``.
    """

    def get_many(
        self, model_fingerprint: str, templates_digest: str, keys: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Return the cached vectors for those of ``keys`` that are present (missing: absent)."""
        ...

    def put_many(
        self, model_fingerprint: str, templates_digest: str, items: Mapping[str, np.ndarray]
    ) -> None:
        """Store vectors (float32 ``[dim]`` each) under their keys."""
        ...


class MemoryTextEmbeddingCache:
    """A thread-safe in-process :class:`TextEmbeddingCache` (tests, short-lived tools).

    Attributes:
        gets: number of ``get_many`` calls; ``hits``/``misses``: keys found / not found;
        puts: number of vectors stored.
    """

    def __init__(self) -> None:
        self._data: dict[tuple[str, str, str], np.ndarray] = {}
        self._lock = threading.Lock()
        self.gets = 0
        self.hits = 0
        self.misses = 0
        self.puts = 0

    def __len__(self) -> int:
        return len(self._data)

    def get_many(
        self, model_fingerprint: str, templates_digest: str, keys: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Return copies of the cached vectors present for ``keys``."""
        out: dict[str, np.ndarray] = {}
        with self._lock:
            self.gets += 1
            for key in keys:
                vec = self._data.get((model_fingerprint, templates_digest, key))
                if vec is not None:
                    out[key] = vec.copy()
            self.hits += len(out)
            self.misses += len(set(keys)) - len(out)
        return out

    def put_many(
        self, model_fingerprint: str, templates_digest: str, items: Mapping[str, np.ndarray]
    ) -> None:
        """Store float32 copies of ``items``."""
        with self._lock:
            for key, vec in items.items():
                arr = np.array(vec, dtype=np.float32, copy=True)
                arr.setflags(write=False)
                self._data[(model_fingerprint, templates_digest, key)] = arr
                self.puts += 1

    def clear(self) -> None:
        """Drop everything (counters are kept)."""
        with self._lock:
            self._data.clear()
