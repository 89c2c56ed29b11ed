"""CPU/GPU choice for exact search, decided at run time.

On a machine with FAISS GPU (``faiss.StandardGpuResources`` present and a GPU visible), exact
search uses ``GpuIndexFlatIP`` with fp16 storage for the top k; scores are recomputed in fp32 and
the softmax normaliser comes from a blocked fp32 ``torch`` pass on the GPU when torch sees CUDA
(else the CPU pass). On CPU (always, in CI), :class:`ExactIndex` answers: measured here, FAISS's
CPU ``IndexFlatIP`` is 2-3x slower than a blocked BLAS GEMM with a running top-k.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from zsindex.index.exact import ExactIndex, make_result
from zsindex.index.types import (
    IndexSpec,
    Mode,
    Probabilities,
    SearchIndex,
    SearchResult,
    Subset,
    as_queries,
    check_k,
    check_logits,
    check_mode,
)

log = logging.getLogger(__name__)


def faiss_gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu or without a GPU)."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        return 0
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # pragma: no cover - driver trouble means no GPU
        return 0


def resolve_device(device: str = "auto") -> str:
    """``cpu`` or ``cuda:N`` for exact search from ``auto``/``cpu``/``cuda``/``cuda:N``."""
    if device == "cpu":
        return "cpu"
    gpus = faiss_gpu_count()
    if gpus == 0:
        if device != "auto":
            log.warning("device %s requested but FAISS has no GPU: searching on CPU", device)
        return "cpu"
    index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0
    return f"cuda:{min(index, gpus - 1)}"


def on_device(index: SearchIndex, device: str = "auto") -> SearchIndex:
    """Return ``index`` moved to the device ``device`` resolves to (exact indexes only)."""
    target = resolve_device(device)
    if target == "cpu" or not isinstance(index, ExactIndex):
        return index
    return GpuFlatIndex(index, int(target.split(":", 1)[1]))


class GpuFlatIndex:  # pragma: no cover - needs FAISS GPU (see tests marked gpu)
    """Exact search on a GPU: FAISS ``GpuIndexFlatIP`` with fp16 storage for the top k."""

    backend = "faiss-gpu-flat"

    def __init__(self, exact: ExactIndex, device_id: int = 0) -> None:
        import faiss

        self.exact = exact
        self.device_id = device_id
        self._res = faiss.StandardGpuResources()
        config = faiss.GpuIndexFlatConfig()
        config.device = device_id
        config.useFloat16 = True
        self._gpu = faiss.GpuIndexFlatIP(self._res, exact.dim, config)
        step = 262144
        for start in range(0, exact.count, step):
            block = np.ascontiguousarray(exact.matrix[start : start + step], dtype=np.float32)
            self._gpu.add(block)
        self._torch_matrix: Any = None

    @property
    def count(self) -> int:
        """Number of labels."""
        return self.exact.count

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.exact.dim

    @property
    def spec(self) -> IndexSpec:
        """Always ``exact``."""
        return self.exact.spec

    def _lse(self, q: np.ndarray, scale: float) -> np.ndarray:
        try:
            import torch
        except ImportError:
            return self.exact.log_normalizer(q, logit_scale=scale)
        if not torch.cuda.is_available():
            return self.exact.log_normalizer(q, logit_scale=scale)
        dev = f"cuda:{self.device_id}"
        if self._torch_matrix is None:
            self._torch_matrix = torch.from_numpy(np.asarray(self.exact.matrix)).to(dev).float()
        with torch.no_grad():
            qt = torch.from_numpy(q * np.float32(scale)).to(dev)
            step = max(1, (1 << 28) // max(1, len(q)))
            parts = [
                torch.logsumexp(qt @ self._torch_matrix[a : a + step].T, dim=1)
                for a in range(0, self.count, step)
            ]
            lse = torch.logsumexp(torch.stack(parts, dim=1).double(), dim=1)
        return np.asarray(lse.cpu().numpy(), dtype=np.float64)

    def search(
        self,
        queries: np.ndarray,
        k: int = 5,
        *,
        logit_scale: float = 100.0,
        logit_bias: float = 0.0,
        mode: Mode = "softmax",
        subset: Subset = None,
        probabilities: Probabilities = "exact",
    ) -> SearchResult:
        """As :meth:`ExactIndex.search`; subsets are searched on the CPU."""
        if subset is not None:
            return self.exact.search(
                queries,
                k,
                logit_scale=logit_scale,
                logit_bias=logit_bias,
                mode=mode,
                subset=subset,
                probabilities=probabilities,
            )
        q = as_queries(queries, self.dim)
        k = min(check_k(k), self.count)
        scale, bias = check_logits(logit_scale, logit_bias)
        check_mode(mode, probabilities)
        _, ids = self._gpu.search(q, k)
        ids = np.asarray(ids, dtype=np.int64)
        lse = self._lse(q, scale) if mode == "softmax" and probabilities == "exact" else None
        return make_result(
            q,
            ids,
            self.exact.row_scores(q, ids),
            scale=scale,
            bias=bias,
            mode=mode,
            scaled_lse=lse,
            exact_neighbors=True,
            num_searched=self.count,
            backend=self.backend,
        )
