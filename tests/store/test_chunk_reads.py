"""The fast read paths: embedding chunks over several connections, names-only label loads.

Every test runs on SQLite and PostgreSQL (where the chunks are read over several connections).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import text

from zsindex.errors import NotFoundError, StoreError
from zsindex.store import chunk_reads, repository
from zsindex.store.records import LabelColumns, ModelSpec, NewVersion
from zsindex.store.repository import Store

MODEL = ModelSpec("zsindex-tiny", None, "f" * 64, 16, 42.5, None, 77)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def _unit(n: int, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    out: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return out


def _version(store: Store, labels: LabelColumns, dtype: str = "float32", name: str = "s") -> int:
    new = NewVersion(name, MODEL, labels, _unit(len(labels)), ("{}",), "d", dtype=dtype)
    return store.create_version(new).version_id


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_many_chunks_round_trip_bit_identical(
    store: Store, monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    monkeypatch.setattr(repository, "CHUNK_ROWS", 7)  # 15 chunks: every reader gets several
    vid = _version(store, LabelColumns.flat([f"l{i}" for i in range(101)]), dtype)
    back = store.load_embeddings(vid)
    expected = _unit(101).astype(dtype)
    assert back.dtype == np.dtype(dtype) and back.shape == (101, 16)
    assert back.tobytes() == expected.tobytes()


def test_a_missing_chunk_raises_instead_of_leaving_garbage(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository, "CHUNK_ROWS", 7)
    vid = _version(store, LabelColumns.flat([f"l{i}" for i in range(50)]))
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM embedding_chunks WHERE chunk_index = 3"))
    with pytest.raises(NotFoundError, match="do not cover"):
        store.load_embeddings(vid)


def test_a_chunk_of_the_wrong_size_is_damage(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository, "CHUNK_ROWS", 7)
    vid = _version(store, LabelColumns.flat([f"l{i}" for i in range(50)]))
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE embedding_chunks SET num_rows = num_rows + 1 WHERE chunk_index = 6")
        )
    with pytest.raises(StoreError, match="damaged"):
        store.load_embeddings(vid)


def test_one_connection_reads_the_same(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository, "CHUNK_ROWS", 5)
    vid = _version(store, LabelColumns.flat([f"l{i}" for i in range(33)]))
    many = store.load_embeddings(vid)
    monkeypatch.setattr(chunk_reads, "READ_CONNECTIONS", 1)
    assert store.load_embeddings(vid).tobytes() == many.tobytes()


def _full_columns(store: Store, vid: int) -> LabelColumns:
    """The labels through the all-columns path (a tree forces it), for comparison."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT name, prompts, parent_position, depth, rank FROM labels "
                "WHERE version_id = :v ORDER BY position"
            ),
            {"v": vid},
        ).all()
    return LabelColumns(
        names=[r[0] for r in rows],
        parents=np.array([-1 if r[2] is None else r[2] for r in rows], dtype=np.int64),
        depths=np.array([r[3] for r in rows], dtype=np.int32),
        ranks=[r[4] for r in rows],
        prompts=[None if r[1] is None else tuple(json.loads(r[1])) for r in rows],
    )


def _same(a: LabelColumns, b: LabelColumns) -> None:
    assert a.names == b.names and a.ranks == b.ranks and a.prompts == b.prompts
    assert a.parents.tolist() == b.parents.tolist() and a.depths.tolist() == b.depths.tolist()
    assert a.parents.dtype == b.parents.dtype and a.depths.dtype == b.depths.dtype


@pytest.mark.parametrize(
    "labels",
    [
        LabelColumns.flat(["dog", "ça va", "狗", "dog", "a\tb", "x" * 300]),  # names only
        LabelColumns.flat(["a", "b"], prompts=[None, ("a b", "the b")]),  # prompts: all columns
        LabelColumns(
            names=["root", "kid", "other"],
            parents=np.array([-1, 0, -1]),
            depths=np.array([1, 2, 1], dtype=np.int32),
            ranks=["r", "s", "r"],
            prompts=[None, None, None],
        ),
        LabelColumns(  # flat, but a rank is set: all columns
            names=["a", "b"],
            parents=np.array([-1, -1]),
            depths=np.array([1, 1], dtype=np.int32),
            ranks=[None, "species"],
            prompts=[None, None],
        ),
    ],
    ids=["flat", "prompts", "tree", "ranked"],
)
def test_label_loads_equal_the_stored_rows(store: Store, labels: LabelColumns) -> None:
    vid = _version(store, labels)
    back = store.load_labels(vid)
    _same(back, labels)
    _same(back, _full_columns(store, vid))


def test_reading_a_deleted_version(store: Store) -> None:
    vid = _version(store, LabelColumns.flat(["a", "b"]))
    store.delete_labelset("s")
    with pytest.raises(NotFoundError):
        store.load_embeddings(vid)
    assert len(store.load_labels(vid)) == 0
