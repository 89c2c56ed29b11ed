"""The fp16 scan kernel (zsindex/index/_f16scan.c) and the exact index that scans fp16 with it.

The kernel must be built here (``pip install -e .`` compiles it; this machine has a C compiler,
as the Dockerfile's builder has), so these tests require it rather than skip without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from zsindex.index import _f16scan, f16  # type: ignore[attr-defined]
from zsindex.index.exact import ExactIndex

U32 = 2.0**-24
"""Unit round-off of float32."""


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    m = rng.standard_normal((n, dim)).astype(np.float32)
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float16)


def _dot_bound(q: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Worst-case error of any fp32 summation order: γ_d · Σ|q_j · m_j| (exact products)."""
    d = q.shape[1]
    gamma = d * U32 / (1 - d * U32)
    return gamma * (np.abs(q.astype(np.float64)) @ np.abs(rows.astype(np.float64)).T)


def test_the_kernel_is_built_and_vectorised_on_this_machine() -> None:
    assert f16.compiled(), "zsindex.index._f16scan is not built: pip install -e . compiles it"
    assert f16.available(), "this x86-64 CPU has AVX2/FMA/F16C: the vector path must run"


def test_widen_is_exact_for_every_fp16_value() -> None:
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    out = np.empty(every.shape, dtype=np.float32)
    _f16scan.widen(every, out)
    ref = every.astype(np.float32)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(out), nan)
    # Bit for bit: signed zeros, subnormals, the largest normals and both infinities.
    assert np.array_equal(out[~nan].view(np.uint32), ref[~nan].view(np.uint32))


def test_widen_is_exact_on_its_scalar_tail_too() -> None:
    # Fewer than 8 values never reach the vector loop: subnormals, extremes, signed zeros, inf.
    bits = [0x0001, 0x03FF, 0x8001, 0x0400, 0x7BFF, 0xFBFF, 0x0000, 0x8000, 0x7C00, 0xFC00]
    for start in range(0, len(bits), 5):
        chunk = np.array(bits[start : start + 5], dtype=np.uint16).view(np.float16)
        out = np.empty(chunk.shape, dtype=np.float32)
        _f16scan.widen(chunk, out)
        assert np.array_equal(out.view(np.uint32), chunk.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("dim", [1, 7, 8, 15, 16, 17, 31, 32, 33, 100, 512, 513])
@pytest.mark.parametrize("nq", [1, 2, 3, 4, 5, 8, 9, 17])
def test_dot_is_within_the_fp32_rounding_bound_of_exact(dim: int, nq: int) -> None:
    rng = np.random.default_rng(dim * 100 + nq)
    rows = _unit_rows(rng, 37, dim)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    out = np.full((nq, 37), np.nan, dtype=np.float32)
    f16.dot_into(rows, q, out)
    exact = q.astype(np.float64) @ rows.astype(np.float64).T
    assert np.all(np.abs(out - exact) <= _dot_bound(q, rows) + 1e-30)


def test_dot_writes_only_its_columns_of_a_wider_output() -> None:
    rng = np.random.default_rng(1)
    rows = _unit_rows(rng, 10, 64)
    q = rng.standard_normal((3, 64)).astype(np.float32)
    out = np.full((3, 25), -7.0, dtype=np.float32)
    _f16scan.dot(rows, q, out, 64, 3, 25, 5)
    assert np.all(out[:, :5] == -7.0) and np.all(out[:, 15:] == -7.0)
    np.testing.assert_allclose(out[:, 5:15], q @ rows.astype(np.float32).T, rtol=1e-5, atol=1e-6)


def test_dot_and_widen_refuse_buffers_of_the_wrong_size() -> None:
    rows = np.zeros((4, 8), dtype=np.float16)
    q = np.zeros((2, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="matrix size"):
        _f16scan.dot(rows, q, np.zeros((2, 4), np.float32), 3, 2, 4, 0)
    with pytest.raises(ValueError, match="queries size"):
        _f16scan.dot(rows, q, np.zeros((3, 4), np.float32), 8, 3, 4, 0)
    with pytest.raises(ValueError, match="output buffer"):
        _f16scan.dot(rows, q, np.zeros((2, 3), np.float32), 8, 2, 3, 0)
    with pytest.raises(ValueError, match="output buffer"):
        _f16scan.dot(rows, q, np.zeros((2, 8), np.float32), 8, 2, 8, 5)
    with pytest.raises(ValueError, match="one fp32"):
        _f16scan.widen(rows, np.zeros((4, 7), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        f16.dot_into(rows, q, np.zeros((4, 2), np.float32).T)


def test_rows_split_across_threads_give_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    rows = _unit_rows(rng, 5000, 96)
    q = rng.standard_normal((3, 96)).astype(np.float32)
    whole = np.empty((3, 5000), np.float32)
    monkeypatch.setattr(f16, "SPLIT_MIN_ROWS", 10**9)
    f16.dot_into(rows, q, whole)
    monkeypatch.setattr(f16, "SPLIT_MIN_ROWS", 1000)
    assert len(f16._spans(5000)) > 1
    split = np.empty((3, 5000), np.float32)
    f16.dot_into(rows, q, split)
    assert np.array_equal(whole, split)  # each row's sum is the same code on any thread
    widened = np.empty((5000, 96), np.float32)
    f16.widen_into(rows, widened)
    assert np.array_equal(widened, rows.astype(np.float32))


def _queries(rng: np.random.Generator, matrix: np.ndarray, n: int) -> np.ndarray:
    noise = rng.standard_normal((n, matrix.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = 0.3 * matrix[rng.integers(0, len(matrix), n)].astype(np.float32) + 0.95 * noise
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.mark.parametrize("nq", [1, 7, f16.DOT_MAX_QUERIES, f16.DOT_MAX_QUERIES + 1, 70])
def test_an_fp16_index_scans_fp16_and_answers_as_the_fp32_copy_does(nq: int) -> None:
    rng = np.random.default_rng(nq)
    m16 = _unit_rows(rng, 20000, 64)
    fp16, fp32 = ExactIndex(m16), ExactIndex(m16, keep_fp32=True)
    assert fp16.matrix.dtype == np.float16 and fp16.nbytes * 2 == fp32.nbytes
    q = _queries(rng, m16, nq)
    for subset in (None, range(1000, 15000), np.sort(rng.choice(20000, 6000, replace=False))):
        a = fp16.search(q, 5, logit_scale=100.0, subset=subset)
        b = fp32.search(q, 5, logit_scale=100.0, subset=subset)
        assert np.array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-5)
        np.testing.assert_allclose(a.log_normalizer, b.log_normalizer, rtol=0, atol=1e-5)


def test_without_the_kernel_the_index_keeps_its_fp32_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The configuration of an install without a C compiler: the module is absent.
    monkeypatch.setattr(f16, "_KERNEL", None)
    assert not f16.available() and not f16.compiled()
    rng = np.random.default_rng(3)
    m16 = _unit_rows(rng, 3000, 32)
    index = ExactIndex(m16)
    assert index.matrix.dtype == np.float32
    q = _queries(rng, m16, 4)
    res = index.search(q, 3, logit_scale=50.0)
    ref = np.argsort(-(q.astype(np.float64) @ m16.astype(np.float64).T), axis=1)[:, :3]
    assert np.array_equal(res.ids, ref)
    with pytest.raises(RuntimeError, match="not installed"):
        f16.dot_into(m16, q, np.empty((4, 3000), np.float32))
