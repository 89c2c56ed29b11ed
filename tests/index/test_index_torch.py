"""TorchIndex (exact search with torch) answers exactly as ExactIndex, tested on the CPU device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import zsindex.index.torch_index as torch_mod
from zsindex.errors import InvalidInputError
from zsindex.index import ExactIndex, IndexCache, TorchIndex
from zsindex.index.rescore import BF16_ROUNDOFF, TF32_ROUNDOFF


@pytest.fixture(params=[None, 4096], ids=["one-block", "many-blocks"])
def blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param is not None:
        monkeypatch.setattr(torch_mod, "BLOCK_ELEMENTS", request.param)
        monkeypatch.setattr(torch_mod, "UPLOAD_ELEMENTS", request.param)
        monkeypatch.setattr(torch_mod, "RESCORE_ELEMENTS", 256)


def _random(n: int, dim: int, seed: int, make_unit) -> np.ndarray:
    return make_unit(np.random.default_rng(seed).standard_normal((n, dim)))


def _same(res, ref, *, atol: float = 1e-5) -> None:
    """``res`` (TorchIndex) answers as ``ref`` (ExactIndex)."""
    np.testing.assert_array_equal(res.ids, ref.ids)
    np.testing.assert_allclose(res.scores, ref.scores, atol=1e-6)
    np.testing.assert_allclose(res.logits, ref.logits, atol=1e-4)
    np.testing.assert_allclose(res.probabilities, ref.probabilities, atol=atol)
    assert res.exact_probabilities == ref.exact_probabilities
    assert res.exact_neighbors and res.num_searched == ref.num_searched
    assert res.mode == ref.mode
    if ref.log_normalizer is None:
        assert res.log_normalizer is None
    else:
        np.testing.assert_allclose(res.log_normalizer, ref.log_normalizer, atol=1e-5)


@pytest.mark.parametrize(
    ("n", "q", "k"),
    [(1, 1, 1), (7, 3, 10), (1000, 1, 5), (1000, 5, 1000), (9_999, 37, 7), (20_001, 64, 5)],
)
def test_matches_exact_index(blocks, make_unit, n: int, q: int, k: int) -> None:
    m = _random(n, 24, n, make_unit)
    queries = _random(q, 24, n + 1, make_unit)
    index = TorchIndex(m, "cpu")
    assert index.backend == "torch-cpu" and index.device == "cpu"
    assert index.count == n and index.dim == 24 and index.spec.canonical() == "exact"
    res = index.search(queries, k, logit_scale=50.0, logit_bias=-1.5)
    _same(res, ExactIndex(m).search(queries, k, logit_scale=50.0, logit_bias=-1.5))
    assert res.backend == "torch-cpu" and res.ids.shape == (q, min(k, n))


def test_high_scale_queries_near_labels(make_unit) -> None:
    m = _random(5000, 32, 1, make_unit)
    q = make_unit(m[:8] + 0.01 * _random(8, 32, 2, make_unit))
    _same(
        TorchIndex(m, "cpu").search(q, 3, logit_scale=100.0),
        ExactIndex(m).search(q, 3, logit_scale=100.0),
    )


def test_fp16_stays_fp16(blocks, make_clustered) -> None:
    m16 = make_clustered(12_345, 32, 50, seed=5).astype(np.float16)
    queries = make_clustered(6, 32, 50, seed=6)
    index = TorchIndex(m16, "cpu")
    assert index.matrix.dtype == torch.float16 and index.nbytes == m16.nbytes
    for keep in (True, False):
        ref = ExactIndex(m16, keep_fp32=keep).search(queries, 5, logit_scale=100.0)
        _same(index.search(queries, 5, logit_scale=100.0), ref)
    # An fp32 matrix stored as fp16 on the device answers as the fp16 matrix.
    as16 = TorchIndex(m16.astype(np.float32), "cpu", dtype=np.float16)
    assert as16.matrix.dtype == torch.float16
    _same(as16.search(queries, 5, logit_scale=100.0), index.search(queries, 5, logit_scale=100.0))


def test_ties_rank_lower_id_first(blocks) -> None:
    rng = np.random.default_rng(0)
    base = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(50, 16)).astype(np.float32)
    base[np.abs(base).sum(axis=1) == 0, 0] = 1.0
    m = np.concatenate([base] * 200)  # every row repeated 200 times: exact ties
    q = np.zeros((2, 16), np.float32)
    q[0, 0] = 1.0
    q[1, 3] = 0.5
    res = TorchIndex(m, "cpu").search(q, 7, logit_scale=10.0)
    s = q.astype(np.float64) @ m.T.astype(np.float64)
    np.testing.assert_array_equal(res.ids, np.argsort(-s, axis=1, kind="stable")[:, :7])


def test_sigmoid_and_topk_modes(make_unit) -> None:
    m = _random(3000, 16, 2, make_unit)
    q = _random(4, 16, 3, make_unit)
    index, exact = TorchIndex(m, "cpu"), ExactIndex(m)
    for options in (
        {"mode": "sigmoid", "logit_bias": -3.0},
        {"probabilities": "topk"},
        {"probabilities": "topk", "k": 3000},
    ):
        kwargs = {"k": 5, "logit_scale": 10.0, **options}
        _same(index.search(q, **kwargs), exact.search(q, **kwargs))


@pytest.mark.parametrize(
    "subset",
    [
        np.array([5, 3, 3, 900, 17, 2999]),
        np.arange(100, 2100),
        range(10, 20),
        slice(2500, None),
        np.sort(np.random.default_rng(9).choice(3000, 2500, replace=False)),
        np.array([42]),
    ],
    ids=["small", "contiguous", "range", "slice", "large", "single"],
)
def test_subset_search(blocks, make_unit, subset) -> None:
    m = _random(3000, 16, 4, make_unit)
    q = _random(5, 16, 5, make_unit)
    for matrix in (m, m.astype(np.float16)):
        res = TorchIndex(matrix, "cpu").search(q, 4, logit_scale=30.0, subset=subset)
        _same(res, ExactIndex(matrix).search(q, 4, logit_scale=30.0, subset=subset))


def test_log_normalizer(make_unit) -> None:
    m = _random(2000, 16, 8, make_unit)
    q = _random(3, 16, 9, make_unit)
    index, exact = TorchIndex(m, "cpu"), ExactIndex(m)
    np.testing.assert_allclose(
        index.log_normalizer(q, logit_scale=20.0), exact.log_normalizer(q, logit_scale=20.0)
    )
    np.testing.assert_allclose(
        index.log_normalizer(q, logit_scale=20.0, subset=np.arange(0, 2000, 3)),
        exact.log_normalizer(q, logit_scale=20.0, subset=np.arange(0, 2000, 3)),
    )


def test_unproven_queries_are_searched_again(monkeypatch, make_clustered) -> None:
    """A huge error bound proves nothing at first: the candidates grow until every row is one."""
    m = make_clustered(5000, 16, 10, seed=1)
    q = make_clustered(9, 16, 10, seed=2)
    monkeypatch.setattr(torch_mod, "input_roundoff", lambda device_type: 0.5)
    passes: list[int] = []
    original = TorchIndex._pass

    def counting(self, qt, target, rows, c, scale, want_lse):  # type: ignore[no-untyped-def]
        passes.append(c)
        return original(self, qt, target, rows, c, scale, want_lse)

    monkeypatch.setattr(TorchIndex, "_pass", counting)
    res = TorchIndex(m, "cpu").search(q, 5, logit_scale=100.0)
    assert passes[0] == 26 and passes[-1] == 5000 and len(passes) > 2
    _same(res, ExactIndex(m).search(q, 5, logit_scale=100.0))


def test_reduced_precision_settings_raise_the_bound(make_unit) -> None:
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert torch_mod.input_roundoff("cpu") == 0.0
        torch.set_float32_matmul_precision("high")
        assert torch_mod.input_roundoff("cpu") == TF32_ROUNDOFF
        torch.set_float32_matmul_precision("medium")
        assert torch_mod.input_roundoff("cpu") == BF16_ROUNDOFF
        m = _random(4000, 32, 3, make_unit)
        q = _random(16, 32, 4, make_unit)
        res = TorchIndex(m, "cpu").search(q, 5, logit_scale=100.0)
        np.testing.assert_array_equal(res.ids, ExactIndex(m).search(q, 5, logit_scale=100.0).ids)
    finally:
        torch.set_float32_matmul_precision(before)


def test_invalid_input(make_unit) -> None:
    m = _random(100, 8, 11, make_unit)
    with pytest.raises(InvalidInputError, match="device"):
        TorchIndex(m, "not-a-device")
    with pytest.raises(InvalidInputError, match="NaN"):
        TorchIndex(np.full((3, 4), np.nan, np.float32), "cpu")
    with pytest.raises(InvalidInputError, match="dtype"):
        TorchIndex(m, "cpu", dtype=np.float64)
    index = TorchIndex(m, "cpu")
    query = np.ones((1, 8), np.float32) / np.sqrt(8)
    with pytest.raises(InvalidInputError, match="shape"):
        index.search(np.zeros((1, 9), np.float32), 5, logit_scale=10.0)
    with pytest.raises(InvalidInputError, match="logit_scale"):
        index.search(query, 5, logit_scale=0.0)
    with pytest.raises(InvalidInputError, match="within"):
        index.search(query, 5, logit_scale=10.0, subset=np.array([0, 100]))
    with pytest.raises(TypeError):
        index.search(query, 5)  # type: ignore[call-arg]  # logit_scale is required


def test_read_only_matrix_and_cache_round_trip(tmp_path: Path, make_clustered) -> None:
    m16 = make_clustered(3000, 16, 20, seed=7).astype(np.float16)
    m16.flags.writeable = False
    index = TorchIndex(m16, "cpu")
    cache = IndexCache(tmp_path / "cache")
    cache.store("digest", "exact", index, extra={"names": [str(i) for i in range(3000)]})
    loaded = cache.load("digest", "exact")
    assert loaded is not None and isinstance(loaded.index, ExactIndex)
    assert loaded.index.source_dtype == np.float16
    q = make_clustered(4, 16, 20, seed=8)
    _same(index.search(q, 5, logit_scale=100.0), loaded.index.search(q, 5, logit_scale=100.0))
