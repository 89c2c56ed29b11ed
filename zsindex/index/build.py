"""Building indexes from a label matrix, and their (de)serialisation for the cache."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.index.exact import ExactIndex
from zsindex.index.types import IndexSpec, SearchIndex

log = logging.getLogger(__name__)


def build_index(
    matrix: np.ndarray,
    spec: str | IndexSpec = "exact",
    *,
    device: str = "cpu",
    tune_queries: np.ndarray | None = None,
    num_tune_queries: int = 256,
    target_recall: float = 0.99,
    k: int = 5,
    keep_fp32: bool | None = None,
    check_finite: bool = True,
    seed: int = 0,
) -> SearchIndex:
    """Build the index ``spec`` over ``matrix`` (``[N, dim]`` fp16/fp32, ids = row positions).

    Args:
        matrix: L2-normalised label embeddings.
        spec: ``exact`` (default), ``ivf1024``, ``ivf:nlist=1024,sq8``, ``hnsw32,fp16`` …
        device: ``cpu`` (default here), ``auto``, ``cuda`` or ``cuda:N``; only exact search moves
            to a GPU (FAISS GPU, else torch CUDA; decided at run time by
            :func:`~zsindex.index.device.choose_exact_backend`).
        tune_queries: held-out real image embeddings for the tuner; ``None`` simulates
            ``num_tune_queries`` image-like queries from the matrix.
        num_tune_queries: how many queries to simulate.
        target_recall: recall@k the tuner must reach; otherwise the index searches exactly.
        k: the k recall is tuned at.
        keep_fp32: keep an fp32 copy of an fp16 matrix (``None``: when it fits in memory).
        check_finite: reject a matrix with NaN/inf.
        seed: training and simulation seed.

    Returns:
        An :class:`ExactIndex` (or a GPU ``GpuFlatIndex``/``TorchIndex``) for ``exact``; otherwise
        an ``AnnIndex`` whose ``tuning`` holds the tuner's report and which searches exactly when
        tuning fell back.
    """
    parsed = IndexSpec.parse(spec)
    exact = ExactIndex(matrix, keep_fp32=keep_fp32, check_finite=check_finite)
    if parsed.is_exact:
        from zsindex.index.device import on_device

        return on_device(exact, device)
    from zsindex.index.ann import AnnIndex, build_faiss
    from zsindex.index.tuner import simulate_image_queries, tune

    fp32 = exact.matrix
    faiss_index = build_faiss(fp32, parsed, seed=seed)
    index = AnnIndex(exact, parsed, faiss_index, search_param=parsed.fixed_search_param or 1)
    if parsed.fixed_search_param is not None:
        index.tuning = {"chosen": parsed.fixed_search_param, "reason": "fixed in the spec"}
        return index
    if tune_queries is None:
        tune_queries, _ = simulate_image_queries(fp32, num_tune_queries, seed=seed + 1)
    report = tune(index, tune_queries, k=k, target_recall=target_recall)
    index.tuning = report.to_dict()
    return index


def export_index(index: SearchIndex) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and JSON params that :func:`restore_index` turns back into ``index``.

    A GPU index stores its matrix like an :class:`ExactIndex` does and restores as one (on the
    CPU; :func:`~zsindex.index.device.on_device` moves it back).
    """
    from zsindex.index.ann import AnnIndex

    exact = getattr(index, "exact", index)
    host_matrix = getattr(exact, "host_matrix", None)
    if callable(host_matrix):  # TorchIndex: copy the device matrix back
        matrix = np.asarray(host_matrix())
        source_dtype = np.dtype(getattr(exact, "source_dtype", matrix.dtype))
    elif isinstance(exact, ExactIndex):
        matrix, source_dtype = exact.matrix, exact.source_dtype
    else:
        raise InvalidInputError(f"cannot store a {type(index).__name__}")
    arrays: dict[str, np.ndarray] = {"matrix": matrix}
    params: dict[str, Any] = {
        "source_dtype": source_dtype.name,
        "keep_fp32": matrix.dtype == np.float32,
    }
    if isinstance(index, AnnIndex):
        params["search_param"] = index.search_param
        params["tuning"] = index.tuning
        if index.faiss_index is not None:
            import faiss

            arrays["faiss"] = np.asarray(faiss.serialize_index(index.faiss_index))
    return arrays, params


def restore_index(
    spec: IndexSpec, arrays: dict[str, np.ndarray], params: dict[str, Any]
) -> SearchIndex:
    """Rebuild an index from verified cache arrays (no copy of an fp32 matrix)."""
    exact = ExactIndex(
        arrays["matrix"], keep_fp32=bool(params.get("keep_fp32", True)), check_finite=False
    )
    exact.source_dtype = np.dtype(params.get("source_dtype", exact.matrix.dtype.name))
    if spec.is_exact:
        return exact
    from zsindex.index.ann import AnnIndex

    faiss_index = None
    search_param = params.get("search_param")
    if search_param is not None:
        import faiss

        faiss_index = faiss.deserialize_index(np.ascontiguousarray(arrays["faiss"]))
        if faiss_index.ntotal != exact.count or faiss_index.d != exact.dim:
            raise InvalidInputError("faiss index does not match the label matrix")
    return AnnIndex(exact, spec, faiss_index, search_param, params.get("tuning"))
