"""Versions, labels and embeddings round-trip through the real store on both backends."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from zsindex.errors import NotFoundError
from zsindex.store.check import check_store
from zsindex.store.records import LabelColumns, ModelSpec, NewVersion
from zsindex.store.repository import CHUNK_ROWS, Store
from zsindex.store.text_cache import SqlTextEmbeddingCache

MODEL = ModelSpec("zsindex-tiny", None, "f" * 64, 16, 42.5, None, 77)


def _unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _new(name: str, names: list[str], *, seed: int = 0, dtype: str = "float16") -> NewVersion:
    return NewVersion(
        labelset=name,
        model=MODEL,
        labels=LabelColumns.flat(names),
        embeddings=_unit(len(names), seed=seed),
        templates=("a photo of a {}.",),
        digest=f"digest-{seed}",
        dtype=dtype,
    )


@pytest.fixture
def store(db_url: str) -> Store:
    s = Store(db_url)
    yield s
    s.close()


def test_version_round_trip(store: Store) -> None:
    new = _new("pets", ["dog", "cat", "dog"], dtype="float32")
    record = store.create_version(new)
    assert (record.labelset, record.version, record.num_labels, record.status) == (
        "pets",
        1,
        3,
        "ready",
    )
    assert record.model.logit_scale == pytest.approx(42.5)
    assert record.templates == ("a photo of a {}.",)
    labels = store.load_labels(record.version_id)
    assert labels.names == ["dog", "cat", "dog"]  # duplicates keep their positions
    np.testing.assert_array_equal(store.load_embeddings(record.version_id), new.embeddings)


def test_tree_columns_round_trip(store: Store) -> None:
    labels = LabelColumns(
        names=["animal", "dog", "cat"],
        parents=np.array([-1, 0, 0]),
        depths=np.array([1, 2, 2], dtype=np.int32),
        ranks=["kingdom", "species", "species"],
        prompts=[None, ("a dog", "a puppy"), None],
    )
    new = NewVersion(
        "tree", MODEL, labels, _unit(3), ("{}",), "d", rank_names=("kingdom", "species")
    )
    record = store.create_version(new)
    assert record.depth == 2 and record.rank_names == ("kingdom", "species")
    back = store.load_labels(record.version_id)
    assert back.parents.tolist() == [-1, 0, 0]
    assert back.prompts == [None, ("a dog", "a puppy"), None]
    assert back.ranks == ["kingdom", "species", "species"]


def test_fp16_storage_within_tolerance_and_chunked(store: Store) -> None:
    n = CHUNK_ROWS + 17  # spans two chunks
    new = _new("big", [f"l{i}" for i in range(n)])
    record = store.create_version(new)
    back = store.load_embeddings(record.version_id)
    assert back.dtype == np.float16 and back.shape == (n, 16)
    assert np.abs(back.astype(np.float32) - new.embeddings).max() < 1e-3


def test_new_version_becomes_current_and_history_keeps_old(store: Store) -> None:
    store.create_version(_new("s", ["a", "b"], seed=1))
    store.create_version(_new("s", ["a", "b", "c"], seed=2))
    assert store.current("s").version == 2
    assert [v.version for v in store.history("s")] == [1, 2]
    assert [v.is_current for v in store.history("s")] == [False, True]
    assert store.load_labels(store.version("s", 1).version_id).names == ["a", "b"]


def test_delete_and_not_found(store: Store) -> None:
    store.create_version(_new("gone", ["a"]))
    store.delete_labelset("gone")
    with pytest.raises(NotFoundError, match="gone"):
        store.current("gone")
    with pytest.raises(NotFoundError):
        store.delete_labelset("gone")
    assert store.list_current() == []


def test_concurrent_writers_get_distinct_versions(store: Store) -> None:
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        try:
            for i in range(3):
                store.create_version(_new("hot", ["x", "y"], seed=seed * 10 + i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [v.version for v in store.history("hot")] == list(range(1, 10))
    assert check_store(store, strict=True).ok


def test_checker_finds_broken_invariants(store: Store) -> None:
    from sqlalchemy import text

    record = store.create_version(_new("ok", ["a", "b"]))
    assert check_store(store, strict=True).ok
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM labels WHERE position = 1"))
    report = check_store(store)
    assert not report.ok and "2 labels declared, 1 label rows" in report.problems[0]
    assert record.num_labels == 2


def test_text_cache_round_trip(store: Store) -> None:
    cache = SqlTextEmbeddingCache(store.engine)
    vecs = {"k1": _unit(1)[0], "k2": _unit(1, seed=3)[0]}
    cache.put_many("fp", "td", vecs)
    cache.put_many("fp", "td", vecs)  # idempotent
    got = cache.get_many("fp", "td", ["k1", "k2", "missing"])
    assert set(got) == {"k1", "k2"}
    np.testing.assert_array_equal(got["k2"], vecs["k2"])
    assert cache.get_many("other", "td", ["k1"]) == {}


def test_text_cache_in_bulk_reads_back_through_the_orm(store: Store) -> None:
    """Chunks written by the driver-level path read back through SQLAlchemy (timestamps in the
    dialect's own format, keys sorted, vectors in key order)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from zsindex.store.models import TextEmbeddingChunkRow

    cache = SqlTextEmbeddingCache(store.engine)
    vecs = {f"key-{i}": _unit(1, seed=i)[0] for i in range(2_500)}
    cache.put_many("fp", "td", vecs)
    got = cache.get_many("fp", "td", [*vecs, "absent"])
    assert set(got) == set(vecs)
    np.testing.assert_array_equal(got["key-2499"], vecs["key-2499"])
    with Session(store.engine) as session:
        row = session.scalars(select(TextEmbeddingChunkRow)).one()
    assert (row.model_fingerprint, row.templates_digest) == ("fp", "td")
    assert row.num_rows == 2_500 and row.dim == 16 and row.created_at.year >= 2026
    # The stored format: 16-byte BLAKE2b digests of the UTF-8 keys, sorted as bytes; vector i
    # belongs to key i.
    digests = {hashlib.blake2b(k.encode("utf-8"), digest_size=16).digest(): k for k in vecs}
    stored = [row.keys[i : i + 16] for i in range(0, len(row.keys), 16)]
    assert stored == sorted(digests)
    matrix = np.frombuffer(row.vectors, dtype="<f4").reshape(2_500, 16)
    for i in (0, 7, 2_499):
        np.testing.assert_array_equal(matrix[i], vecs[digests[stored[i]]])
