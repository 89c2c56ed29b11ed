"""Change notifications between processes sharing one PostgreSQL store.

A write that changes which version a label set serves calls :func:`notify_change` inside its own
transaction; PostgreSQL delivers the ``NOTIFY`` at commit (never for a rolled-back write) to
every session that ``LISTEN``s on :data:`CHANNEL`. A :class:`ChangeListener` holds one such
session per replica on a thread of its own and reports each changed label-set name.

A notification is only a hint to look: listeners re-read the store's current versions, so a
payload naming an unknown or deleted label set, or one that arrives twice or out of order,
cannot make a replica serve anything the store does not say. After every (re)connection the
listener reports ``None`` ("anything may have changed"), so changes made while it was
disconnected are picked up by a full re-read. SQLite has no notifications: polling covers it.

Channels are per database, not per schema: the payload carries the writer's schema and a
listener ignores other schemas' changes (several stores may share one database).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

log = logging.getLogger("zsindex.store.notify")

CHANNEL = "zsindex_changes"
KEEPALIVE_S = 5.0
"""How often an idle listener checks its connection (a half-open TCP link sends no error)."""
RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Back-off between reconnection attempts (the last value repeats)."""

OnChange = Callable[[set[str] | None], None]
OnConnected = Callable[[bool, str | None], None]


def notify_change(conn: Connection, labelset: str) -> None:
    """Tell listeners (at commit) that ``labelset``'s current version changed; no-op on SQLite."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(
        text(
            "SELECT pg_notify(:channel, json_build_object("
            "'schema', current_schema(), 'labelset', CAST(:name AS text))::text)"
        ),
        {"channel": CHANNEL, "name": labelset},
    )


def libpq_url(sqlalchemy_url: str) -> str:
    """The libpq connection URI of a SQLAlchemy PostgreSQL URL (driver suffix removed)."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def parse_payload(payload: str, schema: str) -> str | None:
    """The label-set name a notification payload names for ``schema``, or ``None`` when it
    belongs to another schema or is not ours (anything unparsable is ignored)."""
    try:
        data: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("schema") != schema:
        return None
    name = data.get("labelset")
    return name if isinstance(name, str) else None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class ChangeListener:
    """``LISTEN`` on a dedicated connection in a daemon thread.

    Args:
        database_url: the store's SQLAlchemy PostgreSQL URL.
        on_change: called on the listener thread with the set of changed label-set names, or
            ``None`` after each (re)connection (re-read everything). Keep it quick: hand the
            work to another thread.
        on_connected: called with ``(True, None)`` when listening, ``(False, reason)`` when the
            connection is lost (optional).
    """

    def __init__(
        self,
        database_url: str,
        on_change: OnChange,
        on_connected: OnConnected | None = None,
    ) -> None:
        self._conninfo = libpq_url(database_url)
        self._on_change = on_change
        self._on_connected = on_connected or (lambda _up, _reason: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zsindex-listen", daemon=True)
        self.connected = False
        self.backend_pid: int | None = None
        """The server process of the listening session (for operators and tests)."""

    def start(self) -> ChangeListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:  # any failure of the session: report, back off, reconnect
                reason = _one_line(exc)
                if self.connected or failures == 0:
                    log.warning("change listener disconnected: %s", reason)
                self._set_connected(False, reason)
                delay = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
                failures += 1
                self._stop.wait(delay)
        self._set_connected(False, "stopped")

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=5, application_name="zsindex-listen"
        ) as conn:
            row = conn.execute("SELECT current_schema()").fetchone()
            schema = str(row[0]) if row else "public"
            conn.execute(f"LISTEN {CHANNEL}")
            self.backend_pid = conn.info.backend_pid
            self._set_connected(True, None)
            self._on_change(None)  # whatever changed while not listening
            last_check = time.monotonic()
            while not self._stop.is_set():
                # Each notification is handed over as it arrives (the generator yields them one
                # by one; leaving it early would drop the rest of a packet).
                for note in conn.notifies(timeout=0.5):
                    name = parse_payload(note.payload, schema)
                    if name is not None:
                        self._on_change({name})
                    if self._stop.is_set():
                        break
                if time.monotonic() - last_check > KEEPALIVE_S:
                    conn.execute("SELECT 1")
                    last_check = time.monotonic()

    def _set_connected(self, up: bool, reason: str | None) -> None:
        if up != self.connected:
            self.connected = up
            self._on_connected(up, reason)
