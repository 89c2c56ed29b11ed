"""Engine set-up: a PostgreSQL server that never answers fails fast with a store error."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from zsindex.errors import StoreError
from zsindex.store import engine as engine_module
from zsindex.store.engine import make_engine, read_transaction


@pytest.fixture
def silent_server() -> socket.socket:
    """A loopback TCP port that accepts connections (kernel backlog) but never speaks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def _seconds_to_fail(url: str) -> float:
    """Open a connection to ``url``; it must fail with the store-unavailable error."""
    engine = make_engine(url)
    start = time.monotonic()
    try:
        with (
            pytest.raises(StoreError, match="database unavailable"),
            read_transaction(engine) as conn,
        ):
            conn.execute(text("SELECT 1"))
        return time.monotonic() - start
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("default_s", "query", "reason"),
    [(1, "", "the default"), (60, "?connect_timeout=1", "the URL's 1 s, not the 60 s default")],
)
def test_unanswering_postgres_fails_within_the_connect_timeout(
    silent_server: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    default_s: int,
    query: str,
    reason: str,
) -> None:
    monkeypatch.setattr(engine_module, "PG_CONNECT_TIMEOUT_S", default_s)
    port = silent_server.getsockname()[1]
    assert _seconds_to_fail(f"postgresql://nobody@127.0.0.1:{port}/test{query}") < 10, reason


def test_a_new_sqlite_store_uses_large_pages(tmp_path: Path) -> None:
    from zsindex.store.engine import SQLITE_PAGE_SIZE, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == SQLITE_PAGE_SIZE
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
