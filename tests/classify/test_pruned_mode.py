"""``pruned`` mode and the adaptive beam through the real client (SQLite store, real indexes).

``pruned`` must answer exactly flat mode's predictions (same labels, same order, same scores)
on trees and on flat sets with k-means groups, with probabilities that bracket flat's within the
reported ``probability_error``. The default (adaptive) beam must find flat's top-1 where a fixed
beam of 8 does not, and ``--beam B`` must keep a fixed width.
"""

from __future__ import annotations

import numpy as np
import pytest

from zsindex import Client
from zsindex.classify import pruned
from zsindex.config import Settings
from zsindex.errors import InvalidInputError
from zsindex.results import ClassificationResult

DIM = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _tree(coarse: int, fine: int, spread: float, seed: int) -> tuple[np.ndarray, list, list]:
    """Parents = normalised mean of their children (``labels import``'s default), stored."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((coarse, DIM)))
    leaves = _unit(
        np.repeat(centres, fine, axis=0) + spread * _unit(rng.standard_normal((coarse * fine, DIM)))
    )
    parents_vec = _unit(leaves.reshape(coarse, fine, DIM).mean(axis=1))
    emb = np.concatenate([parents_vec, leaves])
    names = [f"p{i}" for i in range(coarse)] + [f"leaf{i}" for i in range(coarse * fine)]
    parents: list = [None] * coarse + [f"p{i // fine}" for i in range(coarse * fine)]
    return emb, names, parents


def _queries(rows: np.ndarray, n: int, seed: int, weight: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pick = rows[rng.choice(len(rows), n, replace=False)]
    return _unit(weight * pick + _unit(rng.standard_normal((n, DIM))))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, random_model: str) -> Client:
    home = tmp_path_factory.mktemp("pruned")
    c = Client.local(database_url=f"sqlite:///{home / 'db.sqlite3'}", home=home, device="cpu")
    emb, names, parents = _tree(40, 50, 0.3, seed=1)
    c.import_labelset("tight", emb, names, parents=parents, model=random_model)
    emb, names, parents = _tree(40, 50, 1.5, seed=2)
    c.import_labelset("loose", emb, names, parents=parents, model=random_model)
    rng = np.random.default_rng(3)
    centres = _unit(rng.standard_normal((128, DIM)))
    flat = _unit(
        np.repeat(centres, 160, axis=0) + 0.3 * _unit(rng.standard_normal((128 * 160, DIM)))
    )
    assert len(flat) >= pruned.MIN_ROWS  # big enough for k-means groups
    flat = flat[rng.permutation(len(flat))]
    c.import_labelset("flatset", flat, [f"f{i}" for i in range(len(flat))], model=random_model)
    return c


def _same(a: list[ClassificationResult], b: list[ClassificationResult]) -> None:
    for ra, rb in zip(a, b, strict=True):
        assert [p.label for p in ra.predictions] == [p.label for p in rb.predictions]
        np.testing.assert_allclose(
            [p.score for p in ra.predictions], [p.score for p in rb.predictions], atol=1e-6
        )
        e = ra.probability_error
        assert e is not None and e >= 0
        assert ra.exact_probabilities == (e == 0)
        for pa, pb in zip(ra.predictions, rb.predictions, strict=True):
            assert pb.probability <= pa.probability * (1 + 3e-5)
            assert pb.probability >= pa.probability / (1 + e) * (1 - 3e-5)


@pytest.mark.parametrize("name", ["tight", "loose", "flatset"])
def test_pruned_equals_flat(client: Client, name: str) -> None:
    _, matrix = client.embeddings(name)
    rows = matrix[40:] if name != "flatset" else matrix
    q = _queries(rows, 24, seed=4)
    for k in (1, 5):
        flat = client.classify(embeddings=q, labelset=name, k=k)
        got = client.classify(embeddings=q, labelset=name, k=k, mode="pruned")
        _same(got, flat)
        assert all(r.probability_error is None for r in flat)


def test_pruned_within_a_subtree_equals_flat(client: Client) -> None:
    _, matrix = client.embeddings("tight")
    q = _queries(matrix[40:], 4, seed=5)
    flat = client.classify(embeddings=q, labelset="tight", within="p3")
    got = client.classify(embeddings=q, labelset="tight", within="p3", mode="pruned")
    _same(got, flat)


def test_pruned_refuses_what_flat_refuses(client: Client) -> None:
    q = _unit(np.ones((1, DIM)))
    with pytest.raises(InvalidInputError, match="beam"):
        client.classify(embeddings=q, labelset="tight", mode="pruned", beam=4)
    with pytest.raises(InvalidInputError, match="needs a tree"):
        client.classify(embeddings=q, labelset="flatset", mode="beam")


def test_result_round_trips_the_error() -> None:
    r = ClassificationResult("a", "s", 1, [], exact_probabilities=False, probability_error=0.01)
    assert ClassificationResult.from_dict(r.to_dict()) == r
    assert "probability_error" not in ClassificationResult("a", "s", 1, []).to_dict()


def test_adaptive_beam_finds_what_a_fixed_beam_misses(client: Client) -> None:
    _, matrix = client.embeddings("loose")
    leaves = matrix[40:]
    q = _queries(leaves, 64, seed=6, weight=0.3)
    flat = [r.predictions[0].label for r in client.classify(embeddings=q, labelset="loose", k=1)]

    def agreement(**kw: object) -> float:
        got = client.classify(embeddings=q, labelset="loose", k=1, mode="beam", **kw)
        return float(np.mean([r.predictions[0].label == f for r, f in zip(got, flat, strict=True)]))

    fixed, adaptive = agreement(beam=8), agreement()
    assert fixed < 0.95  # loose groups: a beam of 8 parents loses flat's answer
    assert adaptive >= 0.98
    assert agreement(beam=40) == 1.0  # every parent: exactly flat


def test_beam_tolerance_setting() -> None:
    assert Settings.from_env({}).beam_tolerance == pytest.approx(1e-3)
    assert Settings.from_env({"ZSINDEX_BEAM_TOLERANCE": "0.01"}).beam_tolerance == 0.01
    for bad in ("0", "1", "-1", "abc", "nan"):
        with pytest.raises(InvalidInputError, match="ZSINDEX_BEAM_TOLERANCE"):
            Settings.from_env({"ZSINDEX_BEAM_TOLERANCE": bad})
