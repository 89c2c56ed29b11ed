"""Loading a label-set version for classification: from a verified on-disk cache, or from SQL.

The cache (``ZSINDEX_HOME/cache/index``) holds the search matrix already in storage order (BFS
for trees), the row names and the tree, keyed by the version's content digest. A missing, stale
or corrupt file is detected before use and rebuilt from SQL, the source of truth.

A cold load reads the labels and the matrix from SQL side by side (the matrix over several
connections on PostgreSQL) and is ready before its cache file exists: a large matrix's file is
written on a background thread (:func:`wait_for_cache_writes` waits for it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.classify.loaded import LoadedLabelSet, arrange
from zsindex.classify.tree import Tree
from zsindex.config import Settings
from zsindex.errors import NotFoundError
from zsindex.store.records import VersionRecord
from zsindex.store.repository import Store

if TYPE_CHECKING:
    from zsindex.index.cache import IndexCache
    from zsindex.index.cache_format import Extra
    from zsindex.index.types import SearchIndex

log = logging.getLogger(__name__)

INDEX_SPEC = "exact"
CACHE_FORMAT = "loaded-v2"
"""v2: an fp16 set is cached as the fp16 rows the exact index scans (v1 held an fp32 copy)."""
BACKGROUND_WRITE_BYTES = 64 << 20
"""A matrix at least this large is written to the local cache on a background thread: a cold
start is ready as soon as SQL has been read (writing 2 GB with its checksums and fsync took
longer than the read itself), and a one-shot command still finishes the file before it exits."""

_writes: dict[str, threading.Thread] = {}
_writes_lock = threading.Lock()


CACHE_MIN_BYTES = 16 * 2**20
"""Smaller matrices are read from the store every time: a few milliseconds, where writing the
local cache (a file, two fsyncs, a stamp) would cost a new version's propagation more."""

PARALLEL_LABELS = 50_000
"""From this many labels, names and matrix are read side by side (below, one after the other:
a new thread costs a small set's propagation more than the overlap saves)."""


def cache_dir(settings: Settings) -> Path:
    return settings.cache_dir / "index"


def _cache_key(record: VersionRecord) -> str:
    # The digest covers labels, templates and model; the version id pins the exact rows.
    return f"{record.digest}-{record.version_id}"


def load_current(store: Store, name: str, settings: Settings) -> LoadedLabelSet:
    """Load ``name``'s current version (cache first, else SQL and then fill the cache), served
    by the index that the device and the index setting choose."""
    return load_record(store, store.current(name), settings)


def load_version(store: Store, name: str, number: int, settings: Settings) -> LoadedLabelSet:
    """Load version ``number`` of ``name`` (a pinned ``NAME@N``), as :func:`load_current`."""
    return load_record(store, store.version(name, number), settings)


def load_record(store: Store, record: VersionRecord, settings: Settings) -> LoadedLabelSet:
    """Load the version ``record`` names, served by the index its settings choose."""
    loaded = _load_exact(store, record, settings)
    serving = serving_index(loaded, settings)
    if serving is loaded.index:
        return loaded
    return replace(loaded, index=serving, host_matrix=loaded.matrix)


def serving_index(loaded: LoadedLabelSet, settings: Settings) -> SearchIndex:
    """The index that serves a loaded matrix: exact on CPU, on the GPU where the device allows,
    approximate only when the version (``labels add --index``) or ``ZSINDEX_INDEX`` asks (see
    :func:`zsindex.index.choose_index`)."""
    from zsindex.index.choice import choose_index
    from zsindex.index.compressed import compress
    from zsindex.index.device import choose_exact_backend
    from zsindex.index.exact import ExactIndex
    from zsindex.index.types import IndexSpec

    exact = loaded.index
    spec = loaded.record.index_spec or settings.index  # the version's own choice first
    if spec == "exact" and settings.device == "cpu":
        return exact  # the loaded CPU index itself: nothing to build
    parsed = IndexSpec.parse(spec)
    on_cpu = choose_exact_backend(settings.device).device == "cpu"
    if parsed.storage == "int8" and isinstance(exact, ExactIndex) and on_cpu:
        return compress(exact, min_rows=0)  # an int8 scan copy over the loaded rows
    index = choose_index(loaded.matrix, device=settings.device, spec=spec, check_finite=False)
    # On CPU the choice is the exact index already loaded: keep it (and its rows as loaded).
    return exact if index.backend == exact.backend and index.spec == exact.spec else index


def _load_exact(store: Store, record: VersionRecord, settings: Settings) -> LoadedLabelSet:
    from zsindex.index import IndexCache

    name = record.labelset
    if record.num_labels * record.dim * np.dtype(record.dtype).itemsize < CACHE_MIN_BYTES:
        return load_from_sql(store, record)
    cache = IndexCache(cache_dir(settings))
    hit = cache.load(_cache_key(record), INDEX_SPEC)
    if hit is not None and hit.meta.get("format") == CACHE_FORMAT:
        payload = hit.extra
        parents = np.asarray(payload["parents"])
        tree = Tree.from_bfs_parents(parents, record.rank_names) if hit.meta.get("tree") else None
        return LoadedLabelSet(
            record=record,
            names=list(payload["names"]),
            tree=tree,
            index=hit.index,
            order=np.asarray(payload["order"]),
        )
    loaded = load_from_sql(store, record)
    extra: dict[str, Extra] = {
        "names": loaded.names,
        "parents": loaded.tree.parents if loaded.tree is not None else np.empty(0, np.int64),
        "order": loaded.order,
    }
    meta = {"format": CACHE_FORMAT, "tree": loaded.tree is not None, "labelset": name}
    key = _cache_key(record)
    if loaded.matrix.nbytes < BACKGROUND_WRITE_BYTES:
        _write_cache(cache, key, loaded.index, extra, meta)
        return loaded
    with _writes_lock:  # one writer per file in this process; a start never waits for it
        running = _writes.get(key)
        if running is None or not running.is_alive():
            writer = threading.Thread(
                target=_write_cache_behind,
                args=(cache, key, loaded.index, extra, meta),
                name=f"zsindex-cache-write-{name}",
                daemon=False,  # a one-shot command finishes the file before it exits
            )
            _writes[key] = writer
            writer.start()
    return loaded


def _write_cache(
    cache: IndexCache,
    key: str,
    index: SearchIndex,
    extra: Mapping[str, Extra],
    meta: Mapping[str, Any],
) -> None:
    try:
        cache.store(key, INDEX_SPEC, index, extra=extra, meta=meta)
    except OSError as exc:  # a read-only or full disk only costs the next cold start
        log.warning("could not write the index cache for %s: %s", meta["labelset"], exc)


def _write_cache_behind(*args: Any) -> None:
    try:
        _write_cache(*args)
    except Exception:  # the load itself succeeded: say why the next start will read SQL again
        log.exception("could not write the index cache for %s", args[-1]["labelset"])


def wait_for_cache_writes(timeout: float | None = None) -> bool:
    """Wait for this process's background cache writes; whether they have all finished."""
    with _writes_lock:
        writers = list(_writes.values())
    deadline = None if timeout is None else time.monotonic() + timeout
    for writer in writers:
        writer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    with _writes_lock:
        for key, writer in list(_writes.items()):
            if not writer.is_alive():
                del _writes[key]
        return not _writes


def load_from_sql(store: Store, record: VersionRecord) -> LoadedLabelSet:
    """Build a loaded label set straight from the store: the labels are read on a thread of
    their own while the matrix comes in (each on its own connections)."""
    from zsindex.index import ExactIndex

    if record.num_labels < PARALLEL_LABELS:  # a thread would cost more than it saves
        columns = store.load_labels(record.version_id)
        matrix = store.load_embeddings(record.version_id)
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="zsindex-labels") as pool:
            labels = pool.submit(store.load_labels, record.version_id)
            matrix = store.load_embeddings(record.version_id)
            columns = labels.result()
    if len(columns) != len(matrix):
        raise NotFoundError(
            f"label set {record.labelset!r} version {record.version}: {len(columns)} labels but "
            f"{len(matrix)} embedding rows (deleted while loading?)"
        )
    order, tree = arrange(columns, record.rank_names)
    if tree is not None:
        matrix = matrix[order]
        names = [columns.names[i] for i in order.tolist()]
    else:
        names = columns.names  # identity order: no copy of the matrix
    index = ExactIndex(matrix, check_finite=False)
    return LoadedLabelSet(record=record, names=names, tree=tree, index=index, order=order)
