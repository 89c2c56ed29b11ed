"""Exact search with torch on any device: a CUDA GPU in production, the CPU in the tests.

The label matrix lives on the device in its own dtype (an fp16 matrix stays fp16: half the
memory). One blocked pass per search: for each block of rows (``BLOCK_ELEMENTS`` scores), the
block is converted to fp32 and multiplied with the queries (fp32 GEMM), ``torch.topk`` keeps a
running top ``c`` candidates per query (``c = 2k + CANDIDATE_MARGIN``, at most every row), and
``logsumexp(logit_scale * score)`` of the block is kept for the exact softmax normaliser.

The candidates are rescored in float64 on the device (the same numbers as
:meth:`ExactIndex.row_scores <zsindex.index.exact.ExactIndex.row_scores>`) and the top k proven
exact with the GEMM's error bound (:mod:`zsindex.index.rescore`; the bound follows torch's fp32
matmul precision, so TF32 or bf16 settings made elsewhere in the process stay exact). Queries that
fail the proof are searched again with ``GROWTH`` times the candidates. The normaliser is
combined in float64 and, as in :class:`~zsindex.index.exact.ExactIndex`, the candidates' fp32
terms are swapped for their float64 ones.

torch is imported when an index is built, never at module import.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.index.exact import Target, make_result, memory_budget_bytes, resolve_subset, to_float32
from zsindex.index.rescore import BF16_ROUNDOFF, TF32_ROUNDOFF, matmul_error_bound, select_verified
from zsindex.index.types import (
    IndexSpec,
    Mode,
    Probabilities,
    SearchResult,
    Subset,
    as_queries,
    check_k,
    check_logits,
    check_matrix,
    check_mode,
)

if TYPE_CHECKING:
    from torch import Tensor

BLOCK_ELEMENTS = 1 << 25
"""Scores per block of the pass (``[Q, block]`` fp32: 128 MiB), and fp32 values per converted
block of the matrix (``[block, dim]``)."""

UPLOAD_ELEMENTS = 1 << 24
"""Matrix values copied to the device per step (bounds the host staging copy)."""

RESCORE_ELEMENTS = 1 << 24
"""float64 row values gathered per rescoring step."""

CANDIDATE_MARGIN = 16
"""Candidates beyond ``2k`` kept per query for the proof of exactness."""

GROWTH = 8
"""Factor on the candidates for queries whose top k the first pass could not prove."""

_ROUNDOFF = {
    "tf32": TF32_ROUNDOFF,
    "high": TF32_ROUNDOFF,
    "bf16": BF16_ROUNDOFF,
    "medium": BF16_ROUNDOFF,
}
"""Input roundoff of torch's fp32 matmul settings (``highest``/``ieee``/``none``: fp32, 0)."""


def _torch() -> Any:
    import torch

    return torch


def input_roundoff(device_type: str) -> float:
    """Unit roundoff torch's fp32 matmul applies to its inputs on ``device_type`` now."""
    torch = _torch()
    settings: list[object] = [torch.get_float32_matmul_precision()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("cuda", "mkldnn"):
            with contextlib.suppress(Exception):
                settings.append(getattr(torch.backends, name).matmul.fp32_precision)
        if device_type == "cuda":
            with contextlib.suppress(Exception):
                settings.append("tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee")
    return max(_ROUNDOFF.get(str(value), 0.0) for value in settings)


class TorchIndex:
    """Exact inner-product search with exact softmax normalisers on a torch device.

    Args:
        matrix: ``[N, dim]`` float16/float32 L2-normalised label embeddings; row i is label id i.
        device: any torch device: ``cuda``, ``cuda:N``, ``cpu`` …
        dtype: storage dtype on the device (``None``: the matrix's own; fp16 halves the memory
            and the top k stays exact for the stored values).
        check_finite: verify every value is finite (skip for a matrix read from a verified cache).
    """

    def __init__(
        self,
        matrix: np.ndarray,
        device: str,
        *,
        dtype: np.dtype[Any] | type[np.floating[Any]] | None = None,
        check_finite: bool = True,
    ) -> None:
        torch = _torch()
        arr = check_matrix(matrix)
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"not a torch device: {device!r}") from exc
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self._device = dev
        store = np.dtype(arr.dtype if dtype is None else dtype)
        if store not in (np.float16, np.float32):
            raise InvalidInputError(f"storage dtype must be float16/float32, got {store}")
        self.source_dtype = store
        tdtype = torch.float16 if store == np.float16 else torch.float32
        n, dim = arr.shape
        self.matrix: Tensor = torch.empty((n, dim), dtype=tdtype, device=dev)
        step = max(1, UPLOAD_ELEMENTS // dim)
        finite, max_norm = True, 0.0
        with torch.inference_mode():
            for a in range(0, n, step):
                staged = torch.from_numpy(np.array(arr[a : a + step], copy=True))
                block = self.matrix[a : a + step]
                block.copy_(staged.to(dev))
                values = block.float()
                if check_finite:
                    finite = finite and bool(torch.isfinite(values).all())
                max_norm = max(max_norm, float(torch.linalg.vector_norm(values, dim=1).max()))
        if not finite:
            raise InvalidInputError("label matrix contains NaN or infinity")
        self.max_norm = max_norm
        self._spec = IndexSpec()

    @property
    def backend(self) -> str:
        """``torch-cuda`` (or ``torch-cpu`` …)."""
        return f"torch-{self._device.type}"

    @property
    def device(self) -> str:
        """The torch device the matrix lives on (``cuda:N``, ``cpu``)."""
        return str(self._device)

    @property
    def count(self) -> int:
        """Number of labels."""
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.matrix.shape[1])

    @property
    def spec(self) -> IndexSpec:
        """Always ``exact``."""
        return self._spec

    @property
    def nbytes(self) -> int:
        """Bytes the label matrix takes on the device."""
        return int(self.matrix.numel() * self.matrix.element_size())

    def host_matrix(self) -> np.ndarray:
        """The label matrix copied to the host: fp32 when it fits the memory budget, as
        :class:`ExactIndex` keeps it (what the on-disk cache stores)."""
        host = self.matrix.cpu().numpy()
        if host.dtype != np.float32 and host.size * 4 <= memory_budget_bytes():
            return to_float32(host)
        return np.asarray(host)

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
        """Exact top-k with exact probabilities; arguments as :meth:`ExactIndex.search`."""
        q = as_queries(queries, self.dim)
        k = check_k(k)
        scale, bias = check_logits(logit_scale, logit_bias)
        check_mode(mode, probabilities)
        target = resolve_subset(subset, self.count)
        want_lse = mode == "softmax" and probabilities == "exact"
        with _torch().inference_mode():
            ids, scores, lse = self._search(q, target, min(k, target.total), scale, want_lse)
        return make_result(
            q,
            ids,
            scores,
            scale=scale,
            bias=bias,
            mode=mode,
            scaled_lse=lse,
            exact_neighbors=True,
            num_searched=target.total,
            backend=self.backend,
        )

    def log_normalizer(
        self, queries: np.ndarray, *, logit_scale: float, subset: Subset = None
    ) -> np.ndarray:
        """``logsumexp(logit_scale * scores)`` over the searched set (no bias), float64 ``[Q]``."""
        q = as_queries(queries, self.dim)
        scale, _ = check_logits(logit_scale, 0.0)
        torch = _torch()
        target = resolve_subset(subset, self.count)
        rows = None if target.rows is None else torch.from_numpy(target.rows).to(self._device)
        with torch.inference_mode():
            qt = torch.tensor(q, device=self._device)
            _, _, lse = self._pass(qt, target, rows, 1, scale, True)
        assert lse is not None
        return lse

    def _search(
        self, q: np.ndarray, target: Target, k: int, scale: float, want_lse: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        torch = _torch()
        qt = torch.tensor(q, device=self._device)
        rows = None if target.rows is None else torch.from_numpy(target.rows).to(self._device)
        bound = matmul_error_bound(self.dim, input_roundoff(self._device.type))
        delta = bound * self.max_norm * np.linalg.norm(q.astype(np.float64), axis=1)
        total = target.total
        c = min(total, 2 * k + CANDIDATE_MARGIN)
        approx, cand, lse = self._pass(qt, target, rows, c, scale, want_lse)
        exact = self._rescore(qt, cand)
        if lse is not None:
            # As in ExactIndex: the candidates' fp32 terms dominate the normaliser's error.
            fp32_terms = np.exp(scale * approx.astype(np.float64) - lse[:, None])
            fp64_terms = np.exp(scale * exact - lse[:, None])
            lse = lse + np.log1p((fp64_terms - fp32_terms).sum(axis=1))
        ids, scores, proven = select_verified(approx, cand, exact, k, delta, complete=c == total)
        while not proven.all():
            c = min(total, c * GROWTH)
            redo = np.flatnonzero(~proven)
            approx, cand, _ = self._pass(qt[redo], target, rows, c, scale, False)
            exact = self._rescore(qt[redo], cand)
            ids[redo], scores[redo], proven[redo] = select_verified(
                approx, cand, exact, k, delta[redo], complete=c == total
            )
        return ids, scores, lse

    def _block(self, target: Target, rows: Tensor | None, a: int, b: int) -> Tensor:
        if rows is None:
            return self.matrix[target.start + a : target.start + b].float()
        return self.matrix.index_select(0, rows[a:b]).float()

    def _pass(
        self,
        qt: Tensor,
        target: Target,
        rows: Tensor | None,
        c: int,
        scale: float,
        want_lse: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Top ``c`` candidates by fp32 GEMM score (scores, row ids) and the scaled logsumexp."""
        torch = _torch()
        total = target.total
        # Bounds both the [Q, block] scores and the block's fp32 copy (fp16 or gathered rows).
        step = max(1, min(total, BLOCK_ELEMENTS // max(1, qt.shape[0]), BLOCK_ELEMENTS // self.dim))
        best_s: Tensor | None = None
        best_i: Tensor | None = None
        parts = []
        for a in range(0, total, step):
            b = min(total, a + step)
            scores = qt @ self._block(target, rows, a, b).T
            if want_lse:
                parts.append(torch.logsumexp(scores * scale, dim=1).double())
            top_s, top_i = torch.topk(scores, min(c, b - a), dim=1)
            top_i = top_i + a
            if best_s is None or best_i is None:
                best_s, best_i = top_s, top_i
            else:
                both_s, both_i = torch.cat([best_s, top_s], 1), torch.cat([best_i, top_i], 1)
                best_s, pick = torch.topk(both_s, min(c, both_s.shape[1]), dim=1)
                best_i = torch.gather(both_i, 1, pick)
        assert best_s is not None and best_i is not None
        ids = best_i + target.start if rows is None else rows[best_i]
        lse = None
        if want_lse:
            lse = torch.logsumexp(torch.stack(parts, dim=1), dim=1).cpu().numpy()
        return best_s.cpu().numpy(), ids.cpu().numpy().astype(np.int64), lse

    def _rescore(self, qt: Tensor, ids: np.ndarray) -> np.ndarray:
        """float64 dot products of each query with its own candidate rows (``[Q, c]``)."""
        torch = _torch()
        nq, c = ids.shape
        out = np.empty((nq, c), dtype=np.float64)
        per = max(1, RESCORE_ELEMENTS // max(1, c * self.dim))
        index = torch.from_numpy(ids).to(self._device)
        q64 = qt.double()
        for a in range(0, nq, per):
            b = min(nq, a + per)
            picked = self.matrix[index[a:b].reshape(-1)].double().reshape(b - a, c, self.dim)
            out[a:b] = torch.bmm(picked, q64[a:b, :, None])[:, :, 0].cpu().numpy()
        return out
