"""Loaded indexes by label-set name, swapped atomically when a new version arrives.

A reader calls :meth:`IndexRegistry.get` (or :meth:`IndexRegistry.get_or_load`) once per request
and uses the returned :class:`Entry` for the whole request: an entry is immutable and pairs an
index with the version it was built from, so a request never mixes two versions even if a swap
happens meanwhile; the old index stays alive until its last reader drops it.

Integer versions never go backwards: installing a lower version than the one held is refused
(the caller still gets its own entry), so a slow loader of an old version cannot undo a newer
swap. Loads are single-flight per name: concurrent misses for the same version load once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """An immutable (version, index) pair.

    Attributes:
        name: label-set name.
        version: the label-set version the index was built from (int id or digest string).
        index: the loaded value (a search index, or a whole loaded label set).
        info: anything else that belongs to this version (label names, logit scale …).
    """

    name: str
    version: Hashable
    index: T
    info: dict[str, Any] = field(default_factory=dict, compare=False)


def _older(new: Hashable, old: Hashable) -> bool:
    return isinstance(new, int) and isinstance(old, int) and new < old


class IndexRegistry(Generic[T]):
    """Thread-safe map of label-set name to its current :class:`Entry` (``IndexRegistry()``
    holds search indexes; ``IndexRegistry[LoadedLabelSet]()`` whole loaded label sets)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry[T]] = {}
        self._loading: dict[str, threading.Lock] = {}

    def get(self, name: str) -> Entry[T] | None:
        """The current entry for ``name`` (hold it for the whole request), or ``None``."""
        with self._lock:
            return self._entries.get(name)

    def install(self, entry: Entry[T]) -> Entry[T]:
        """Make ``entry`` current for its name, unless a newer int version is held.

        Returns:
            ``entry`` itself (installed, or refused as older: the caller may still use it).
        """
        with self._lock:
            held = self._entries.get(entry.name)
            if held is None or not _older(entry.version, held.version):
                self._entries[entry.name] = entry
        return entry

    def swap(
        self, name: str, version: Hashable, index: T, info: dict[str, Any] | None = None
    ) -> Entry[T]:
        """Install a new (version, index) for ``name``; see :meth:`install`."""
        return self.install(Entry(name, version, index, dict(info or {})))

    def remove(self, name: str) -> Entry[T] | None:
        """Forget ``name`` (e.g. its label set was deleted); return what was held."""
        with self._lock:
            return self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Names currently held."""
        with self._lock:
            return sorted(self._entries)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()

    def get_or_load(
        self,
        name: str,
        version: Hashable,
        loader: Callable[[], T | tuple[T, dict[str, Any]]],
    ) -> Entry[T]:
        """The entry for ``name`` at ``version``, loading it at most once across threads.

        Args:
            name: label-set name.
            version: the version the caller needs (the store's current version).
            loader: builds the index (from the cache or the store); may also return
                ``(index, info)``. Called without the registry lock, one loader per name at a
                time.
        """
        held = self.get(name)
        if held is not None and held.version == version:
            return held
        with self._lock:
            name_lock = self._loading.setdefault(name, threading.Lock())
        with name_lock:
            held = self.get(name)
            if held is not None and held.version == version:
                return held
            loaded = loader()
            if isinstance(loaded, tuple):
                value, info = loaded
            else:
                value, info = loaded, {}
            return self.install(Entry(name, version, value, dict(info)))

    def items(self) -> list[Entry[T]]:
        """Every entry held."""
        with self._lock:
            return list(self._entries.values())

    def remove_if(self, name: str, version: Hashable) -> bool:
        """Forget ``name`` if it is still held at ``version`` (a refresh that saw it change)."""
        with self._lock:
            held = self._entries.get(name)
            if held is None or held.version != version:
                return False
            del self._entries[name]
            return True
