"""Approximate indexes: spec parsing, recall on image-like queries, the tuner, honest flags."""

from __future__ import annotations

import numpy as np
import pytest

from zsindex.errors import InvalidInputError
from zsindex.index import ExactIndex, IndexSpec, build_index
from zsindex.index.ann import AnnIndex, build_faiss
from zsindex.index.tuner import recall_at_k, simulate_image_queries, tune


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("exact", "exact"),
        ("flat", "exact"),
        ("ivf1024", "ivf:nlist=1024"),
        ("ivf:nlist=1024", "ivf:nlist=1024"),
        ("IVF256,sq8", "ivf:nlist=256,sq8"),
        ("ivf:nlist=64,nprobe=8,fp16", "ivf:nlist=64,nprobe=8,fp16"),
        ("hnsw32", "hnsw:ef_construction=80,m=32"),
        ("hnsw16,ef_search=64,sq8", "hnsw:ef_construction=80,ef_search=64,m=16,sq8"),
    ],
)
def test_spec_parse(text: str, canonical: str) -> None:
    spec = IndexSpec.parse(text)
    assert spec.canonical() == canonical
    assert IndexSpec.parse(spec.canonical()) == spec


@pytest.mark.parametrize("text", ["", "pq16", "ivf:nlist=0", "exact,sq8", "ivf64,m=3", "hnsw,x"])
def test_spec_rejects(text: str) -> None:
    with pytest.raises(InvalidInputError):
        IndexSpec.parse(text)


def test_simulated_queries_are_image_like(clustered_matrix) -> None:
    q, rows = simulate_image_queries(clustered_matrix, 200, seed=1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    cos = np.einsum("qd,qd->q", q, clustered_matrix[rows])
    assert 0.2 < float(np.median(cos)) < 0.45  # the modality gap: far from the label


@pytest.fixture(scope="module")
def exact_and_queries(clustered_matrix):
    exact = ExactIndex(clustered_matrix)
    queries, _ = simulate_image_queries(clustered_matrix, 200, seed=2)
    truth = exact.search(queries, 5, logit_scale=100.0).ids
    return exact, queries, truth


@pytest.fixture(scope="module")
def hnsw_faiss(exact_and_queries):
    exact, _, _ = exact_and_queries
    return build_faiss(exact.matrix, IndexSpec.parse(HNSW))


HNSW = "hnsw16,ef_construction=40"


@pytest.mark.parametrize("spec", ["ivf64", "ivf64,sq8", "ivf64,fp16", HNSW])
def test_recall_rises_with_search_effort(exact_and_queries, hnsw_faiss, spec: str) -> None:
    exact, queries, truth = exact_and_queries
    parsed = IndexSpec.parse(spec)
    built = hnsw_faiss if parsed.kind == "hnsw" else build_faiss(exact.matrix, parsed)
    index = AnnIndex(exact, parsed, built, search_param=1)
    low, high = (1, 64) if parsed.kind == "ivf" else (8, 512)
    r_low = recall_at_k(index.approximate_ids(queries, 5, low), truth)
    r_high = recall_at_k(index.approximate_ids(queries, 5, high), truth)
    assert r_low < r_high
    assert r_high >= (0.97 if parsed.kind == "ivf" else 0.8)
    if parsed.kind == "ivf":
        assert r_low < 0.6  # image-like queries are hard for one probe


def test_tuner_reaches_target(exact_and_queries) -> None:
    exact, queries, truth = exact_and_queries
    spec = IndexSpec.parse("ivf64")
    index = AnnIndex(exact, spec, build_faiss(exact.matrix, spec), search_param=1)
    # min_speedup=0 makes the choice independent of this machine's timing noise.
    report = tune(index, queries[:100], k=5, target_recall=0.95, min_speedup=0.0)
    assert report.chosen is not None and index.search_param == report.chosen
    point = next(p for p in report.curve if p.param == report.chosen)
    assert point.recall >= 0.95
    assert all(p.recall < 0.95 for p in report.curve if p.param < report.chosen)
    # Recall on held-out queries at the chosen setting.
    held_out = recall_at_k(index.search(queries[100:], 5, logit_scale=100.0).ids, truth[100:])
    assert held_out >= 0.9


def test_tuner_falls_back_to_exact(exact_and_queries, hnsw_faiss) -> None:
    exact, queries, truth = exact_and_queries
    index = AnnIndex(exact, IndexSpec.parse(HNSW), hnsw_faiss, search_param=16)
    report = tune(index, queries[:50], k=5, target_recall=0.99, min_speedup=1e9)
    assert report.chosen is None and index.uses_exact
    assert "falling back" in report.reason
    res = index.search(queries, 5, logit_scale=100.0)
    np.testing.assert_array_equal(res.ids, truth)
    assert res.exact_neighbors and res.backend == "numpy-blocked"


def test_build_index_tunes_or_falls_back(clustered_matrix) -> None:
    index = build_index(clustered_matrix, "ivf32", num_tune_queries=64)
    assert isinstance(index, AnnIndex)
    assert index.tuning["spec"] == "ivf:nlist=32"
    if index.uses_exact:
        assert index.search_param is None and "exact" in index.tuning["reason"]
    else:
        assert index.tuning["chosen"] == index.search_param
    fixed = build_index(clustered_matrix, "ivf32,nprobe=4")
    assert isinstance(fixed, AnnIndex) and fixed.search_param == 4


def test_probability_flags_are_honest(exact_and_queries) -> None:
    exact, queries, _ = exact_and_queries
    spec = IndexSpec.parse("ivf64")
    index = AnnIndex(exact, spec, build_faiss(exact.matrix, spec), search_param=4)
    q = queries[:20]
    full = index.search(q, 5, logit_scale=50.0, probabilities="exact")
    assert full.exact_probabilities and not full.exact_neighbors
    assert full.backend == "faiss-ivf"
    # Exact probabilities: exp(logit - lse) with the normaliser over all labels.
    lse = exact.log_normalizer(q, logit_scale=50.0)
    np.testing.assert_allclose(full.log_normalizer, lse)
    scores = np.einsum("qd,qkd->qk", q, exact.matrix[full.ids])
    np.testing.assert_allclose(full.scores, scores, atol=1e-6)
    np.testing.assert_allclose(full.probabilities, np.exp(50.0 * scores - lse[:, None]), rtol=1e-5)
    assert (np.diff(full.scores, axis=1) <= 0).all()
    top = index.search(q, 5, logit_scale=50.0, probabilities="topk")
    assert not top.exact_probabilities
    np.testing.assert_allclose(top.probabilities.sum(axis=1), 1.0, atol=1e-6)
    sig = index.search(q, 5, logit_scale=50.0, logit_bias=-10.0, mode="sigmoid")
    np.testing.assert_allclose(sig.probabilities, 1 / (1 + np.exp(-sig.logits)), rtol=1e-5)
    sub = index.search(q, 5, logit_scale=100.0, subset=np.arange(0, 20_000, 7))
    assert sub.exact_neighbors and sub.backend == "numpy-blocked"


def test_too_few_candidates_answered_exactly(make_clustered) -> None:
    m = make_clustered(300, 16, 5, seed=4)
    exact = ExactIndex(m)
    spec = IndexSpec.parse("ivf64")
    index = AnnIndex(exact, spec, build_faiss(m, spec), search_param=1)
    res = index.search(m[:10], 50, logit_scale=100.0)
    assert (res.ids >= 0).all()
    assert all(len(set(row)) == 50 for row in res.ids.tolist())
    np.testing.assert_array_equal(res.ids[:, 0], np.arange(10))  # each label finds itself


def test_nlist_larger_than_labels_rejected(make_clustered) -> None:
    with pytest.raises(InvalidInputError, match="nlist"):
        build_index(make_clustered(100, 8, 3), "ivf1024")
