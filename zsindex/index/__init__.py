"""Search over a label matrix: exact (default) and approximate indexes, exact probabilities,
a verified on-disk cache and an atomically swapped registry of loaded indexes.

Importing this package loads numpy only; faiss loads when an approximate index, a GPU check or a
cached faiss index needs it, and torch only for the GPU normaliser.

Typical use (from ``zsindex.classify``)::

    cache = IndexCache(settings.home / "index-cache")
    loaded = cache.load(digest, "exact")
    if loaded is None:
        index = build_index(matrix, "exact")
        cache.store(digest, "exact", index, extra={"names": names}, meta={"version": 7})
    result = index.search(queries, k=5, logit_scale=scale, logit_bias=bias)
    result.ids, result.scores, result.probabilities, result.exact_probabilities
"""

from __future__ import annotations

from zsindex.index.ann import AnnIndex
from zsindex.index.build import build_index, export_index, restore_index
from zsindex.index.cache import IndexCache, LoadedIndex
from zsindex.index.device import on_device, resolve_device
from zsindex.index.exact import ExactIndex
from zsindex.index.multi import search_per_query
from zsindex.index.registry import Entry, IndexRegistry
from zsindex.index.tuner import TuneReport, simulate_image_queries, tune
from zsindex.index.types import IndexSpec, Mode, Probabilities, SearchIndex, SearchResult

__all__ = [
    "AnnIndex",
    "Entry",
    "ExactIndex",
    "IndexCache",
    "IndexRegistry",
    "IndexSpec",
    "LoadedIndex",
    "Mode",
    "Probabilities",
    "SearchIndex",
    "SearchResult",
    "TuneReport",
    "build_index",
    "export_index",
    "on_device",
    "resolve_device",
    "restore_index",
    "search_per_query",
    "simulate_image_queries",
    "tune",
]
