"""CPU/GPU choice for exact search, decided at run time (:func:`choose_exact_backend`).

``ZSINDEX_DEVICE`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) decides where exact search runs:

- ``cpu``: always :class:`ExactIndex` (blocked numpy GEMM; measured here, FAISS's CPU
  ``IndexFlatIP`` is 2-3x slower than a blocked BLAS GEMM with a running top-k).
- a GPU allowed and FAISS GPU present (``faiss.StandardGpuResources`` and a GPU visible):
  :class:`GpuFlatIndex`, FAISS ``GpuIndexFlatIP`` with fp16 storage proposing candidates whose
  top k is rescored in float64 and proven exact (:mod:`zsindex.index.rescore`; unproven queries
  are answered by the CPU pass); the softmax normaliser comes from a blocked fp32 ``torch`` pass
  on the GPU when torch sees CUDA (else the CPU pass).
- a GPU allowed, no FAISS GPU, and torch sees CUDA: :class:`~zsindex.index.torch_index.TorchIndex`
  (torch matmul + topk + logsumexp on the GPU).
- otherwise the CPU; an explicit ``cuda``/``cuda:N`` then logs a warning.

Under ``auto``, faiss and torch are imported to look for a GPU only when torch is already loaded
or the machine shows a GPU device node (``/dev/nvidia*``, ``/dev/kfd``): on a CPU-only machine a
search over precomputed embeddings never imports torch. ``cuda:N`` beyond the GPUs present uses
the last one, with a warning.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from zsindex.config import validate_device
from zsindex.index import f16
from zsindex.index.exact import ExactIndex, make_result
from zsindex.index.rescore import TF32_ROUNDOFF, matmul_error_bound, select_verified
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

GPU_CANDIDATES = 4
"""``GpuFlatIndex`` fetches ``GPU_CANDIDATES * k + 16`` candidates from FAISS per query."""

FAISS_GPU_MAX_K = 2048
"""The most results FAISS GPU returns per query; beyond it the CPU pass answers."""


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


def torch_gpu_count() -> int:
    """CUDA devices torch can use (0 without torch, without CUDA, or on driver trouble)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - driver trouble means no GPU
        return 0


def gpu_hint() -> bool:
    """Whether a GPU may be present, without importing anything heavy."""
    if "torch" in sys.modules:
        return True
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")


@dataclass(frozen=True)
class DeviceChoice:
    """Where exact search runs: ``backend`` (``numpy-blocked``, ``faiss-gpu-flat`` or
    ``torch-cuda``) on ``device`` (``cpu`` or ``cuda:N``)."""

    backend: str
    device: str

    @property
    def device_id(self) -> int:
        """The GPU ordinal (0 on the CPU)."""
        return int(self.device.split(":", 1)[1]) if ":" in self.device else 0


CPU_CHOICE = DeviceChoice(ExactIndex.backend, "cpu")


def choose_exact_backend(device: str = "auto") -> DeviceChoice:
    """Decide where exact search runs for ``device`` (a ``ZSINDEX_DEVICE`` value).

    Raises:
        InvalidInputError: ``device`` is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    device = validate_device(device)
    if device == "cpu" or (device == "auto" and not gpu_hint()):
        return CPU_CHOICE
    backend, gpus = "faiss-gpu-flat", faiss_gpu_count()
    if gpus == 0:
        backend, gpus = "torch-cuda", torch_gpu_count()
    if gpus == 0:
        if device != "auto":
            log.warning(
                "device %s requested but no GPU is usable (no FAISS GPU, torch sees no CUDA): "
                "searching on CPU",
                device,
            )
        return CPU_CHOICE
    wanted = int(device[5:]) if device.startswith("cuda:") else 0
    if wanted >= gpus:
        log.warning("device %s requested but only %d GPU(s): using cuda:%d", device, gpus, gpus - 1)
        wanted = gpus - 1
    return DeviceChoice(backend, f"cuda:{wanted}")


def resolve_device(device: str = "auto") -> str:
    """``cpu`` or ``cuda:N`` for exact search from ``auto``/``cpu``/``cuda``/``cuda:N``."""
    return choose_exact_backend(device).device


def on_device(index: SearchIndex, device: str = "auto") -> SearchIndex:
    """Return ``index`` moved to where :func:`choose_exact_backend` puts exact search.

    Only an :class:`ExactIndex` moves (approximate indexes stay on the CPU); a ``TorchIndex``
    keeps the source dtype (an fp16 matrix is fp16 on the GPU).
    """
    if not isinstance(index, ExactIndex):
        return index
    choice = choose_exact_backend(device)
    if choice.backend == "faiss-gpu-flat":
        return GpuFlatIndex(index, choice.device_id)
    if choice.backend == "torch-cuda":
        from zsindex.index.torch_index import TorchIndex

        return TorchIndex(index.matrix, choice.device, dtype=index.source_dtype, check_finite=False)
    return index


class GpuFlatIndex:  # pragma: no cover - needs FAISS GPU (see tests marked gpu)
    """Exact search on a GPU: FAISS ``GpuIndexFlatIP`` with fp16 storage proposes candidates,
    whose top k is rescored in float64 and proven exact (else answered by the CPU pass)."""

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
        max_norm = 0.0
        for start in range(0, exact.count, step):
            block = f16.widen(exact.matrix[start : start + step])
            max_norm = max(max_norm, float(np.linalg.norm(block, axis=1).max()))
            self._gpu.add(block)
        # fp16 storage (and fp16 queries) round both GEMM inputs like TF32 does.
        self._bound = matmul_error_bound(exact.dim, TF32_ROUNDOFF) * max_norm
        self._normaliser: Any = None

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

    @property
    def device(self) -> str:
        """``cuda:N``."""
        return f"cuda:{self.device_id}"

    def _lse(self, q: np.ndarray, scale: float) -> np.ndarray:
        if self._normaliser is None:
            if torch_gpu_count() == 0:
                self._normaliser = self.exact
            else:
                from zsindex.index.torch_index import TorchIndex

                self._normaliser = TorchIndex(
                    self.exact.matrix,
                    self.device,
                    dtype=self.exact.source_dtype,
                    check_finite=False,
                )
        lse: np.ndarray = self._normaliser.log_normalizer(q, logit_scale=scale)
        return lse

    def search(
        self,
        queries: np.ndarray,
        k: int = 5,
        *,
        logit_scale: float,
        logit_bias: float = 0.0,
        mode: Mode = "softmax",
        subset: Subset = None,
        probabilities: Probabilities = "exact",
    ) -> SearchResult:
        """As :meth:`ExactIndex.search`; subsets (and k beyond FAISS GPU's limit) on the CPU."""
        if subset is not None or check_k(k) > FAISS_GPU_MAX_K:
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
        c = min(self.count, GPU_CANDIDATES * k + 16, FAISS_GPU_MAX_K)
        approx, found = self._gpu.search(q, c)
        cand = np.asarray(found, dtype=np.int64)
        exact = self.exact.row_scores(q, np.maximum(cand, 0))
        delta = self._bound * np.linalg.norm(q.astype(np.float64), axis=1)
        ids, scores, proven = select_verified(
            np.asarray(approx), cand, exact, k, delta, complete=c == self.count
        )
        if not proven.all():
            redo = np.flatnonzero(~proven)
            target = self.exact.resolve_subset(None)
            res = self.exact.pass_(
                q[redo], target, k=k, scale=scale, want_topk=True, want_lse=False
            )
            assert res.ids is not None
            ids[redo] = res.ids
            scores[redo] = self.exact.row_scores(q[redo], res.ids)
        lse = self._lse(q, scale) if mode == "softmax" and probabilities == "exact" else None
        return make_result(
            q,
            ids,
            scores,
            scale=scale,
            bias=bias,
            mode=mode,
            scaled_lse=lse,
            exact_neighbors=True,
            num_searched=self.count,
            backend=self.backend,
        )
