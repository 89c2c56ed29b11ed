"""Rollback in the real store (SQLite and PostgreSQL): an old version's rows copied in SQL into a
new current version, in one transaction, recorded in history and notified at commit."""

from __future__ import annotations

import queue

import numpy as np
import pytest
from sqlalchemy import select

from zsindex.errors import NotFoundError
from zsindex.store import rollback as rollback_module
from zsindex.store.check import check_store
from zsindex.store.models import EmbeddingChunkRow, LabelRow
from zsindex.store.records import LabelColumns, ModelSpec, NewVersion
from zsindex.store.repository import CHUNK_ROWS, Store

MODEL = ModelSpec("zsindex-tiny", None, "f" * 64, 16, 42.5, None, 77)


def _unit(n: int, seed: int) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _tree(seed: int, extra: int = 0) -> NewVersion:
    names = ["animal", "dog", "cat"] + [f"x{i}" for i in range(extra)]
    n = len(names)
    labels = LabelColumns(
        names=names,
        parents=np.array([-1, 0, 0] + [0] * extra),
        depths=np.array([1, 2, 2] + [2] * extra, dtype=np.int32),
        ranks=["kingdom", "species", "species"] + ["species"] * extra,
        prompts=[None, ("a dog", "a puppy"), None] + [None] * extra,
    )
    return NewVersion(
        "t",
        MODEL,
        labels,
        _unit(n, seed),
        ("{}",),
        f"digest-{seed}",
        rank_names=("kingdom", "species"),
        source=f"test:{seed}",
        index_spec="hnsw16" if seed == 1 else "",
    )


@pytest.fixture
def store(db_url: str) -> Store:
    s = Store(db_url)
    yield s
    s.close()


def _rows(store: Store, table: type, version_id: int) -> list[tuple[object, ...]]:
    cols = [c for c in table.__table__.columns if c.name != "version_id"]  # type: ignore[attr-defined]
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(*cols).where(table.version_id == version_id)  # type: ignore[attr-defined]
        ).all()
    return sorted(tuple(r) for r in rows)


def test_rollback_copies_the_old_rows_into_a_new_current_version(store: Store) -> None:
    v1 = store.create_version(_tree(1))
    v2 = store.create_version(_tree(2, extra=2))
    rolled = store.rollback("t", 1)
    assert (rolled.version, rolled.is_current, rolled.source) == (3, True, "rollback of version 1")
    assert store.current("t").version_id == rolled.version_id != v1.version_id
    for field in ("digest", "templates", "num_labels", "depth", "rank_names", "dim", "dtype"):
        assert getattr(rolled, field) == getattr(v1, field), field
    assert rolled.index_spec == "hnsw16" and rolled.model == v1.model
    # Every label column (prompts, parents, ranks, meta) and every chunk (bytes and checksum).
    assert _rows(store, LabelRow, rolled.version_id) == _rows(store, LabelRow, v1.version_id)
    assert _rows(store, EmbeddingChunkRow, rolled.version_id) == _rows(
        store, EmbeddingChunkRow, v1.version_id
    )
    np.testing.assert_array_equal(
        store.load_embeddings(rolled.version_id), store.load_embeddings(v1.version_id)
    )
    history = store.history("t")
    assert [(v.version, v.is_current) for v in history] == [(1, False), (2, False), (3, True)]
    assert [v.source for v in history] == ["test:1", "test:2", "rollback of version 1"]
    assert store.version("t", 2).version_id == v2.version_id  # the old versions stay
    assert check_store(store, strict=True).ok


def test_rollback_of_a_multi_chunk_version(store: Store) -> None:
    n = CHUNK_ROWS + 5
    names = [f"l{i}" for i in range(n)]
    first = store.create_version(
        NewVersion("big", MODEL, LabelColumns.flat(names), _unit(n, 3), ("{}",), "d1")
    )
    store.create_version(
        NewVersion("big", MODEL, LabelColumns.flat(names[:3]), _unit(3, 4), ("{}",), "d2")
    )
    rolled = store.rollback("big", 1)
    assert store.load_labels(rolled.version_id).names == names
    np.testing.assert_array_equal(
        store.load_embeddings(rolled.version_id), store.load_embeddings(first.version_id)
    )


def test_rollback_is_one_transaction(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_version(_tree(1))
    store.create_version(_tree(2))

    def fail(conn: object, name: str) -> None:  # the last step, after every row was copied
        raise RuntimeError("killed before commit")

    monkeypatch.setattr(rollback_module, "notify_change", fail)
    with pytest.raises(RuntimeError):
        store.rollback("t", 1)
    assert [v.version for v in store.history("t")] == [1, 2]
    assert store.current("t").version == 2
    with store.engine.connect() as conn:
        copied = conn.execute(select(LabelRow.version_id).distinct()).scalars().all()
    assert sorted(copied) == sorted(v.version_id for v in store.history("t"))


def test_missing_versions_and_sets_are_not_found(store: Store) -> None:
    store.create_version(_tree(1))
    with pytest.raises(
        NotFoundError, match=r"'t' has no version 9 \(see `zsindex labels history t`"
    ):
        store.rollback("t", 9)
    with pytest.raises(NotFoundError, match="has no version 0"):
        store.rollback("t", 0)
    with pytest.raises(NotFoundError, match="has no version"):
        store.version("t", 2**40)  # beyond the SQL integer: never queried
    with pytest.raises(NotFoundError, match=r"'nope' does not exist \(see `zsindex labels list`"):
        store.rollback("nope", 1)
    with pytest.raises(NotFoundError, match="'nope' does not exist"):
        store.version("nope", 1)
    assert [v.version for v in store.history("t")] == [1]


def test_version_keys_change_when_a_set_is_created_again(store: Store) -> None:
    store.create_version(_tree(1))
    before = store.version_keys({"t", "other"})
    assert set(before) == {("t", 1)}
    assert store.version_keys(set()) == {}
    store.delete_labelset("t")
    assert store.version_keys({"t"}) == {}
    store.create_version(_tree(2))
    after = store.version_keys({"t"})
    assert set(after) == {("t", 1)} and after != before


@pytest.mark.postgres
def test_a_rollback_notifies_at_commit(pg_url: str) -> None:
    from zsindex.store.notify import ChangeListener

    store = Store(pg_url)
    seen: queue.Queue[set[str] | None] = queue.Queue()
    listener = ChangeListener(pg_url, seen.put).start()
    try:
        assert seen.get(timeout=10) is None  # connected
        store.create_version(_tree(1))
        store.create_version(_tree(2))
        assert seen.get(timeout=5) == {"t"} and seen.get(timeout=5) == {"t"}
        store.rollback("t", 1)
        assert seen.get(timeout=5) == {"t"}
    finally:
        listener.stop()
        store.close()
