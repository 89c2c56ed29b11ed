"""Keep a replica's loaded label sets in step with the store, and say when it is warm.

Three sources ask for a sync; one thread of its own does them, one at a time:

- start-up: the label sets the replica serves (``ZSINDEX_PRELOAD``; default all) are loaded
  before :attr:`Follower.warm` turns true, and with them their models, so ``/readyz`` says
  ready only when a request would be answered without a cold load;
- ``NOTIFY`` (PostgreSQL): a :class:`~zsindex.store.notify.ChangeListener` hands over the
  changed names the moment the writer commits (after a reconnection: "everything");
- polling every ``ZSINDEX_REFRESH_INTERVAL_S`` seconds, the fallback and SQLite's way.

Requests pending while a sync runs are merged into the next one. Every sync re-reads the store,
so the state converges to the store's whatever the notifications say. The event loop is not on
this path: a version is swapped into the classifier's registry by the sync thread and the next
request that resolves it sees it, however busy the loop is. The thread is a daemon, so a
stopping replica never waits for a load in progress.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from zsindex.store.engine import is_sqlite

if TYPE_CHECKING:
    from zsindex.classify.classifier import SyncReport
    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.service.state import ServiceState
    from zsindex.store.notify import ChangeListener

log = logging.getLogger("zsindex.service")

RETRY_S = 1.0
"""Pause before a failed sync (or a failed load in one) is tried again."""


class Follower:
    """The sync thread, the listener and the polling of one app."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.warm = False
        self.last_error: str | None = None
        self.listener: ChangeListener | None = None
        self.missing: list[str] = []
        self._wake = threading.Condition()
        self._pending: set[str] = set()
        self._everything = True  # the start-up load
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool | None:
        """Whether notifications arrive (``None``: not used, e.g. SQLite or turned off)."""
        return None if self.listener is None else self.listener.connected

    def start(self) -> None:
        """Subscribe first (nothing written after this point is missed), then load."""
        self.state.backend.classifier.add_listener(self._installed, self._removed)
        settings = self.state.settings
        url = settings.resolved_database_url
        if settings.serving.notify and not is_sqlite(url):
            from zsindex.store.notify import ChangeListener

            self.listener = ChangeListener(url, self.request, self._connection_changed)
            self.listener.start()
        self._thread = threading.Thread(target=self._run, name="zsindex-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.state.backend.classifier.remove_listener(self._installed, self._removed)
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self.listener is not None:
            self.listener.stop()

    def request(self, names: set[str] | None) -> None:
        """Ask for a sync of ``names`` (``None``: everything); any thread."""
        with self._wake:
            if names is None:
                self._everything = True
            else:
                self._pending |= names
            self._wake.notify()

    # -- the sync thread -----------------------------------------------------------------------

    def _next(self) -> tuple[bool, set[str] | None]:
        """Wait for work: (stopped, the names to sync or ``None`` for everything)."""
        interval = self.state.refresh_interval_s
        with self._wake:
            if not (self._everything or self._pending or self._stopped):
                self._wake.wait(timeout=interval if interval > 0 else None)
                if not (self._everything or self._pending or self._stopped):
                    self._everything = True  # the poll interval passed
            if self._stopped:
                return True, None
            names = None if self._everything else set(self._pending)
            self._everything = False
            self._pending.clear()
            return False, names

    def _run(self) -> None:
        while True:
            stopped, names = self._next()
            if stopped:
                return
            try:
                report = self.state.backend.sync(names, preload=True)
            except Exception as exc:  # the store is down, say: keep what is loaded, retry
                self._failed(exc)
                self._retry_later(names)
                continue
            self._synced(report)
            if report.failed:
                self._retry_later(set(report.failed))
            if not self.warm:
                self._become_warm(report)

    def _retry_later(self, names: set[str] | None) -> None:
        with self._wake:
            self._wake.wait_for(lambda: self._stopped, timeout=RETRY_S)
        if not self._stopped:
            self.request(names)

    def _failed(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.state.metrics.refreshes.labels("error").inc()
        log.warning("label-set sync failed: %s", self.last_error)

    def _synced(self, report: SyncReport) -> None:
        self.last_error = None
        self.state.metrics.refreshes.labels("ok").inc()
        if report.failed:
            self.last_error = "; ".join(f"{n}: {e}" for n, e in sorted(report.failed.items()))
        preload = self.state.settings.serving.preload
        self.missing = sorted(set(preload or ()) - set(report.current))

    def _become_warm(self, report: SyncReport) -> None:
        """Warm once every preloaded set is loaded, with its model."""
        loaded = self.state.backend.classifier.loaded()
        serving = self.state.settings.serving
        wanted = {name for name in report.current if serving.preloads(name)}
        if wanted - set(loaded):
            return  # a load failed: the retry comes back here
        started = time.perf_counter()
        try:
            for ls in {ls.model_key: ls for n, ls in loaded.items() if n in wanted}.values():
                self.state.load_model(ls)
        except Exception as exc:
            self._failed(exc)
            self._retry_later(None)
            return
        self.warm = True
        self.state.metrics.set_ready(not self.state.draining)
        log.info(
            "warm: %d label set(s) loaded, models ready in %.2f s",
            len(wanted),
            time.perf_counter() - started,
        )

    # -- callbacks from other threads ----------------------------------------------------------

    def _installed(self, loaded: LoadedLabelSet, seconds: float) -> None:
        """A loader thread installed a version: its load time and how long it took to get here."""
        created = loaded.record.created_at
        if created.tzinfo is None:  # SQLite keeps naive UTC
            created = created.replace(tzinfo=dt.UTC)
        lag = (dt.datetime.now(dt.UTC) - created).total_seconds()
        self.state.metrics.record_load(loaded.name, loaded.version, seconds, lag)

    def _removed(self, name: str) -> None:
        self.state.metrics.forget_loaded(name)

    def _connection_changed(self, up: bool, reason: str | None) -> None:
        if not up:
            log.warning("not receiving change notifications (%s): polling only", reason)

    def detail(self) -> dict[str, Any]:
        """What ``/readyz`` reports about following the store."""
        out: dict[str, Any] = {"warm": self.warm}
        if self.listening is not None:
            out["notifications"] = "listening" if self.listening else "disconnected"
        else:
            out["notifications"] = "off"
        if self.missing:
            out["missing"] = self.missing
        if self.last_error:
            out["last_error"] = self.last_error
        return out
