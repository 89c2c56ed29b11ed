"""Keep a replica's loaded label sets in step with the store, and say when it is warm.

Three sources ask for a sync; one worker task does them, one at a time, in a thread:

- start-up: the label sets the replica serves (``ZSINDEX_PRELOAD``; default all) are loaded
  before :attr:`Follower.warm` turns true, and with them their models, so ``/readyz`` says
  ready only when a request would be answered without a cold load;
- ``NOTIFY`` (PostgreSQL): a :class:`~zsindex.store.notify.ChangeListener` hands over the
  changed names the moment the writer commits (after a reconnection: "everything");
- polling every ``ZSINDEX_REFRESH_INTERVAL_S`` seconds, the fallback and SQLite's way.

Requests pending while a sync runs are merged into the next one. Every sync re-reads the store,
so the state converges to the store's whatever the notifications say.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from zsindex.service.state import in_daemon_thread
from zsindex.store.engine import is_sqlite

if TYPE_CHECKING:
    from zsindex.classify.classifier import SyncReport
    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.service.state import ServiceState
    from zsindex.store.notify import ChangeListener

log = logging.getLogger("zsindex.service")

RETRY_S = 1.0
"""Pause before a failed start-up sync is tried again."""


class Follower:
    """The sync worker, the listener and the poll loop of one app (event-loop side)."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.warm = False
        self.last_error: str | None = None
        self.listener: ChangeListener | None = None
        self.missing: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._pending: set[str] = set()
        self._everything = True
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listening(self) -> bool | None:
        """Whether notifications arrive (``None``: not used, e.g. SQLite or turned off)."""
        return None if self.listener is None else self.listener.connected

    async def start(self) -> None:
        """Subscribe first (nothing written after this point is missed), then load."""
        self._loop = asyncio.get_running_loop()
        self.state.backend.classifier.add_listener(self._installed, self._removed)
        settings = self.state.settings
        url = settings.resolved_database_url
        if settings.serving.notify and not is_sqlite(url):
            from zsindex.store.notify import ChangeListener

            self.listener = ChangeListener(url, self._notified, self._connection_changed)
            self.listener.start()
        self.request(None)  # the start-up load
        self._tasks.append(asyncio.create_task(self._work(), name="zsindex-sync"))
        if self.state.refresh_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._poll(), name="zsindex-poll"))

    async def stop(self) -> None:
        self.state.backend.classifier.remove_listener(self._installed, self._removed)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.listener is not None:
            await asyncio.to_thread(self.listener.stop)

    def request(self, names: set[str] | None) -> None:
        """Ask for a sync of ``names`` (``None``: everything); event-loop thread only."""
        if names is None:
            self._everything = True
        else:
            self._pending |= names
        self._wake.set()

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

    def _notified(self, names: set[str] | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request, names)

    def _connection_changed(self, up: bool, reason: str | None) -> None:
        if not up:
            log.warning("not receiving change notifications (%s): polling only", reason)

    # -- tasks ---------------------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.state.refresh_interval_s)
            self.request(None)

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            names = None if self._everything else set(self._pending)
            self._everything = False
            self._pending.clear()
            try:
                sync = functools.partial(self.state.backend.sync, names, preload=True)
                report = await in_daemon_thread(sync)
            except Exception as exc:
                self._failed(exc, names)
                continue
            self.state.invalidate()
            self._synced(report)
            if not self.warm:
                await self._become_warm(report)

    def _failed(self, exc: Exception, names: set[str] | None) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.state.metrics.refreshes.labels("error").inc()
        log.warning("label-set sync failed: %s", self.last_error)
        # Ask again (everything, after a pause): what was asked for must not be lost.
        assert self._loop is not None
        self._loop.call_later(RETRY_S, self.request, None if names is None else names)

    def _synced(self, report: SyncReport) -> None:
        self.last_error = None
        self.state.metrics.refreshes.labels("ok").inc()
        if report.failed:
            self.last_error = "; ".join(f"{n}: {e}" for n, e in sorted(report.failed.items()))
            assert self._loop is not None
            self._loop.call_later(RETRY_S, self.request, set(report.failed))
        preload = self.state.settings.serving.preload
        self.missing = sorted(set(preload or ()) - set(report.current))

    async def _become_warm(self, report: SyncReport) -> None:
        """Warm once every preloaded set is loaded, with its model."""
        loaded = self.state.backend.classifier.loaded()
        serving = self.state.settings.serving
        wanted = {name for name in report.current if serving.preloads(name)}
        if wanted - set(loaded):
            return  # a load failed: the retry comes back here
        started = time.perf_counter()
        try:
            for ls in {ls.model_key: ls for n, ls in loaded.items() if n in wanted}.values():
                await self.state.ready_model(ls, background=True)
        except Exception as exc:
            self._failed(exc, None)
            return
        self.warm = True
        self.state.metrics.set_ready(not self.state.draining)
        log.info(
            "warm: %d label set(s) loaded, models ready in %.2f s",
            len(wanted),
            time.perf_counter() - started,
        )

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
