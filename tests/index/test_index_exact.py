"""Exact search equals a float64 brute-force reference (ids, scores, probabilities)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import zsindex.index.kernels as kernels
from zsindex.errors import InvalidInputError
from zsindex.index import ExactIndex, build_index
from zsindex.index.device import resolve_device


@pytest.fixture(params=[None, 4096], ids=["default-blocks", "tiny-blocks"])
def blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param is not None:
        monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", request.param)
        monkeypatch.setattr(kernels, "MIN_BLOCK_ROWS", 64)


def _random(n: int, dim: int, seed: int, make_unit) -> np.ndarray:
    return make_unit(np.random.default_rng(seed).standard_normal((n, dim)))


def _check(res, ref, *, atol: float = 1e-5, rtol: float = 0.0) -> None:
    np.testing.assert_array_equal(res.ids, ref["ids"])
    np.testing.assert_allclose(res.scores, ref["scores"], atol=1e-6)
    np.testing.assert_allclose(res.probabilities, ref["probabilities"], atol=atol, rtol=rtol)


@pytest.mark.parametrize(
    ("n", "q", "k"),
    [(1, 1, 1), (7, 3, 10), (1000, 1, 5), (1000, 5, 1000), (9_999, 37, 7), (20_001, 64, 5)],
)
def test_matches_reference(blocks, make_unit, make_reference, n: int, q: int, k: int) -> None:
    m = _random(n, 24, n, make_unit)
    queries = _random(q, 24, n + 1, make_unit)
    index = ExactIndex(m)
    res = index.search(queries, k, logit_scale=50.0, logit_bias=-1.5)
    ref = make_reference(m, queries, k, scale=50.0, bias=-1.5)
    _check(res, ref)
    assert res.ids.shape == (q, min(k, n))
    assert res.exact_probabilities and res.exact_neighbors
    assert res.num_searched == n
    np.testing.assert_allclose(res.log_normalizer, ref["lse"], rtol=1e-6)
    np.testing.assert_allclose(res.logits, 50.0 * ref["scores"] - 1.5, atol=1e-4)
    if k >= n:
        np.testing.assert_allclose(res.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_query_near_label_high_scale(make_unit, make_reference) -> None:
    m = _random(5000, 64, 1, make_unit)
    res = ExactIndex(m).search(m[:8], 3, logit_scale=100.0)
    ref = make_reference(m, m[:8], 3, scale=100.0)
    _check(res, ref)
    assert (res.probabilities <= 1.0 + 1e-6).all()


def test_fp16_storage(blocks, make_clustered, make_reference) -> None:
    """fp16 storage: exact w.r.t. the stored values; vs the fp32 original only quantisation error.

    fp16 rounding moves each score by ~1e-5..1e-4, i.e. logits by up to ~1e-2 at scale 100, so
    probabilities differ from the fp32 reference by ~2e-3 relative at dim 512 (more at small
    dims) whatever the search does; the index adds nothing on top (first assertion).
    """
    m32 = make_clustered(12_345, 32, 50, seed=5)
    m16 = m32.astype(np.float16)
    queries = m32[:6] * 0.3 + 0.95 * m32[100:106]
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ref32 = make_reference(m32, queries, 5)
    ref16 = make_reference(m16, queries, 5)
    for keep in (True, False):
        index = ExactIndex(m16, keep_fp32=keep)
        assert index.matrix.dtype == (np.float32 if keep else np.float16)
        res = index.search(queries, 5, logit_scale=100.0)
        _check(res, ref16)  # exact w.r.t. the stored fp16 values
        np.testing.assert_allclose(res.probabilities, ref32["probabilities"], rtol=5e-2)


def test_ties_rank_lower_id_first(blocks) -> None:
    rng = np.random.default_rng(0)
    # Exactly representable rows: duplicates give bit-identical scores in any block.
    base = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(50, 16)).astype(np.float32)
    base[np.abs(base).sum(axis=1) == 0, 0] = 1.0
    m = np.concatenate([base] * 200)  # 10,000 rows, every row repeated 200 times
    q = np.zeros((2, 16), np.float32)
    q[0, 0] = 1.0
    q[1, 3] = 0.5
    res = ExactIndex(m).search(q, 7, logit_scale=10.0)
    s = q.astype(np.float64) @ m.T.astype(np.float64)
    expected = np.argsort(-s, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(res.ids, expected)


def test_sigmoid_and_topk_modes(make_unit, make_reference) -> None:
    m = _random(3000, 16, 2, make_unit)
    q = _random(4, 16, 3, make_unit)
    index = ExactIndex(m)
    sig = index.search(q, 5, logit_scale=10.0, logit_bias=-3.0, mode="sigmoid")
    _check(sig, make_reference(m, q, 5, scale=10.0, bias=-3.0, mode="sigmoid"))
    assert sig.mode == "sigmoid" and sig.log_normalizer is None
    top = index.search(q, 5, logit_scale=10.0, probabilities="topk")
    assert not top.exact_probabilities
    np.testing.assert_allclose(top.probabilities.sum(axis=1), 1.0, atol=1e-6)
    full = index.search(q, 3000, logit_scale=10.0, probabilities="topk")
    assert full.exact_probabilities  # k covers every label: top-k normalisation is exact


@pytest.mark.parametrize(
    "subset",
    [
        np.array([5, 3, 3, 900, 17, 2999]),  # unsorted with a duplicate: small dense gather
        np.arange(100, 2100),  # contiguous ids: a range
        range(10, 20),
        slice(2500, None),
        np.sort(np.random.default_rng(9).choice(3000, 2500, replace=False)),  # gathered blocks
        np.array([42]),
    ],
    ids=["small", "contiguous", "range", "slice", "large", "single"],
)
def test_subset_search(blocks, monkeypatch, make_unit, make_reference, subset) -> None:
    import zsindex.index.exact as exact_mod

    monkeypatch.setattr(exact_mod, "GATHER_DENSE_MAX", 100)
    m = _random(3000, 16, 4, make_unit)
    q = _random(5, 16, 5, make_unit)
    res = ExactIndex(m).search(q, 4, logit_scale=30.0, subset=subset)
    ref = make_reference(m, q, 4, scale=30.0, subset=subset)
    _check(res, ref)
    np.testing.assert_allclose(res.log_normalizer, ref["lse"], rtol=1e-6)
    assert res.num_searched == len(np.unique(np.arange(3000)[subset]))


def test_subset_fp16_blocks(make_unit, make_reference) -> None:
    m = _random(5000, 16, 6, make_unit).astype(np.float16)
    q = _random(3, 16, 7, make_unit)
    subset = np.arange(0, 5000, 3)
    res = ExactIndex(m, keep_fp32=False).search(q, 5, logit_scale=100.0, subset=subset)
    _check(res, make_reference(m, q, 5, subset=subset))


def test_log_normalizer(make_unit, make_reference) -> None:
    m = _random(2000, 16, 8, make_unit)
    q = _random(3, 16, 9, make_unit)
    lse = ExactIndex(m).log_normalizer(q, logit_scale=20.0)
    np.testing.assert_allclose(lse, make_reference(m, q, 1, scale=20.0)["lse"], rtol=1e-6)


def test_single_query_vector_and_build_index(make_unit) -> None:
    m = _random(100, 8, 10, make_unit)
    index = build_index(m)
    res = index.search(m[3], 1, logit_scale=100.0)
    assert res.ids.tolist() == [[3]]
    assert res.backend == "numpy-blocked"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queries": np.zeros((2, 9), np.float32)}, "shape"),
        ({"queries": np.full((1, 8), np.nan, np.float32)}, "NaN"),
        ({"k": 0}, "positive"),
        ({"logit_scale": 0.0}, "logit_scale"),
        ({"logit_bias": float("inf")}, "logit_bias"),
        ({"mode": "softmaxx"}, "mode"),
        ({"probabilities": "some"}, "probabilities"),
        ({"subset": np.array([0, 100])}, "within"),
        ({"subset": np.array([], dtype=np.int64)}, "empty"),
        ({"subset": np.array([0.5])}, "integer"),
        ({"subset": range(0, 10, 2)}, "step"),
    ],
)
def test_invalid_input(make_unit, kwargs, message) -> None:
    index = ExactIndex(_random(100, 8, 11, make_unit))
    args = {"queries": np.ones((1, 8), np.float32) / np.sqrt(8), "logit_scale": 100.0, **kwargs}
    queries = args.pop("queries")
    with pytest.raises(InvalidInputError, match=message):
        index.search(queries, **args)


def test_invalid_matrix() -> None:
    with pytest.raises(InvalidInputError):
        ExactIndex(np.zeros((0, 4), np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        ExactIndex(np.full((3, 4), np.nan, np.float32))
    with pytest.raises(InvalidInputError):
        ExactIndex(np.zeros((3, 4), np.int32))


def test_gpu_not_chosen_on_cpu(make_unit) -> None:
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cuda") == "cpu"
    index = build_index(_random(10, 4, 12, make_unit), device="auto")
    assert isinstance(index, ExactIndex)


def test_import_is_light() -> None:
    import subprocess

    code = "import sys, zsindex.index; print('torch' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.gpu
def test_gpu_flat_matches_cpu(make_unit, make_reference) -> None:  # pragma: no cover
    from zsindex.index.device import faiss_gpu_count, torch_gpu_count

    if faiss_gpu_count() == 0 and torch_gpu_count() == 0:
        pytest.skip("no GPU: neither FAISS GPU nor torch CUDA is available")
    m = _random(50_000, 64, 13, make_unit)
    q = _random(16, 64, 14, make_unit)
    index = build_index(m, device="cuda")
    res = index.search(q, 5, logit_scale=100.0)
    assert res.backend == ("faiss-gpu-flat" if faiss_gpu_count() else "torch-cuda")
    _check(res, make_reference(m, q, 5), atol=1e-4)


def test_search_per_query_groups_equal_subsets(make_unit, make_reference) -> None:
    from zsindex.index import search_per_query

    m = _random(500, 8, 15, make_unit)
    q = _random(5, 8, 16, make_unit)
    a, b = np.array([1, 5, 9, 200]), np.arange(100, 300)
    subsets = [a, b, a.copy(), None, range(0, 3)]
    results = search_per_query(ExactIndex(m), q, subsets, 3, logit_scale=20.0)
    for i, (res, subset) in enumerate(zip(results, subsets, strict=True)):
        ref = make_reference(m, q[i : i + 1], 3, scale=20.0, subset=subset)
        _check(res, ref)
    with pytest.raises(InvalidInputError):
        search_per_query(ExactIndex(m), q, subsets[:2], logit_scale=20.0)
