"""The one place the product picks its search index: exact on the best device, or approximate
only when a spec asks for it.

- ``spec`` ``None`` or ``exact``: exact search where :func:`~zsindex.index.device.
  choose_exact_backend` puts it: on the CPU :class:`ExactIndex` (``numpy-blocked``) or, for
  ``exact,int8``, a :class:`~zsindex.index.compressed.CompressedIndex` (``int8-rescore``: an
  int8 scan copy whose error bound proves the top k exact and bounds the normaliser within
  1e-3; opt-in, see its module for when it pays),
  :class:`~zsindex.index.device.GpuFlatIndex` (``faiss-gpu-flat``) with FAISS GPU, else
  :class:`~zsindex.index.torch_index.TorchIndex` (``torch-cuda``) when torch sees CUDA.
- an approximate spec (``ivf…``/``hnsw…``, with storage): an :class:`AnnIndex` built and tuned
  as :func:`~zsindex.index.build.build_index` does, on the CPU; its probabilities stay exact
  unless a search asks for ``topk``.

Every index returned names its ``backend``, ``device`` and ``spec``; every result its
``backend``, ``exact_probabilities`` and ``exact_neighbors``.
"""

from __future__ import annotations

import logging

import numpy as np

from zsindex.config import validate_device
from zsindex.index.build import build_index
from zsindex.index.compressed import compress
from zsindex.index.device import GpuFlatIndex, choose_exact_backend
from zsindex.index.exact import ExactIndex
from zsindex.index.types import IndexSpec, SearchIndex

log = logging.getLogger(__name__)


def choose_index(
    matrix: np.ndarray,
    *,
    device: str = "auto",
    spec: str | IndexSpec | None = None,
    check_finite: bool = True,
) -> SearchIndex:
    """Build the index that serves ``matrix`` on ``device``.

    Args:
        matrix: ``[N, dim]`` float16/float32 L2-normalised label embeddings (ids = rows).
        device: a ``ZSINDEX_DEVICE`` value: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``cpu``
            always stays on the CPU; ``cuda`` without a usable GPU logs a warning and does too.
        spec: ``None``/``exact`` for exact search, or an approximate spec (``ivf1024``,
            ``hnsw32,fp16`` …), which always runs on the CPU.
        check_finite: reject a matrix with NaN/inf (skip for one read from a verified store).

    Returns:
        The index; ``index.backend`` and ``index.device`` say which path serves it.

    Raises:
        InvalidInputError: a bad ``device``, ``spec`` or matrix.
    """
    device = validate_device(device)
    parsed = IndexSpec.parse("exact" if spec is None else spec)
    if not parsed.is_exact:
        if device not in ("auto", "cpu"):
            log.info("%s is an approximate index: searching on CPU, not %s", parsed, device)
        return build_index(matrix, parsed, check_finite=check_finite)
    choice = choose_exact_backend(device)
    if choice.backend == "torch-cuda":
        from zsindex.index.torch_index import TorchIndex

        index: SearchIndex = TorchIndex(matrix, choice.device, check_finite=check_finite)
    else:
        exact = ExactIndex(matrix, check_finite=check_finite)
        index = exact
        if parsed.storage == "int8" and choice.device == "cpu":
            index = compress(exact, min_rows=0)
        if choice.backend == "faiss-gpu-flat":  # pragma: no cover - needs FAISS GPU
            index = GpuFlatIndex(exact, choice.device_id)
    log.info("exact search over %d labels: %s on %s", index.count, index.backend, index.device)
    return index
