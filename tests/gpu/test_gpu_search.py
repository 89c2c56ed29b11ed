"""FAISS GPU flat inner product and zsindex's GPU indexes against exact CPU search."""

from __future__ import annotations

import numpy as np
import pytest
from gpu_needs import need_cuda, need_faiss_gpu

from zsindex.index.build import build_index
from zsindex.index.exact import ExactIndex

pytestmark = pytest.mark.gpu


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_faiss_gpu_flat_ip_equals_cpu_exact_top_k() -> None:
    need_faiss_gpu()
    import faiss

    rng = np.random.default_rng(0)
    m, q = _unit(rng, 200_000, 128), _unit(rng, 64, 128)
    res = faiss.StandardGpuResources()
    config = faiss.GpuIndexFlatConfig()
    config.device = 0
    config.useFloat16 = False
    index = faiss.GpuIndexFlatIP(res, 128, config)
    index.add(m)
    scores, ids = index.search(q, 10)
    exact = q.astype(np.float64) @ m.astype(np.float64).T
    ref = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(exact, ref, axis=1), atol=1e-5)
    # The same through faiss.knn_gpu (no index), the brute-force entry point.
    _, i2 = faiss.knn_gpu(res, q, m, 10, metric=faiss.METRIC_INNER_PRODUCT)
    np.testing.assert_array_equal(i2, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_zsindex_gpu_index_equals_cpu_exact(dtype: type) -> None:
    need_cuda()
    rng = np.random.default_rng(1)
    m, q = _unit(rng, 100_000, 64).astype(dtype), _unit(rng, 32, 64)
    gpu = build_index(m, device="cuda")
    assert gpu.device.startswith("cuda")
    cpu = ExactIndex(m)
    for k in (1, 5, 50):
        a = gpu.search(q, k, logit_scale=100.0)
        b = cpu.search(q, k, logit_scale=100.0)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-3, atol=1e-7)
        assert a.exact_probabilities and a.exact_neighbors
    # Subsets are answered too (on the CPU pass for FAISS, on the GPU for torch).
    subset = np.arange(0, 100_000, 3)
    a = gpu.search(q, 5, logit_scale=100.0, subset=subset)
    b = cpu.search(q, 5, logit_scale=100.0, subset=subset)
    np.testing.assert_array_equal(a.ids, b.ids)


def test_torch_index_on_cuda_equals_cpu_exact() -> None:
    need_cuda()
    from zsindex.index.torch_index import TorchIndex

    rng = np.random.default_rng(2)
    m, q = _unit(rng, 50_000, 64), _unit(rng, 16, 64)
    a = TorchIndex(m, "cuda:0").search(q, 5, logit_scale=100.0)
    b = ExactIndex(m).search(q, 5, logit_scale=100.0)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-3, atol=1e-7)
