"""Engine set-up: a PostgreSQL server that never answers fails fast with a store error."""

from __future__ import annotations

import socket
import time

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


def test_unanswering_postgres_fails_within_the_connect_timeout(
    silent_server: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PG_CONNECT_TIMEOUT_S", 1)
    port = silent_server.getsockname()[1]
    engine = make_engine(f"postgresql://nobody@127.0.0.1:{port}/test")
    start = time.monotonic()
    with pytest.raises(StoreError, match="database unavailable"), read_transaction(engine) as conn:
        conn.execute(text("SELECT 1"))
    assert time.monotonic() - start < 10
    engine.dispose()


def test_url_connect_timeout_wins(
    silent_server: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PG_CONNECT_TIMEOUT_S", 60)
    port = silent_server.getsockname()[1]
    engine = make_engine(f"postgresql://nobody@127.0.0.1:{port}/test?connect_timeout=1")
    start = time.monotonic()
    with pytest.raises(StoreError), read_transaction(engine) as conn:
        conn.execute(text("SELECT 1"))
    assert time.monotonic() - start < 10  # the URL's 1 s, not the 60 s default
    engine.dispose()
