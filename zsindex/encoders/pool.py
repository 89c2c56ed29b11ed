"""The encoders of one process, one per (model, pretrained), resolved at most once each.

Resolving a model hashes its weights (seconds for a large checkpoint) and loading it takes
longer still, so the pool never holds its map lock while it does either: a registration that
brings a new model must not stall classification with the models already here. Concurrent
requests for the same new model wait for one resolver (single flight).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from zsindex.config import NetworkSettings, validate_device

if TYPE_CHECKING:
    from zsindex.encoders.encoder import Encoder

ModelKey = tuple[str, str | None]
Resolver = Callable[[str, str | None, str], "Encoder"]


class EncoderPool:
    """Lazily resolved encoders, shared by the catalogue (text) and the pipeline (images).

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (validated here).
        resolver: builds an encoder (default :func:`zsindex.encoders.load_encoder` with
            ``network``).
        network: the download probe's settings (``Settings.network``).
    """

    def __init__(
        self,
        device: str,
        resolver: Resolver | None = None,
        *,
        network: NetworkSettings | None = None,
    ) -> None:
        self.device = validate_device(device)
        self.network = network
        self._resolve = resolver or self._load
        self._lock = threading.Lock()
        self._encoders: dict[ModelKey, Encoder] = {}
        self._resolving: dict[ModelKey, threading.Lock] = {}

    def _load(self, model: str, pretrained: str | None, device: str) -> Encoder:
        from zsindex.encoders import load_encoder

        return load_encoder(model, pretrained, device, network=self.network)

    def get(self, model: str, pretrained: str | None) -> Encoder:
        """The encoder of ``model`` (resolved now if new; weights load on first use)."""
        key = (model, pretrained)
        with self._lock:
            found = self._encoders.get(key)
            if found is not None:
                return found
            key_lock = self._resolving.setdefault(key, threading.Lock())
        with key_lock:  # one resolver per model; the map lock is free meanwhile
            with self._lock:
                found = self._encoders.get(key)
            if found is not None:
                return found
            encoder = self._resolve(model, pretrained, self.device)
            with self._lock:
                self._encoders[key] = encoder
                self._resolving.pop(key, None)
            return encoder

    def loaded(self) -> list[ModelKey]:
        """Models resolved so far."""
        with self._lock:
            return list(self._encoders)

    def clear(self) -> None:
        """Forget every encoder (their weights are freed with the last reference)."""
        with self._lock:
            self._encoders.clear()
