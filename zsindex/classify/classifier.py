"""Which version of each label set this process serves: resolve, refresh, forget.

Loaded label sets live in one :class:`~zsindex.index.registry.IndexRegistry`: loads are single
flight per name (concurrent first requests load once) and a new version replaces the old one
atomically, never going backwards. A request resolves once and answers from that one immutable
:class:`~zsindex.classify.loaded.LoadedLabelSet`, so a response never mixes versions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

from zsindex.classify.loaded import LoadedLabelSet
from zsindex.index.registry import Entry, IndexRegistry

VersionKey = Hashable
Loader = Callable[[str], LoadedLabelSet]
CurrentKeys = Callable[[], dict[str, VersionKey]]
KeyOf = Callable[[LoadedLabelSet], VersionKey]


class Classifier:
    """Loaded label sets, kept in step with the store.

    Args:
        load: loads a label set's current version (the catalogue's loader).
        current_keys: every label set's current version key, read from the store.
        key_of: the version key of a loaded label set (comparable with ``current_keys``).
    """

    def __init__(self, load: Loader, current_keys: CurrentKeys, key_of: KeyOf) -> None:
        self._load = load
        self._current_keys = current_keys
        self._key_of = key_of
        self._registry: IndexRegistry[LoadedLabelSet] = IndexRegistry()
        self._generation = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def resolve(self, name: str) -> LoadedLabelSet:
        """The loaded current version of ``name`` (loaded on first use, then held)."""
        held = self._registry.get(name)
        if held is not None:
            return held.index
        with self._lock:
            name_lock = self._loading.setdefault(name, threading.Lock())
        with name_lock:  # one loader per name; the others wait for its result
            held = self._registry.get(name)
            if held is not None:
                return held.index
            with self._lock:
                generation = self._generation
            loaded = self._load(name)
            with self._lock:
                fresh = generation == self._generation
            if fresh:  # a write or refresh meanwhile: answer with it, but do not keep it
                self._registry.install(Entry(name, loaded.version, loaded))
            return loaded

    def forget(self, name: str) -> None:
        """Drop ``name`` (written or deleted here): the next request loads it anew."""
        with self._lock:
            self._generation += 1
        self._registry.remove(name)

    def refresh(self) -> list[str]:
        """Drop loaded label sets whose current version changed in the store (hot swap).

        Returns:
            The names dropped (they load their new version on next use).
        """
        current = self._current_keys()
        dropped = []
        for entry in self._registry.items():
            if current.get(entry.name) != self._key_of(entry.index):
                with self._lock:
                    self._generation += 1
                if self._registry.remove_if(entry.name, entry.version):
                    dropped.append(entry.name)
        return dropped

    def loaded(self) -> dict[str, LoadedLabelSet]:
        """What is loaded now, by name."""
        return {entry.name: entry.index for entry in self._registry.items()}

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._generation += 1
        self._registry.clear()
