"""Search over a label matrix: exact (default) and approximate indexes, exact probabilities,
a verified on-disk cache and an atomically swapped registry of loaded indexes.

Importing this package loads numpy only; faiss loads when an approximate index, a GPU check or a
cached faiss index needs it, and torch only for a GPU path (never on a CPU-only machine under
``device="auto"``, never under ``device="cpu"``).

:func:`choose_index` picks the index: exact on the CPU (``numpy-blocked``) or a GPU
(``faiss-gpu-flat``, ``torch-cuda``) as ``ZSINDEX_DEVICE`` allows, approximate only when a spec
asks. Typical use (from ``zsindex.catalog``/``zsindex.classify``)::

    cache = IndexCache(settings.home / "index-cache")
    loaded = cache.load(digest, "exact")
    if loaded is None:
        index = choose_index(matrix, device=settings.device)
        cache.store(digest, "exact", index, extra={"names": names}, meta={"version": 7})
    else:
        index = on_device(loaded.index, settings.device)
    result = index.search(queries, k=5, logit_scale=scale, logit_bias=bias)
    result.ids, result.scores, result.probabilities, result.exact_probabilities
"""

from __future__ import annotations

from zsindex.index.ann import AnnIndex
from zsindex.index.build import build_index, export_index, restore_index
from zsindex.index.cache import IndexCache, LoadedIndex
from zsindex.index.choice import choose_index
from zsindex.index.device import DeviceChoice, choose_exact_backend, on_device, resolve_device
from zsindex.index.exact import ExactIndex
from zsindex.index.multi import search_per_query
from zsindex.index.registry import Entry, IndexRegistry
from zsindex.index.torch_index import TorchIndex
from zsindex.index.tuner import TuneReport, simulate_image_queries, tune
from zsindex.index.types import IndexSpec, Mode, Probabilities, SearchIndex, SearchResult

__all__ = [
    "AnnIndex",
    "DeviceChoice",
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
    "TorchIndex",
    "TuneReport",
    "build_index",
    "choose_exact_backend",
    "choose_index",
    "export_index",
    "on_device",
    "resolve_device",
    "restore_index",
    "search_per_query",
    "simulate_image_queries",
    "tune",
]
