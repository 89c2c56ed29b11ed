"""The chunked SQL text-embedding cache, and its migration from one row per label, on both
backends."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from zsindex.store import migrate, text_cache
from zsindex.store.engine import make_engine
from zsindex.store.repository import Store
from zsindex.store.text_cache import SqlTextEmbeddingCache


def _vecs(keys: list[str], dim: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(dim).astype(np.float32) for k in keys}


def _hashed(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


def _num_chunks(engine: Engine, where: str = "") -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.text(f"SELECT COUNT(*) FROM text_embedding_chunks{where}")).one()[0]
        )


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture
def cache(store: Store) -> SqlTextEmbeddingCache:
    return SqlTextEmbeddingCache(store.engine)


def test_round_trip_with_arbitrary_string_keys(cache: SqlTextEmbeddingCache) -> None:
    keys = ["k1", "", "ünïcödé 🐕", "x" * 500, "a\x00b", "a", "A", "0" * 64]
    vecs = _vecs(keys)
    cache.put_many("fp", "td", vecs)
    probe = [*keys, "k1", "missing", "", "also missing"]
    got = cache.get_many("fp", "td", probe)
    assert set(got) == set(keys)
    for key in keys:
        assert got[key].dtype == np.float32 and got[key].shape == (8,)
        np.testing.assert_array_equal(got[key], vecs[key])
    # Copies: changing a returned vector changes nothing stored.
    got["k1"][:] = 0
    np.testing.assert_array_equal(cache.get_many("fp", "td", ["k1"])["k1"], vecs["k1"])
    assert cache.get_many("fp", "td", []) == {}
    cache.put_many("fp", "td", {})


def test_inputs_are_stored_as_float32(cache: SqlTextEmbeddingCache) -> None:
    wide = np.arange(16, dtype=np.float64)[::2]  # float64, not contiguous
    cache.put_many("fp", "td", {"wide": wide, "short": np.ones(3, dtype=np.float32)})
    got = cache.get_many("fp", "td", ["wide", "short"])
    np.testing.assert_array_equal(got["wide"], wide.astype(np.float32))
    assert got["wide"].dtype == np.float32
    np.testing.assert_array_equal(got["short"], np.ones(3, dtype=np.float32))


def test_put_twice_then_get(cache: SqlTextEmbeddingCache, store: Store) -> None:
    first = _vecs([f"a{i}" for i in range(20)])
    second = {**{k: first[k] for k in list(first)[:10]}, **_vecs(["b1", "b2"], seed=1)}
    cache.put_many("fp", "td", first)
    cache.put_many("fp", "td", first)
    cache.put_many("fp", "td", second)
    assert _num_chunks(store.engine) == 3  # duplicates across chunks are harmless
    every = {**first, **second}
    got = cache.get_many("fp", "td", [*every, *every])
    assert set(got) == set(every)
    for key, vec in every.items():
        np.testing.assert_array_equal(got[key], vec)


def test_a_key_put_again_reads_back_its_newest_vector(cache: SqlTextEmbeddingCache) -> None:
    # The encoder puts a key again when its cached vector was unusable (say NaN): the
    # replacement must win, or every registration would re-encode and append it again.
    bad = {"k1": np.full(4, np.nan, dtype=np.float32), "k2": np.ones(4, dtype=np.float32)}
    cache.put_many("fp", "td", bad)
    fixed = _vecs(["k1"], dim=4, seed=3)
    cache.put_many("fp", "td", fixed)
    got = cache.get_many("fp", "td", ["k1", "k2"])
    np.testing.assert_array_equal(got["k1"], fixed["k1"])
    np.testing.assert_array_equal(got["k2"], np.ones(4))


def test_other_fingerprint_or_digest_misses(cache: SqlTextEmbeddingCache) -> None:
    vecs = _vecs(["k1", "k2"])
    cache.put_many("fp", "td", vecs)
    cache.put_many("fp2", "td2", _vecs(["k1"], seed=5))
    assert cache.get_many("other", "td", ["k1", "k2"]) == {}
    assert cache.get_many("fp", "other", ["k1", "k2"]) == {}
    assert cache.get_many("fp", "td2", ["k1"]) == {}
    assert set(cache.get_many("fp2", "td2", ["k1", "k2"])) == {"k1"}
    np.testing.assert_array_equal(cache.get_many("fp", "td", ["k1"])["k1"], vecs["k1"])


def test_many_chunks(
    cache: SqlTextEmbeddingCache, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_cache, "CHUNK_ROWS", 7)
    keys = [f"label-{i}" for i in range(50)]
    vecs = _vecs(keys, dim=5)
    cache.put_many("fp", "td", vecs)
    assert _num_chunks(store.engine) == 8  # 7 × 7 + 1
    with store.engine.connect() as conn:
        chunks = conn.execute(
            sa.text("SELECT num_rows, keys FROM text_embedding_chunks ORDER BY id")
        ).all()
    assert [n for n, _ in chunks] == [7] * 7 + [1]
    stored = [bytes(blob)[i : i + 16] for _, blob in chunks for i in range(0, len(blob), 16)]
    assert stored == sorted(_hashed(k) for k in keys)  # sorted across the chunks too
    got = cache.get_many("fp", "td", [*reversed(keys), "nope"])
    assert set(got) == set(keys)
    for key in keys:
        np.testing.assert_array_equal(got[key], vecs[key])


def test_a_subset_reads_only_the_matching_chunks(
    cache: SqlTextEmbeddingCache, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_cache, "CHUNK_ROWS", 7)
    keys = [f"label-{i}" for i in range(50)]
    vecs = _vecs(keys)
    cache.put_many("fp", "td", vecs)
    cache.put_many("fp", "other", _vecs(keys[:3]))
    order = sorted(keys, key=_hashed)
    wanted = [order[0], order[1], order[30], order[49]]  # chunks 0, 4 and 7

    statements: list[str] = []
    real = text_cache.driver_cursor

    class Recording:
        def __init__(self, cur: Any) -> None:
            self.cur = cur

        def execute(self, sql: str, params: Any = (), **kwargs: Any) -> Any:
            statements.append(sql)
            return self.cur.execute(sql, params, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.cur, name)

    @contextmanager
    def recording(conn: sa.Connection) -> Iterator[tuple[Any, str]]:
        with real(conn) as (cur, mark):
            yield Recording(cur), mark

    monkeypatch.setattr(text_cache, "driver_cursor", recording)
    got = cache.get_many("fp", "td", [*wanted, "absent"])
    assert set(got) == set(wanted)
    for key in wanted:
        np.testing.assert_array_equal(got[key], vecs[key])
    assert sum("SELECT vectors" in s for s in statements) == 3
    assert all("SELECT vectors" in s or "vectors" not in s for s in statements)

    statements.clear()
    assert cache.get_many("fp", "td", ["absent", "also absent"]) == {}
    assert not any("vectors" in s for s in statements)


# -- migration 0002: one row per label <-> chunks ------------------------------------------------

OLD_CACHE = sa.table(
    "text_embedding_cache",
    sa.column("model_fingerprint", sa.String(64)),
    sa.column("templates_digest", sa.String(64)),
    sa.column("label_key", sa.String(64)),
    sa.column("dim", sa.Integer()),
    sa.column("vector", sa.LargeBinary()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def test_migration_carries_old_rows_into_chunks_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine, "0001")
    big = _vecs([f"{i:064x}" for i in range(16_384 + 5)], dim=4)  # two chunks
    small = _vecs(["k1", "ünïcödé", "k3"], dim=8, seed=1)
    other = _vecs(["k1"], dim=8, seed=2)
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "model_fingerprint": fp,
            "templates_digest": td,
            "label_key": key,
            "dim": v.shape[0],
            "vector": v.tobytes(),
            "created_at": now,
        }
        for fp, td, vecs in (("fp", "td", big), ("fp", "td2", small), ("fp2", "td", other))
        for key, v in vecs.items()
    ]
    # A damaged entry (vector length is not dim * 4) is dropped, not carried over.
    rows.append(
        {
            "model_fingerprint": "fp",
            "templates_digest": "td2",
            "label_key": "bad",
            "dim": 8,
            "vector": b"\x00" * 12,
            "created_at": now,
        }
    )
    with engine.begin() as conn:
        conn.execute(OLD_CACHE.insert(), rows)

    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert migrate.drift(engine) == []
    assert "text_embedding_cache" not in sa.inspect(engine).get_table_names()
    assert _num_chunks(engine) == 4
    assert _num_chunks(engine, " WHERE templates_digest = 'td'") == 3
    cache = SqlTextEmbeddingCache(engine)
    for fp, td, vecs in (("fp", "td", big), ("fp", "td2", small), ("fp2", "td", other)):
        got = cache.get_many(fp, td, [*vecs, "bad", "absent"])
        assert set(got) == set(vecs)
        for key, vec in vecs.items():
            np.testing.assert_array_equal(got[key], vec)

    # A key stored twice (in two chunks) comes back down as one row.
    cache.put_many("fp", "td2", {"k1": small["k1"], "new": np.ones(8, dtype=np.float32)})
    migrate.downgrade(engine, "0001")
    names = sa.inspect(engine).get_table_names()
    assert "text_embedding_cache" in names and "text_embedding_chunks" not in names
    with engine.connect() as conn:
        back = conn.execute(
            sa.select(
                OLD_CACHE.c.model_fingerprint,
                OLD_CACHE.c.templates_digest,
                OLD_CACHE.c.label_key,
                OLD_CACHE.c.dim,
                OLD_CACHE.c.vector,
                OLD_CACHE.c.created_at,
            )
        ).all()
    assert len(back) == len(big) + len(small) + len(other) + 1
    by_key = {(fp, td, key): (dim, bytes(vec), at) for fp, td, key, dim, vec, at in back}
    assert len(by_key) == len(back)
    for fp, td, vecs in (("fp", "td", big), ("fp", "td2", small), ("fp2", "td", other)):
        for key, vec in vecs.items():
            dim, blob, at = by_key[(fp, td, _hashed(key).hex())]  # the hash's hex, not the key
            assert dim == vec.shape[0] and blob == vec.tobytes() and at is not None
    assert by_key[("fp", "td2", _hashed("new").hex())][1] == np.ones(8, np.float32).tobytes()

    # And up again: every entry is found again under its original key.
    migrate.upgrade(engine)
    assert migrate.drift(engine) == []
    assert _num_chunks(engine) == 4
    cache = SqlTextEmbeddingCache(engine)
    for fp, td, vecs in (("fp", "td", big), ("fp", "td2", small), ("fp2", "td", other)):
        got = cache.get_many(fp, td, list(vecs))
        assert set(got) == set(vecs)
        for key, vec in vecs.items():
            np.testing.assert_array_equal(got[key], vec)
    np.testing.assert_array_equal(cache.get_many("fp", "td2", ["new"])["new"], np.ones(8))
    engine.dispose()


def test_a_put_of_the_keys_just_looked_up_hashes_them_once(
    cache: SqlTextEmbeddingCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = text_cache.key_digests

    def counting(keys: Any) -> np.ndarray:
        calls.append(len(keys))
        return real(keys)

    monkeypatch.setattr(text_cache, "key_digests", counting)
    keys = [f"label {i}" for i in range(50)]
    assert cache.get_many("fp", "td", keys) == {}
    rng = np.random.default_rng(0)
    items = {k: rng.standard_normal(8).astype(np.float32) for k in keys}
    cache.put_many("fp", "td", items)  # the same keys, in the same order: no second hashing
    assert calls == [50]
    got = cache.get_many("fp", "td", [*keys[:3], "other"])  # other keys: hashed afresh
    assert calls == [50, 4] and sorted(got) == sorted(keys[:3])
    for key in keys[:3]:
        np.testing.assert_array_equal(got[key], items[key])
