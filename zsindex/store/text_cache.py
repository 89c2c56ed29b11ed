"""SQL-backed text-embedding cache keyed by (model fingerprint, templates digest, label key).

It follows the ``TextEmbeddingCache`` protocol of :mod:`zsindex.encoders`: re-registering labels
that were already embedded with the same model and templates encodes nothing.

Entries live in chunks (``text_embedding_chunks``), not one row per label: a row per label (three
64-character strings, a ~700-byte row plus its primary-key B-tree entry) cost ~1.8 s of writes
per 100k labels and made the cache over half of the store's bytes. A chunk holds up to
:data:`CHUNK_ROWS` entries as two blobs: the labels' 16-byte BLAKE2b key digests sorted as bytes,
and their float32 vectors in the same order. A lookup reads the key blobs of the (fingerprint,
digest) chunks, binary-searches them, and fetches the vectors of only the chunks with a hit.

Entries are never updated in place: putting a key that is already cached adds it again in a new
chunk, and lookups read the newest chunk first. One key maps to one vector (same model, same
templates, same label), so a duplicate only costs space; the encoder puts a key again only when
its cached vector was unusable (then the new one wins) or when two registrations raced.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine

from zsindex.store.bulk import driver_cursor
from zsindex.store.engine import read_transaction, write_transaction
from zsindex.store.models import TextEmbeddingChunkRow

CHUNK_ROWS = 16_384  # entries per chunk: the most vectors a lookup loads per matching chunk
KEY_BYTES = 16
_KEY_DTYPE = np.dtype(f"S{KEY_BYTES}")  # compares exactly like the bytes (memcmp order)
_TABLE = TextEmbeddingChunkRow.__tablename__
_WRITE_COLUMNS = (
    "model_fingerprint",
    "templates_digest",
    "dim",
    "num_rows",
    "keys",
    "vectors",
    "created_at",
)


def key_digests(keys: Sequence[str]) -> np.ndarray:
    """The 16-byte BLAKE2b digests of ``keys`` (UTF-8) as an ``S16`` array, in input order."""
    blake2b = functools.partial(hashlib.blake2b, digest_size=KEY_BYTES)  # faster than kwargs
    joined = b"".join([blake2b(k.encode()).digest() for k in keys])  # UTF-8
    return np.frombuffer(joined, dtype=_KEY_DTYPE)


def _matches(sorted_probes: np.ndarray, chunk_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(probe indices, chunk rows)`` of the probes found in a chunk (both key arrays sorted,
    the probes distinct). Binary-searches the smaller array in the larger."""
    if len(chunk_keys) <= len(sorted_probes):
        pos = np.searchsorted(sorted_probes, chunk_keys)
        rows = np.flatnonzero(pos < len(sorted_probes))
        rows = rows[sorted_probes[pos[rows]] == chunk_keys[rows]]
        return pos[rows], rows
    pos = np.searchsorted(chunk_keys, sorted_probes)
    probes = np.flatnonzero(pos < len(chunk_keys))
    probes = probes[chunk_keys[pos[probes]] == sorted_probes[probes]]
    return probes, pos[probes]


class SqlTextEmbeddingCache:
    """Text embeddings persisted in the store (fp32, in chunks of up to ``CHUNK_ROWS``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The keys and digests of the last lookup: a new label set puts exactly the keys it
        # looked up, so hashing them once serves both (115k keys: ~0.1 s).
        self._last: tuple[list[str], np.ndarray] = ([], np.empty(0, dtype=_KEY_DTYPE))

    def _digests(self, keys: list[str]) -> np.ndarray:
        last_keys, last_digests = self._last  # one read: safe if threads share this cache
        if keys == last_keys:
            return last_digests
        digests = key_digests(keys)
        self._last = (keys, digests)
        return digests

    def get_many(
        self, model_fingerprint: str, templates_digest: str, keys: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Float32 copies of the cached vectors of those of ``keys`` that are present."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        probes = self._digests(unique)
        order = np.argsort(probes, kind="stable")
        sorted_probes = probes[order]
        # Per sorted probe: the chunk (index into `chunks`) that has it, -1 for none; its row.
        chunk_of = np.full(len(unique), -1, dtype=np.int64)
        row_of = np.zeros(len(unique), dtype=np.int64)
        chunks: list[tuple[int, int, int]] = []  # (id, num_rows, dim)
        found: dict[str, np.ndarray] = {}
        names = np.array(unique, dtype=object)  # fancy-indexes keys in C, not a Python loop
        with read_transaction(self.engine) as conn, driver_cursor(conn) as (cur, mark):
            # psycopg: binary results, or every blob comes as hex text (7x slower for vectors).
            binary = {"binary": True} if conn.dialect.name == "postgresql" else {}
            cur.execute(
                f"SELECT id, num_rows, dim, keys FROM {_TABLE} "
                f"WHERE model_fingerprint = {mark} AND templates_digest = {mark} ORDER BY id DESC",
                (model_fingerprint, templates_digest),
                **binary,
            )
            for chunk_id, num_rows, dim, key_blob in cur.fetchall():
                if len(key_blob) != num_rows * KEY_BYTES:
                    continue  # damaged chunk: treat as absent
                hit, rows = _matches(sorted_probes, np.frombuffer(key_blob, dtype=_KEY_DTYPE))
                # Newest chunk first: a key put again (its cached vector was unusable, or two
                # registrations raced) is read from its latest chunk.
                new = chunk_of[hit] < 0
                chunk_of[hit[new]] = len(chunks)
                row_of[hit[new]] = rows[new]
                chunks.append((int(chunk_id), int(num_rows), int(dim)))
            for index in np.unique(chunk_of[chunk_of >= 0]).tolist():
                chunk_id, num_rows, dim = chunks[index]
                cur.execute(
                    f"SELECT vectors FROM {_TABLE} WHERE id = {mark}", (chunk_id,), **binary
                )
                fetched = cur.fetchone()
                if fetched is None or len(fetched[0]) != num_rows * dim * 4:
                    continue  # gone or damaged: treat as absent
                vectors = np.frombuffer(fetched[0], dtype="<f4").reshape(num_rows, dim)
                members = np.flatnonzero(chunk_of == index)
                # One gather copies the hit rows out of the driver's buffer: every returned
                # vector is a row of this new, writable float32 array.
                gathered = vectors[row_of[members]].astype(np.float32, copy=False)
                found.update(zip(names[order[members]], gathered, strict=True))
        return found

    def put_many(
        self, model_fingerprint: str, templates_digest: str, items: Mapping[str, np.ndarray]
    ) -> None:
        """Store ``items`` (float32 ``[dim]`` each) in new chunks, in one transaction."""
        if not items:
            return
        keys = list(items)
        digests = self._digests(keys)
        groups: list[tuple[np.ndarray, np.ndarray]] = []  # (indices into keys, vectors)
        try:
            matrix = np.array(list(items.values()), dtype=np.float32)
        except ValueError:  # vectors of different lengths
            matrix = np.empty(0, dtype=np.float32)
        if matrix.ndim == 2:
            groups.append((np.arange(len(keys)), matrix))
        else:  # mixed dims (or odd shapes): each vector flattened, grouped by length
            flat = [np.ascontiguousarray(v, dtype=np.float32).reshape(-1) for v in items.values()]
            dims = np.fromiter((v.shape[0] for v in flat), dtype=np.int64, count=len(flat))
            for dim in np.unique(dims).tolist():
                members = np.flatnonzero(dims == dim)
                groups.append((members, np.stack([flat[i] for i in members.tolist()])))
        # The timestamp goes through the dialect's own DateTime conversion, so chunks read back
        # exactly as ORM-written ones.
        dialect = self.engine.dialect
        stamp_type = TextEmbeddingChunkRow.__table__.c.created_at.type
        convert = stamp_type.dialect_impl(dialect).bind_processor(dialect)
        now = dt.datetime.now(dt.UTC)
        stamp = convert(now) if convert is not None else now
        rows: list[tuple[Any, ...]] = []
        for members, group in groups:  # one group in practice
            by_key = np.argsort(digests[members], kind="stable")
            sorted_digests = digests[members][by_key]
            sorted_vectors = np.ascontiguousarray(group[by_key], dtype="<f4")
            for start in range(0, len(members), CHUNK_ROWS):
                stop = min(start + CHUNK_ROWS, len(members))
                rows.append(
                    (
                        model_fingerprint,
                        templates_digest,
                        int(group.shape[1]),
                        stop - start,
                        # Contiguous slices passed as buffers: the drivers copy them once.
                        sorted_digests[start:stop].data.cast("B"),
                        sorted_vectors[start:stop].data.cast("B"),
                        stamp,
                    )
                )
        # Driver-level executemany, like the label bulk path; all chunks in one transaction.
        with write_transaction(self.engine) as conn, driver_cursor(conn) as (cur, mark):
            cur.executemany(
                f"INSERT INTO {_TABLE} ({', '.join(_WRITE_COLUMNS)}) "
                f"VALUES ({', '.join([mark] * len(_WRITE_COLUMNS))})",
                rows,
            )
