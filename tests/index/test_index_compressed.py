"""The int8 scan copy: its error bound always holds, its top k is the exact one, its
probabilities stay within the bound it reports (at most 1e-3), and it falls back when it must."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zsindex.index.compressed as compressed
from zsindex.index import ExactIndex, choose_index
from zsindex.index.compressed import CompressedIndex, compress


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def small_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny candidate and re-score sizes, so small matrices walk every path."""
    monkeypatch.setattr(compressed, "CANDIDATES", (6, 24))
    monkeypatch.setattr(compressed, "RESCORE_FIRST", 2)
    monkeypatch.setattr(compressed, "EXACT_ROWS", 2)


def _approx_all(index: CompressedIndex, q: np.ndarray) -> np.ndarray:
    """Every row's approximate score ``a_i`` as the scan computes it (``[Q, N]``)."""
    codes, h, _ = index.quantise_queries(q)
    out = np.empty((len(q), index.count))
    for a, b, sub in index._shards:
        dist, local = sub.search(codes, b - a)
        np.put_along_axis(out[:, a:b], local, dist.astype(np.float64), axis=1)
    return out * (index.step * h)[:, None]


@st.composite
def adversarial(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, float]:
    """A matrix with near-ties, duplicates, extreme magnitudes or zeros, queries and k."""
    n = draw(st.integers(1, 120))
    dim = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["unit", "near-ties", "duplicates", "extreme", "sparse"]))
    m = rng.standard_normal((n, dim))
    if kind == "unit":
        m = unit(m)
    elif kind == "near-ties":
        base = unit(rng.standard_normal((1, dim)))
        m = base + draw(st.sampled_from([0.0, 1e-7, 1e-5, 1e-3])) * rng.standard_normal((n, dim))
    elif kind == "duplicates":
        m = unit(m)[rng.integers(0, max(1, n // 4), n)]
    elif kind == "extreme":
        m = unit(m) * 10.0 ** rng.integers(-8, 2, (n, 1))
    else:
        m = np.where(rng.random((n, dim)) < 0.8, 0.0, m)
    m = np.asarray(m, np.float32)
    queries = unit(rng.standard_normal((draw(st.integers(1, 4)), dim)))
    if draw(st.booleans()) and np.linalg.norm(m[0]) > 0:
        queries[0] = unit(m[rng.integers(0, n)])  # along a row: its own tie group
    k = draw(st.integers(1, n))
    scale = draw(st.sampled_from([1.0, 20.0, 100.0]))
    return m, np.asarray(queries, np.float32), k, scale


_SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@settings(max_examples=120, deadline=None, suppress_health_check=_SLOW_OK)
@given(case=adversarial(), shards=st.integers(1, 3))
def test_bound_holds_and_answers_are_exact(
    small_candidates: None, make_reference, case, shards: int
) -> None:
    m, queries, k, scale = case
    if not np.isfinite(m.astype(np.float64) @ queries.T.astype(np.float64)).all():
        return
    index = CompressedIndex(ExactIndex(m), shards=shards)
    # The bound: |exact - approx| <= delta for every row and query.
    exact_all = queries.astype(np.float64) @ m.astype(np.float64).T
    _, _, delta = index.quantise_queries(queries)
    gap = np.abs(exact_all - _approx_all(index, queries))
    assert (gap <= delta[:, None]).all(), float((gap - delta[:, None]).max())
    res = index.search(queries, k, logit_scale=scale)
    ref = make_reference(m, queries, k, scale=scale)
    # Row-wise float64 sums: equal rows get equal scores, so ties are ties (lower id first).
    truth = (queries.astype(np.float64)[:, None, :] * m.astype(np.float64)[None]).sum(axis=2)
    want = np.lexsort((np.broadcast_to(np.arange(len(m)), truth.shape), -truth), axis=1)[:, :k]
    fp32_slack = 2 * index.gamma * index.row_norm  # the fp32 exact pass's own GEMM error
    for got, best, row in zip(res.ids, want, truth, strict=True):
        if got.tolist() == best.tolist():
            continue  # the proven answer: the exact top k
        # Only a query that fell back to the fp32 exact pass may differ, and only by its
        # rounding: on ties or near-ties closer than the fp32 GEMM error.
        outside = np.delete(row, got)
        assert outside.size == 0 or row[got].min() >= outside.max() - fp32_slack
    np.testing.assert_allclose(
        np.sort(res.scores, axis=1),
        np.sort(np.take_along_axis(truth, res.ids, 1), axis=1),
        rtol=1e-6,
        atol=1e-30,
    )
    assert res.exact_neighbors and res.exact_probabilities
    # k beyond the largest candidate count is answered by the fp32 pass (no bound to report).
    assert (res.backend == "numpy-blocked") == (k > compressed.CANDIDATES[-1])
    bound = res.probability_bound if res.probability_bound is not None else np.zeros(len(queries))
    assert (bound <= compressed.TOLERANCE).all()
    rel = np.abs(res.probabilities.astype(np.float64) / ref["probabilities"] - 1.0)
    finite = ref["probabilities"] > 1e-30  # float32 underflow below that
    assert (rel[finite] <= compressed.TOLERANCE).all()
    limit = np.broadcast_to(bound[:, None] + 1e-6, rel.shape)  # + float32 output rounding
    bounded = finite & (limit > 1e-6)
    assert (rel[bounded] <= limit[bounded]).all()


def test_matches_exact_index_on_clustered_labels(make_clustered) -> None:
    m = make_clustered(30_000, 64, 300, seed=5)
    rng = np.random.default_rng(6)
    rows = rng.integers(0, len(m), 4)
    q = unit(0.3 * m[rows] + 0.95 * unit(rng.standard_normal((4, 64))))
    exact = ExactIndex(m)
    index = CompressedIndex(exact)
    for k in (1, 5, 100):
        got = index.search(q, k, logit_scale=100.0)
        want = exact.search(q, k, logit_scale=100.0)
        np.testing.assert_array_equal(got.ids, want.ids)
        assert got.backend == "int8-rescore" and want.backend == "numpy-blocked"
        np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=1e-3)
        assert got.probability_bound is not None
        rel = np.abs(got.probabilities / want.probabilities - 1.0).max(axis=1)
        assert (rel <= got.probability_bound + 1e-5).all()


def test_diffuse_queries_fall_back_to_the_exact_normaliser(
    small_candidates: None, make_reference, caplog: pytest.LogCaptureFixture
) -> None:
    """Random labels at scale 100: the tail bound over 2,000 rows cannot reach 1e-3 from 24
    candidates, so the exact pass normalises (bound 0) and says so in the log."""
    m = unit(np.random.default_rng(1).standard_normal((2000, 32)))
    q = unit(np.random.default_rng(2).standard_normal((4, 32)))
    index = CompressedIndex(ExactIndex(m))
    with caplog.at_level(logging.INFO, logger="zsindex.index.compressed"):
        res = index.search(q, 5, logit_scale=100.0)
    assert "exact pass" in caplog.text
    assert res.probability_bound is not None and (res.probability_bound == 0.0).any()
    ref = make_reference(m, q, 5)
    np.testing.assert_array_equal(res.ids, ref["ids"])
    rel = np.abs(res.probabilities / ref["probabilities"] - 1.0).max(axis=1)
    assert (rel <= res.probability_bound + 1e-5).all()  # exact (fallback) or within its bound


def test_unprovable_ties_fall_back_and_keep_lower_ids_first(small_candidates: None) -> None:
    """40 identical best rows among 200: 24 candidates cannot prove which 5 lead."""
    rng = np.random.default_rng(3)
    m = unit(rng.standard_normal((200, 16)))
    best = m[7].copy()
    tied = rng.choice(200, 40, replace=False)
    m[tied] = best
    res = CompressedIndex(ExactIndex(m)).search(best, 5, logit_scale=100.0, mode="sigmoid")
    assert res.ids[0].tolist() == sorted(set(tied.tolist()) | {7})[:5]
    assert res.probability_bound is None  # sigmoid: no normaliser


def test_delegates_subsets_large_batches_and_topk_modes(make_clustered) -> None:
    m = make_clustered(5000, 32, 50, seed=8)
    q = unit(np.random.default_rng(9).standard_normal((compressed.SCAN_BATCH_MAX + 1, 32)))
    exact = ExactIndex(m)
    index = CompressedIndex(exact)
    sub = index.search(q[:1], 3, logit_scale=50.0, subset=range(100, 900))
    assert sub.backend == "numpy-blocked" and sub.ids.min() >= 100
    big = index.search(q, 3, logit_scale=50.0)
    assert big.backend == "numpy-blocked"
    np.testing.assert_array_equal(big.ids, exact.search(q, 3, logit_scale=50.0).ids)
    top = index.search(q[:2], 3, logit_scale=50.0, probabilities="topk")
    assert top.backend == "int8-rescore" and not top.exact_probabilities
    np.testing.assert_allclose(top.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert index.nbytes == m.size  # one byte per value; the fp32 rows belong to exact


def test_choose_index_compresses_large_cpu_sets(
    make_clustered, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = make_clustered(3000, 16, 30, seed=10)
    assert choose_index(m, device="cpu").backend == "numpy-blocked"  # the default
    index = choose_index(m, device="cpu", spec="exact,int8")
    assert index.backend == "int8-rescore" and index.spec.is_exact and index.device == "cpu"
    assert index.spec.canonical() == "exact,int8"
    assert compress(ExactIndex(m[:10]), min_rows=1000).backend == "numpy-blocked"
    monkeypatch.setattr(compressed, "COMPRESS_MIN_ROWS", 1000)
    assert compress(ExactIndex(m)).backend == "int8-rescore"


@pytest.mark.parametrize("spec", ["ivf16,int8", "hnsw8,int8", "exact,sq8"])
def test_int8_is_a_storage_of_exact_only(spec: str) -> None:
    from zsindex.errors import InvalidInputError
    from zsindex.index import IndexSpec

    with pytest.raises(InvalidInputError, match=r"int8|quantizer"):
        IndexSpec.parse(spec)


def test_the_product_serves_exact_int8_from_the_int8_copy(
    make_clustered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zsindex import Client
    from zsindex.config import Settings

    monkeypatch.setattr(compressed, "CANDIDATES", (256, 1024))  # < 3000: a bounded tail
    m = make_clustered(3000, 128, 30, seed=11)  # zsindex-tiny embeds in 128 dims
    settings = Settings(
        home=tmp_path, device="cpu", model="zsindex-tiny", pretrained=None, index="exact,int8"
    )
    with Client.local(settings=settings) as client:
        client.import_labelset("big", m, [f"l{i}" for i in range(len(m))])
        [result] = client.classify(embeddings=m[5:6], labelset="big", k=3)
        loaded = client.backend.ready()["loaded"]["big"]  # type: ignore[attr-defined]
    assert loaded["index"] == "int8-rescore" and loaded["exact"] is True
    assert result.predictions[0].label == "l5"
    assert result.exact_probabilities
    # The bounded normaliser is reported with the result (and in its JSON form).
    assert result.probability_bound is not None and 0 < result.probability_bound <= 1e-3
    assert result.to_dict()["probability_bound"] == result.probability_bound
