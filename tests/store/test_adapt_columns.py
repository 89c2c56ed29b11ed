"""Migration 0004's columns: a version's temperature and provenance, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import text

from zsindex.store.check import check_store
from zsindex.store.records import LabelColumns, ModelSpec, NewVersion
from zsindex.store.repository import Store

MODEL = ModelSpec("zsindex-tiny", None, "f" * 64, 8, 42.5, None, 77)


def _new(name: str, **changes: object) -> NewVersion:
    rows = np.eye(2, 8, dtype=np.float32)
    new = NewVersion(
        labelset=name,
        model=MODEL,
        labels=LabelColumns.flat(["a", "b"]),
        embeddings=rows,
        templates=("{}",),
        digest="d1",
        dtype="float32",
    )
    return replace(new, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(db_url: str) -> Store:
    s = Store(db_url)
    yield s
    s.close()


def test_temperature_and_provenance_round_trip_and_survive_a_rollback(store: Store) -> None:
    plain = store.create_version(_new("s"))
    assert (plain.temperature, plain.provenance) == (1.0, "")
    provenance = json.dumps({"calibration": {"temperature": 2.5, "source_version": 1}})
    calibrated = store.create_version(
        _new("s", digest="d2", temperature=2.5, provenance=provenance)
    )
    again = store.current("s")
    assert again.temperature == 2.5 and json.loads(again.provenance) == json.loads(provenance)
    assert calibrated.version == 2
    store.create_version(_new("s", digest="d3"))
    rolled = store.rollback("s", 2)  # copies every column of version 2
    assert (rolled.version, rolled.temperature, rolled.provenance) == (4, 2.5, provenance)
    assert [v.temperature for v in store.history("s")] == [1.0, 2.5, 1.0, 2.5]
    assert check_store(store, strict=True).ok


def test_db_check_flags_a_temperature_that_is_not_positive(store: Store) -> None:
    store.create_version(_new("s"))
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE labelset_versions SET temperature = 0"))
    report = check_store(store)
    assert not report.ok and "temperature 0.0 is not a positive number" in report.problems[0]
