"""Which version of each label set this process serves: resolve, sync, forget.

Loaded label sets live in one :class:`~zsindex.index.registry.IndexRegistry`: loads are single
flight per name (concurrent first requests load once) and a new version replaces the old one
atomically. A request resolves once and answers from that one immutable
:class:`~zsindex.classify.loaded.LoadedLabelSet`, so a response never mixes versions.

:meth:`Classifier.sync` converges to the store warm: a changed version is loaded first and
swapped in only when complete, so requests keep being answered by the old version meanwhile.
It reads the store's own current versions every time, so whatever prompted it (a poll, a
notification naming a deleted or unknown set, the same notification twice) can only move the
process towards what the store says.

A pinned reference ``NAME@N`` resolves to version N exactly. A version is immutable, so it is
held under its own key (``shapes@3``) beside the current versions, never swapped: at most
:data:`MAX_PINNED` of them, the least recently used dropped first (it loads again on its next
use). A pin is dropped when its label set is deleted here, or when a sync finds that the store's
version N is no longer the one loaded (deleted, or deleted and created again elsewhere).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from zsindex.classify.loaded import LoadedLabelSet
from zsindex.index.registry import Entry, IndexRegistry
from zsindex.labels.refs import parse_ref, pinned_key

log = logging.getLogger("zsindex.classify")

VersionKey = Hashable
Loader = Callable[[str], LoadedLabelSet]
CurrentKeys = Callable[[], dict[str, VersionKey]]
KeyOf = Callable[[LoadedLabelSet], VersionKey]
OnInstall = Callable[[LoadedLabelSet, float], None]
"""Called with each version installed and the seconds its load took."""
OnRemove = Callable[[str], None]
VersionLoader = Callable[[str, int], LoadedLabelSet]
VersionKeys = Callable[[Collection[str]], Mapping[tuple[str, int], VersionKey]]
"""Every version of the given label sets, by (name, number), with its version key."""

MAX_PINNED = 8
"""Pinned versions held at once per process (each is a whole label set in memory)."""


@dataclass
class SyncReport:
    """What one :meth:`Classifier.sync` did.

    Attributes:
        installed: names whose new (or first) version was loaded and swapped in.
        removed: names dropped because the store no longer has them.
        failed: names whose load failed, with the error (the old version keeps serving).
        current: every label set the store has, with its version key.
        unpinned: pinned versions (``NAME@N``) dropped because the store no longer has them.
    """

    installed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    current: dict[str, VersionKey] = field(default_factory=dict)
    unpinned: list[str] = field(default_factory=list)


class Classifier:
    """Loaded label sets, kept in step with the store.

    Args:
        load: loads a label set's current version (the catalogue's loader).
        current_keys: every label set's current version key, read from the store.
        key_of: the version key of a loaded label set (comparable with ``current_keys``).
        load_version: loads version N of a label set (pinned references; without it they
            cannot be resolved).
        version_keys: the version keys of every version of some label sets (checks the pins).
    """

    def __init__(
        self,
        load: Loader,
        current_keys: CurrentKeys,
        key_of: KeyOf,
        *,
        load_version: VersionLoader | None = None,
        version_keys: VersionKeys | None = None,
    ) -> None:
        self._load = load
        self._current_keys = current_keys
        self._key_of = key_of
        self._load_version = load_version
        self._version_keys = version_keys
        self._pinned: OrderedDict[str, LoadedLabelSet] = OrderedDict()  # under _lock
        self._registry: IndexRegistry[LoadedLabelSet] = IndexRegistry()
        self._generation = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._on_install: list[OnInstall] = []
        self._on_remove: list[OnRemove] = []

    def add_listener(
        self, on_install: OnInstall | None = None, on_remove: OnRemove | None = None
    ) -> None:
        """Be told of every version installed (with its load time) and every name dropped."""
        if on_install is not None:
            self._on_install.append(on_install)
        if on_remove is not None:
            self._on_remove.append(on_remove)

    def remove_listener(
        self, on_install: OnInstall | None = None, on_remove: OnRemove | None = None
    ) -> None:
        """Undo :meth:`add_listener`."""
        if on_install in self._on_install:
            self._on_install.remove(on_install)
        if on_remove in self._on_remove:
            self._on_remove.remove(on_remove)

    def held(self, name: str) -> LoadedLabelSet | None:
        """The version held for ``name`` (or a pinned ``NAME@N`` in its canonical spelling)
        now, or ``None`` (never loads, never blocks on one)."""
        if "@" in name:
            with self._lock:
                found = self._pinned.get(name)
                if found is not None:
                    self._pinned.move_to_end(name)  # the service's hits count as uses
                return found
        entry = self._registry.get(name)
        return entry.index if entry is not None else None

    def resolve(self, name: str) -> LoadedLabelSet:
        """The loaded current version of ``name``, or version N of a pinned ``NAME@N``
        (loaded on first use, then held)."""
        base, number = parse_ref(name)
        if number is not None:
            return self.resolve_version(base, number)
        held = self._registry.get(name)
        if held is not None:
            return held.index
        loaded = self._load_locked(name, lambda entry: entry is None)
        assert loaded is not None  # loaded whenever nothing was held
        return loaded

    def resolve_version(self, name: str, number: int) -> LoadedLabelSet:
        """Version ``number`` of ``name`` (loaded once, then held; never swapped)."""
        key = pinned_key(name, number)
        with self._lock:
            found = self._pinned.get(key)
            if found is not None:
                self._pinned.move_to_end(key)
                return found
            key_lock = self._loading.setdefault(key, threading.Lock())
        if self._load_version is None:
            raise ValueError("this classifier cannot load pinned versions")
        with key_lock:  # single flight: concurrent first requests load once
            with self._lock:
                found = self._pinned.get(key)
                generation = self._generation
            if found is not None:
                return found
            try:
                loaded = self._load_version(name, number)
            except Exception:
                with self._lock:  # a version that does not exist leaves nothing behind
                    self._loading.pop(key, None)
                raise
            with self._lock:
                if generation == self._generation:  # not raced by a delete in this process
                    self._pinned[key] = loaded
                    while len(self._pinned) > MAX_PINNED:
                        self._pinned.popitem(last=False)
            return loaded

    def pinned(self) -> dict[str, LoadedLabelSet]:
        """The pinned versions held now, by ``NAME@N``."""
        with self._lock:
            return dict(self._pinned)

    def unpin(self, name: str) -> None:
        """Drop every pinned version of ``name`` (deleted here)."""
        with self._lock:
            self._generation += 1
            for key in [k for k, ls in self._pinned.items() if ls.name == name]:
                del self._pinned[key]

    def sync(
        self, names: Iterable[str] | None = None, *, eager: Callable[[str], bool] | None = None
    ) -> SyncReport:
        """Bring loaded label sets to the store's current versions, warm.

        Args:
            names: the label sets to look at (a notification's names); ``None``: all.
            eager: which label sets to load even when nothing holds them yet (preloading);
                default none: only those already loaded are brought up to date.

        Returns:
            What was installed, removed and what failed (a failed load leaves the old version
            serving; the next sync retries it).
        """
        current = self._current_keys()
        report = SyncReport(current=dict(current))
        held = {entry.name: entry for entry in self._registry.items()}
        wanted = set(held) | {n for n in current if eager is not None and eager(n)}
        if names is not None:
            wanted &= set(names)
        for name in sorted(wanted):
            key = current.get(name)
            entry = held.get(name)
            if key is None:
                if entry is not None and self._registry.remove_if(name, entry.version):
                    report.removed.append(name)
                    self._removed(name)
                continue
            if entry is not None and self._key_of(entry.index) == key:
                continue
            try:
                self._load_locked(name, self._differs_from(key))
                report.installed.append(name)
            except Exception as exc:  # one failing set must not stop the others
                report.failed[name] = f"{type(exc).__name__}: {exc}"
                log.warning("could not load label set %r: %s", name, report.failed[name])
        report.unpinned = self._check_pins(names)
        return report

    def _check_pins(self, names: Iterable[str] | None) -> list[str]:
        """Drop the pins of ``names`` (all: ``None``) whose version the store no longer holds
        as loaded; one query, and none while nothing is pinned."""
        pins = self.pinned()
        watched = {ls.name for ls in pins.values()}
        if names is not None:
            watched &= set(names)
        if not watched or self._version_keys is None:
            return []
        keys = self._version_keys(watched)
        dropped = []
        with self._lock:
            for key, ls in pins.items():
                stale = keys.get((ls.name, ls.version)) != self._key_of(ls)
                if ls.name in watched and stale and self._pinned.get(key) is ls:
                    del self._pinned[key]
                    dropped.append(key)
        return dropped

    def refresh(self) -> list[str]:
        """:meth:`sync` of every loaded label set; the names brought up to date or dropped."""
        report = self.sync()
        return report.installed + report.removed

    def forget(self, name: str) -> None:
        """Drop ``name`` (written or deleted here): the next request loads it anew."""
        with self._lock:
            self._generation += 1
        if self._registry.remove(name) is not None:
            self._removed(name)

    def loaded(self) -> dict[str, LoadedLabelSet]:
        """What is loaded now, by name."""
        return {entry.name: entry.index for entry in self._registry.items()}

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._generation += 1
            self._pinned.clear()
        for name in self._registry.names():
            self.forget(name)

    def _differs_from(self, key: VersionKey) -> Callable[[Entry[LoadedLabelSet] | None], bool]:
        return lambda entry: entry is None or self._key_of(entry.index) != key

    def _load_locked(
        self, name: str, needs_load: Callable[[Entry[LoadedLabelSet] | None], bool]
    ) -> LoadedLabelSet | None:
        """Load ``name``'s current version under its name lock when ``needs_load(held)``.

        One loader per name at a time; the others wait and see its result. A load that raced
        with :meth:`forget` (a write in this process) answers its caller but is not kept, so a
        version older than the write is never installed.
        """
        with self._lock:
            name_lock = self._loading.setdefault(name, threading.Lock())
        with name_lock:
            held = self._registry.get(name)
            if not needs_load(held):
                return held.index if held is not None else None
            with self._lock:
                generation = self._generation
            started = time.perf_counter()
            loaded = self._load(name)
            seconds = time.perf_counter() - started
            with self._lock:
                fresh = generation == self._generation
            if fresh:
                self._install(name, loaded, held, seconds)
            return loaded

    def _install(
        self,
        name: str,
        loaded: LoadedLabelSet,
        held: Entry[LoadedLabelSet] | None,
        seconds: float,
    ) -> None:
        # Read under the name lock from the store's current row, so it is the store's answer:
        # a lower number than held means the set was deleted and created again.
        if held is not None and loaded.version < held.index.version:
            self._registry.remove_if(name, held.version)
        self._registry.install(Entry(name, loaded.version, loaded))
        for callback in self._on_install:
            callback(loaded, seconds)

    def _removed(self, name: str) -> None:
        for callback in self._on_remove:
            callback(name)
