"""Fixtures for the index tests: synthetic label matrices and a float64 brute-force reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    rows = np.asarray(rows, dtype=np.float64)
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """``n`` unit vectors near ``clusters`` random unit centres (like text label embeddings)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, dim)))
    assign = rng.integers(0, clusters, size=n)
    return unit(centres[assign] + spread * unit(rng.standard_normal((n, dim))))


def reference(
    matrix: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    scale: float = 100.0,
    bias: float = 0.0,
    mode: str = "softmax",
    subset: Any = None,
) -> dict[str, np.ndarray]:
    """Brute force in float64: ids (ties: lower id first), scores, probabilities, lse."""
    m = np.asarray(matrix, dtype=np.float64)
    ids_all = np.arange(len(m))
    if subset is not None:
        ids_all = np.unique(np.asarray(ids_all[subset]))
        m = m[ids_all]
    s = np.atleast_2d(np.asarray(queries, dtype=np.float64)) @ m.T
    order = np.argsort(-s, axis=1, kind="stable")[:, : min(k, len(m))]
    top = np.take_along_axis(s, order, axis=1)
    logits = scale * s + bias
    mx = logits.max(axis=1, keepdims=True)
    lse = (mx + np.log(np.exp(logits - mx).sum(axis=1, keepdims=True)))[:, 0]
    top_logits = scale * top + bias
    if mode == "sigmoid":
        probs = 1.0 / (1.0 + np.exp(-top_logits))
    else:
        probs = np.exp(top_logits - lse[:, None])
    return {"ids": ids_all[order], "scores": top, "probabilities": probs, "lse": lse}


@pytest.fixture
def make_reference() -> Callable[..., dict[str, np.ndarray]]:
    return reference


@pytest.fixture(scope="session")
def clustered_matrix() -> np.ndarray:
    """20,000 clustered labels x 32 dims."""
    return clustered(20_000, 32, 200, seed=3)


@pytest.fixture
def make_clustered() -> Callable[..., np.ndarray]:
    return clustered


@pytest.fixture
def make_unit() -> Callable[[np.ndarray], np.ndarray]:
    return unit
