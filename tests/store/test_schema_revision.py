"""A replica whose code is older than the database schema refuses to run, in one line.

Both backends: a store upgraded to head, then stamped with a revision this code has never seen
(what a newer release's migration leaves behind). Every entry point (opening the store, ``labels
list``, ``db upgrade``, ``serve``) must fail at once with one line naming both revisions and
telling to upgrade zsindex, never to run ``db upgrade``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from zsindex.errors import SchemaOutOfDateError
from zsindex.store import migrate
from zsindex.store.engine import make_engine
from zsindex.store.repository import Store

ENTRY = "from zsindex.cli.main import main; main()"  # what the console script runs
FUTURE = "0099"
EXIT_WITHIN_S = 30.0
"""Generous for a loaded 2-core machine: the CLI imports SQLAlchemy and the service first."""


@pytest.fixture
def future_db(db_url: str) -> str:
    """A store at head, then stamped with a revision from a (pretend) newer release."""
    Store(db_url).close()
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
    engine.dispose()
    return db_url


def _expected() -> str:
    head = migrate.head_revision()
    return (
        f"this zsindex (schema revision {head}) is older than the database schema ({FUTURE}): "
        "upgrade zsindex, or run the release that matches the database"
    )


def _env(tmp_path: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(
        ZSINDEX_HOME=str(tmp_path / "home"),
        ZSINDEX_DATABASE_URL=db_url,
        ZSINDEX_DEVICE="cpu",
        ZSINDEX_MODEL="zsindex-tiny",
        ZSINDEX_API_KEYS="zs-test-key-7f3a9c0e1d2b4a68",
    )
    return env


def _run(tmp_path: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-c", ENTRY, *args],
            env=_env(tmp_path, db_url),
            capture_output=True,
            text=True,
            timeout=EXIT_WITHIN_S,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"`zsindex {' '.join(args)}` still running after {EXIT_WITHIN_S} s: {err}")


def _assert_one_line_refusal(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 1, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr
    assert run.stderr.splitlines() == [f"error: {_expected()}"], run.stderr


def test_message_names_both_revisions_and_the_right_fix(future_db: str) -> None:
    with pytest.raises(SchemaOutOfDateError) as info:
        Store(future_db)
    assert str(info.value) == _expected()
    assert "db upgrade" not in str(info.value)  # impossible here: this code lacks the migration


def test_db_upgrade_refuses_a_newer_schema_without_touching_it(future_db: str) -> None:
    engine = make_engine(future_db)
    with pytest.raises(SchemaOutOfDateError, match="older than the database schema"):
        migrate.upgrade(engine)
    with pytest.raises(SchemaOutOfDateError, match="older than the database schema"):
        migrate.downgrade(engine, "base")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == FUTURE
    engine.dispose()


def test_cli_commands_refuse_in_one_line(future_db: str, tmp_path: Path) -> None:
    _assert_one_line_refusal(_run(tmp_path, future_db, "labels", "list"))
    _assert_one_line_refusal(_run(tmp_path, future_db, "db", "upgrade"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_refuses_to_start(future_db: str, tmp_path: Path) -> None:
    port = _free_port()
    _assert_one_line_refusal(_run(tmp_path, future_db, "serve", "--port", str(port)))
    with socket.socket() as sock:  # and let go of its port
        sock.bind(("127.0.0.1", port))
