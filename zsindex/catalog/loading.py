"""Loading a label-set version for classification: from a verified on-disk cache, or from SQL.

The cache (``ZSINDEX_HOME/cache/index``) holds the search matrix already in storage order (BFS
for trees), the row names and the tree, keyed by the version's content digest. A missing, stale
or corrupt file is detected before use and rebuilt from SQL, the source of truth.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zsindex.classify.loaded import LoadedLabelSet, arrange
from zsindex.classify.tree import Tree
from zsindex.config import Settings
from zsindex.store.records import VersionRecord
from zsindex.store.repository import Store

if TYPE_CHECKING:
    from zsindex.index.types import SearchIndex

log = logging.getLogger(__name__)

INDEX_SPEC = "exact"
CACHE_FORMAT = "loaded-v1"


def cache_dir(settings: Settings) -> Path:
    return settings.cache_dir / "index"


def _cache_key(record: VersionRecord) -> str:
    # The digest covers labels, templates and model; the version id pins the exact rows.
    return f"{record.digest}-{record.version_id}"


def load_current(store: Store, name: str, settings: Settings) -> LoadedLabelSet:
    """Load ``name``'s current version (cache first, else SQL and then fill the cache), served
    by the index that the device and the index setting choose."""
    loaded = _load_exact(store, name, settings)
    serving = serving_index(loaded, settings)
    if serving is loaded.index:
        return loaded
    return replace(loaded, index=serving, host_matrix=loaded.matrix)


def serving_index(loaded: LoadedLabelSet, settings: Settings) -> SearchIndex:
    """The index that serves a loaded matrix: exact on CPU, on the GPU where the device allows,
    approximate only when the version (``labels add --index``) or ``ZSINDEX_INDEX`` asks (see
    :func:`zsindex.index.choose_index`)."""
    from zsindex.index.choice import choose_index

    exact = loaded.index
    spec = loaded.record.index_spec or settings.index  # the version's own choice first
    if spec == "exact" and settings.device == "cpu":
        return exact  # the loaded CPU index itself: nothing to build
    index = choose_index(loaded.matrix, device=settings.device, spec=spec, check_finite=False)
    # On CPU the choice is the exact index already loaded: keep it (its fp32 copy included).
    return exact if index.backend == exact.backend and index.spec == exact.spec else index


def _load_exact(store: Store, name: str, settings: Settings) -> LoadedLabelSet:
    from zsindex.index import IndexCache

    record = store.current(name)
    cache = IndexCache(cache_dir(settings))
    hit = cache.load(_cache_key(record), INDEX_SPEC)
    if hit is not None and hit.meta.get("format") == CACHE_FORMAT:
        extra = hit.extra
        parents = np.asarray(extra["parents"])
        tree = Tree.from_bfs_parents(parents, record.rank_names) if hit.meta.get("tree") else None
        return LoadedLabelSet(
            record=record,
            names=list(extra["names"]),
            tree=tree,
            index=hit.index,
            order=np.asarray(extra["order"]),
        )
    loaded = load_from_sql(store, record)
    try:
        cache.store(
            _cache_key(record),
            INDEX_SPEC,
            loaded.index,
            extra={
                "names": loaded.names,
                "parents": loaded.tree.parents
                if loaded.tree is not None
                else np.empty(0, np.int64),
                "order": loaded.order,
            },
            meta={"format": CACHE_FORMAT, "tree": loaded.tree is not None, "labelset": name},
        )
    except OSError as exc:  # a read-only or full disk only costs the next cold start
        log.warning("could not write the index cache for %s: %s", name, exc)
    return loaded


def load_from_sql(store: Store, record: VersionRecord) -> LoadedLabelSet:
    """Build a loaded label set straight from the store."""
    from zsindex.index import ExactIndex

    columns = store.load_labels(record.version_id)
    matrix = store.load_embeddings(record.version_id)
    order, tree = arrange(columns, record.rank_names)
    if tree is not None:
        matrix = matrix[order]
        names = [columns.names[i] for i in order.tolist()]
    else:
        names = columns.names
    index = ExactIndex(matrix, check_finite=False)
    return LoadedLabelSet(record=record, names=names, tree=tree, index=index, order=order)
