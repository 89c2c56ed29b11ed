"""Migrations on both backends: up, down, up again, with and without data; no drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zsindex.errors import SchemaOutOfDateError
from zsindex.store import migrate
from zsindex.store.engine import make_engine
from zsindex.store.records import LabelColumns, ModelSpec, NewVersion
from zsindex.store.repository import Store


def _seed(store: Store) -> None:
    emb = np.eye(4, 8, dtype=np.float32)
    store.create_version(
        NewVersion(
            labelset="seeded",
            model=ModelSpec("m", None, "sha", 8, 10.0),
            labels=LabelColumns.flat(["a", "b", "c", "d"]),
            embeddings=emb,
            templates=("{}",),
            digest="d",
        )
    )


def test_fresh_database_is_created_at_head(db_url: str) -> None:
    store = Store(db_url)
    assert migrate.current_revision(store.engine) == migrate.head_revision()
    assert migrate.drift(store.engine) == []
    store.close()


@pytest.mark.parametrize("seeded", [False, True])
def test_upgrade_downgrade_upgrade(db_url: str, seeded: bool) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    if seeded:
        store = Store(db_url)
        _seed(store)
        assert store.current("seeded").num_labels == 4
        store.close()
    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert migrate.is_empty(engine)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert migrate.drift(engine) == []
    store = Store(db_url)
    _seed(store)  # the store works after the round trip
    assert [v.labelset for v in store.list_current()] == ["seeded"]
    store.close()
    engine.dispose()


def test_out_of_date_schema_names_the_fix(db_url: str) -> None:
    engine = make_engine(db_url)
    # A database at an older revision of this code is never silently migrated.
    migrate.upgrade(engine, "0002")
    head = migrate.head_revision()
    with pytest.raises(SchemaOutOfDateError) as info:
        Store(db_url)
    assert str(info.value) == (
        f"database schema is at 0002, this zsindex needs {head}: run `zsindex db upgrade`"
    )
    engine.dispose()


def test_migrations_ship_inside_the_package() -> None:
    path = migrate.migrations_dir()
    assert (path / "env.py").is_file()
    assert any(p.name.endswith(".py") for p in (path / "versions").iterdir())


def test_head_revision_constant_is_alembics_head() -> None:
    """HEAD_REVISION lets a store at head open without importing Alembic: it must name the
    newest migration (add a migration, update the constant)."""
    assert migrate.head_revision() == migrate.HEAD_REVISION


def test_a_store_at_head_opens_without_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'z.db'}"
    Store(url).close()  # created (Alembic runs)
    code = (
        "import sys\n"
        "from zsindex.store.repository import Store\n"
        f"Store({url!r}).close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
