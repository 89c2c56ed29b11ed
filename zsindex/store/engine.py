"""Engines and transactions for SQLite and PostgreSQL.

SQLite runs in WAL mode with foreign keys on and a long ``busy_timeout``, and every write
transaction starts with ``BEGIN IMMEDIATE``: a writer takes the write lock up front and waits for
it, instead of failing later with "database is locked" when it tries to upgrade a read lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError

from zsindex.errors import InvalidInputError, StoreError

SQLITE_BUSY_TIMEOUT_MS = 60_000
SQLITE_PAGE_SIZE = 16384  # bytes per page of a new SQLite store
PG_CONNECT_TIMEOUT_S = 10  # seconds to establish a PostgreSQL connection


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _enable_wal(cur: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode = WAL``, retried while the file is locked.

    Switching a new database file to WAL needs an exclusive lock, and SQLite answers "database
    is locked" at once, without its busy handler, while another connection holds any lock on
    the file: replicas opening one new database together failed that way (1 in ~50 starts of six
    processes). Waits up to the busy timeout, like every other lock.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.002
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy own transaction boundaries (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # Takes effect only while the file is still empty (a new store; a no-op later): the
        # store is mostly blobs (embedding and text-cache chunks), which 16 KiB pages write
        # ~30% faster than the 4 KiB default (100k labels: ~0.3 s less per registration).
        cur.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
        _enable_wal(cur)
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.info.get("zsindex_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` (SQLite files get their parent folder created)."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with no hint
        raise InvalidInputError(
            f"ZSINDEX_DATABASE_URL {url!r} is not a SQLAlchemy URL "
            "(e.g. sqlite:////path/db.sqlite3 or postgresql+psycopg://user@host/db)"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # psycopg 3 is the driver we ship; plain postgresql:// would look for psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        # A server that does not answer (firewalled, host down) must fail in seconds with the
        # store-unavailable error, not hang a CLI command or a request for the kernel's TCP
        # timeout (minutes). The URL's own ?connect_timeout= wins.
        connect_args = (
            {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        )
        return create_engine(
            parsed, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args
        )
    raise InvalidInputError(
        f"database backend {backend!r} is not supported: use sqlite:/// or postgresql://"
    )


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it holds the write lock from its start."""
    with translate_db_errors(), engine.connect() as conn:
        conn.info["zsindex_write"] = True
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info["zsindex_write"] = False


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction with a consistent snapshot."""
    with translate_db_errors(), engine.connect() as conn, conn.begin():
        yield conn


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turn connection-level failures into :class:`StoreError` (HTTP 503, CLI exit 1)."""
    try:
        yield
    except (OperationalError, SAInterfaceError) as exc:
        detail = str(exc.orig) if getattr(exc, "orig", None) is not None else str(exc)
        first = detail.strip().splitlines()[0] if detail.strip() else type(exc).__name__
        raise StoreError(f"database unavailable: {first}") from exc


def require_existing_sqlite(url: str) -> None:
    """A read must not create a SQLite file (nor its folder): say where none was found."""
    from zsindex.errors import NotFoundError

    try:
        parsed = make_url(url)
    except Exception:  # the store's own open reports a bad URL with its hint
        return
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"no zsindex store at {path}: nothing is registered yet (`zsindex labels add` "
            "creates it, or `zsindex db upgrade`); check ZSINDEX_HOME / ZSINDEX_DATABASE_URL"
        )
