"""``NOTIFY`` at commit and the ``ChangeListener`` on the real PostgreSQL server."""

from __future__ import annotations

import json
import queue
import time

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from zsindex.store.notify import ChangeListener, libpq_url, notify_change, parse_payload

pytestmark = pytest.mark.postgres


def _listen(pg_url: str) -> tuple[ChangeListener, queue.Queue[set[str] | None]]:
    seen: queue.Queue[set[str] | None] = queue.Queue()
    listener = ChangeListener(pg_url, seen.put).start()
    assert seen.get(timeout=10) is None  # connected: "re-read everything" comes first
    assert listener.connected
    return listener, seen


def _no_more(seen: queue.Queue[set[str] | None], wait_s: float = 0.3) -> list[object]:
    time.sleep(wait_s)
    out: list[object] = []
    while not seen.empty():
        out.append(seen.get_nowait())
    return out


def test_a_commit_notifies_and_a_rollback_does_not(pg_url: str) -> None:
    listener, seen = _listen(pg_url)
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            notify_change(conn, "kept")
        assert seen.get(timeout=5) == {"kept"}
        conn = engine.connect()
        tx = conn.begin()
        notify_change(conn, "rolled-back")
        tx.rollback()
        conn.close()
        assert _no_more(seen) == []
    finally:
        listener.stop()
        engine.dispose()


def test_other_schemas_and_junk_payloads_are_ignored(pg_url: str, pg_admin_engine: object) -> None:
    listener, seen = _listen(pg_url)
    try:
        # Another store in the same database (schema "public"), and payloads not ours at all.
        with pg_admin_engine.begin() as conn:  # type: ignore[attr-defined]
            notify_change(conn, "elsewhere")
            conn.execute(text("SELECT pg_notify('zsindex_changes', 'not json')"))
            conn.execute(text("SELECT pg_notify('zsindex_changes', '[1, 2]')"))
        assert _no_more(seen) == []
    finally:
        listener.stop()
    schema = pg_url.rsplit("%3D", 1)[1]
    assert parse_payload(json.dumps({"schema": schema, "labelset": "x"}), schema) == "x"
    assert parse_payload(json.dumps({"schema": schema, "labelset": 3}), schema) is None


def test_store_writes_notify(pg_url: str) -> None:
    from zsindex import Client
    from zsindex.config import Settings

    listener, seen = _listen(pg_url)
    settings = Settings(database_url=pg_url, model="zsindex-tiny", pretrained=None, device="cpu")
    try:
        with Client.local(settings=settings) as client:
            client.import_labelset("n1", np.eye(2, 128, dtype=np.float32), ["a", "b"])
            assert seen.get(timeout=5) == {"n1"}
            client.delete_labelset("n1")
            assert seen.get(timeout=5) == {"n1"}
    finally:
        listener.stop()


def test_a_lost_connection_reconnects_and_asks_for_a_full_reread(
    pg_url: str, pg_admin_engine: object
) -> None:
    listener, seen = _listen(pg_url)
    try:
        pid = listener.backend_pid
        with pg_admin_engine.begin() as conn:  # type: ignore[attr-defined]
            killed = conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        assert killed, "the listener's session was not found"
        assert seen.get(timeout=15) is None  # reconnected: re-read everything
        assert listener.connected and listener.backend_pid != pid
        engine = create_engine(pg_url)
        with engine.begin() as conn:
            notify_change(conn, "after")
        engine.dispose()
        assert seen.get(timeout=5) == {"after"}
    finally:
        listener.stop()


def test_libpq_url_keeps_the_options() -> None:
    url = "postgresql+psycopg://u:p@127.0.0.1:5432/test?options=-csearch_path%3Dzt_x"
    assert libpq_url(url).startswith("postgresql://u:p@127.0.0.1:5432/test?options=")
