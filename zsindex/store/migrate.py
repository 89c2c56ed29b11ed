"""Schema management through Alembic, run programmatically from the installed package.

Opening a store that is already at head reads its revision with one query and never imports
Alembic (~0.2 s of every command's start): :data:`HEAD_REVISION` names the newest migration, and a
test checks it against Alembic's own view of ``migrations/``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from zsindex.errors import SchemaOutOfDateError
from zsindex.store.engine import translate_db_errors
from zsindex.store.models import Base

if TYPE_CHECKING:
    from alembic.config import Config

# The newest migration's revision id (a new migration updates it; tests/store check it).
HEAD_REVISION = "0004"


def migrations_dir() -> Path:
    """The Alembic script directory: ``migrations/`` in a checkout, ``zsindex/migrations`` in
    an installed wheel (the same files, mapped by ``package-dir``)."""
    spec = importlib.util.find_spec("zsindex.migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("zsindex.migrations is missing from this installation")
    return Path(next(iter(spec.submodule_search_locations)))


def _config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # configparser interpolates "%": escape it (URL-encoded options contain %3D).
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def head_revision() -> str:
    """The newest migration, as Alembic reads ``migrations/``."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    with translate_db_errors(), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _stored_revision(engine: Engine) -> str | None:
    """The revision in ``alembic_version`` read with one plain query; ``None`` when the table
    is missing, empty or holds several heads (then Alembic decides)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:  # no such table: a new or foreign database
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def _run(engine: Engine, fn_name: str, revision: str) -> None:
    from alembic import command

    cfg = _config(engine)
    with translate_db_errors(), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, fn_name)(cfg, revision)


def _refuse_unknown_revision(engine: Engine) -> None:
    """A database at a revision this code does not know (a newer release's) is left alone.

    Alembic would fail with "Can't locate revision" and a traceback instead.
    """
    current = _stored_revision(engine)
    if current is not None and current not in known_revisions():
        raise SchemaOutOfDateError(schema_mismatch_message(current, head_revision()))


def upgrade(engine: Engine, revision: str = "head") -> None:
    _refuse_unknown_revision(engine)
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    _refuse_unknown_revision(engine)
    _run(engine, "downgrade", revision)


def is_empty(engine: Engine) -> bool:
    """True when the database has none of zsindex's tables (a brand-new store)."""
    with translate_db_errors(), engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
    # Alembic keeps an empty alembic_version table after `downgrade base`: that still counts.
    return not (names & set(Base.metadata.tables))


def ensure_current(engine: Engine, *, create_if_empty: bool) -> None:
    """Check the schema is at head; create it when the database is empty and allowed.

    Creation holds a lock (SQLite's write lock, a PostgreSQL advisory lock) and checks again
    inside it, so replicas starting together on one empty database create it exactly once.

    Raises:
        SchemaOutOfDateError: the schema exists but is not at this code's revision.
    """
    if _stored_revision(engine) == HEAD_REVISION:  # the common case, without Alembic
        return
    from alembic import command
    from alembic.migration import MigrationContext

    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    # No revision seen: decide under the lock, re-reading both the revision and the tables
    # there (a first read outside it may straddle another replica's commit).
    if current is None and create_if_empty:
        from sqlalchemy import text

        from zsindex.store.engine import write_transaction

        with write_transaction(engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7301173)"))
            now = MigrationContext.configure(conn).get_current_revision()
            if now == head:
                return
            if now is None and not (
                set(inspect(conn).get_table_names()) & set(Base.metadata.tables)
            ):
                cfg = _config(engine)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                return
            current = now
    raise SchemaOutOfDateError(schema_mismatch_message(current, head))


def known_revisions() -> set[str]:
    """Every revision in this code's ``migrations/``."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return {script.revision for script in ScriptDirectory.from_config(cfg).walk_revisions()}


def schema_mismatch_message(current: str | None, head: str) -> str:
    """One line naming both revisions, with the advice that fits the direction.

    A revision this code does not know comes from a newer release (migrations are only ever
    added), so upgrading the database is impossible here and the code must move instead.
    """
    if current is None or current in known_revisions():
        return (
            f"database schema is at {current or 'no revision'}, this zsindex needs {head}: "
            "run `zsindex db upgrade`"
        )
    return (
        f"this zsindex (schema revision {head}) is older than the database schema ({current}): "
        "upgrade zsindex, or run the release that matches the database"
    )


def drift(engine: Engine) -> list[object]:
    """Differences between the table models and the migrated database (empty = none)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with translate_db_errors(), engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))
