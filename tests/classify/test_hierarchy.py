"""Hierarchical modes against brute-force references, on awkward trees.

Trees are imported with synthetic vectors through the real client; references are computed
here with plain Python loops over the registration order.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from zsindex import Client
from zsindex.errors import InvalidInputError

DIM = 64

# An unbalanced tree: a single-child chain, leaves at depths 2, 3 and 4, and the name "x"
# under two different parents.
NODES: list[tuple[str, str | None]] = [
    ("A", None),
    ("B", None),
    ("C", None),
    ("a1", "A"),
    ("a2", "A"),
    ("x", "A"),
    ("b1", "B"),
    ("x", "B"),
    ("c1", "C"),
    ("a1a", "a1"),
    ("a1b", "a1"),
    ("c1c", "c1"),
    ("c1cc", "c1c"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, random_model: str) -> tuple[Client, np.ndarray]:
    home = tmp_path_factory.mktemp("hier")
    client = Client.local(database_url=f"sqlite:///{home / 'db.sqlite3'}", home=home, device="cpu")
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((len(NODES), DIM)).astype(np.float32)
    # Children near their parents, like a real taxonomy.
    index = {i: i for i in range(len(NODES))}
    for i, (_, parent) in enumerate(NODES):
        if parent is not None:
            p = next(j for j in range(i) if NODES[j][0] == parent and j != i)
            emb[i] = emb[index[p]] + 0.8 * emb[i]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    names = [n for n, _ in NODES]
    parent_names = [p for _, p in NODES]
    client.import_labelset("t", emb, names, parents=parent_names, model=random_model)
    stored_names, stored = client.embeddings("t")
    assert stored_names == names
    return client, stored


def _label(node: int) -> str:
    """How predictions name a node: "x" is repeated, so it is "A/x" or "B/x"."""
    name, parent = NODES[node]
    return f"{parent}/{name}" if name == "x" else name


def _parents() -> list[int]:
    out = []
    for i, (_, parent) in enumerate(NODES):
        out.append(
            -1
            if parent is None
            else next(j for j in range(len(NODES)) if NODES[j][0] == parent and j != i)
        )
    return out


def _depth(i: int, parents: list[int]) -> int:
    return 1 if parents[i] < 0 else 1 + _depth(parents[i], parents)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _queries(matrix: np.ndarray, n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(1)
    q = 0.3 * matrix[rng.integers(0, len(matrix), n)] + 0.95 * rng.standard_normal((n, DIM)) / 8
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _scale(client: Client) -> float:
    return client.backend.resolve("t").logit_scale  # type: ignore[attr-defined]


def test_marginal_equals_brute_force(setup: tuple[Client, np.ndarray]) -> None:
    client, matrix = setup
    parents = _parents()
    leaves = [i for i in range(len(NODES)) if i not in parents]
    scale = _scale(client)
    for q in _queries(matrix):
        p_leaf = _softmax(scale * matrix[leaves] @ q)
        expected: dict[str, float] = {}
        for leaf, p in zip(leaves, p_leaf, strict=True):
            node = leaf
            while _depth(node, parents) > 1:
                node = parents[node]
            expected[NODES[node][0]] = expected.get(NODES[node][0], 0.0) + float(p)
        [r] = client.classify(embeddings=q, labelset="t", mode="marginal", rank=1, k=3)
        got = {p.label: p.probability for p in r.predictions}
        assert got == pytest.approx(expected, abs=1e-6)
        # Leaves: the marginal at the deepest rank is the flat softmax over all leaves.
        [flat] = client.classify(embeddings=q, labelset="t", mode="flat", k=20)
        [deep] = client.classify(embeddings=q, labelset="t", mode="marginal", k=20)
        assert len(flat.predictions) == len(leaves)
        assert sorted(p.probability for p in deep.predictions) == pytest.approx(
            sorted(p.probability for p in flat.predictions), abs=1e-5
        )


def test_beam_with_a_wide_beam_equals_path_products(setup: tuple[Client, np.ndarray]) -> None:
    client, matrix = setup
    parents = _parents()
    scale = _scale(client)

    def path_prob(node: int, q: np.ndarray) -> float:
        siblings = [j for j in range(len(NODES)) if parents[j] == parents[node]]
        cond = _softmax(scale * matrix[siblings] @ q)[siblings.index(node)]
        return float(cond) * (1.0 if parents[node] < 0 else path_prob(parents[node], q))

    leaves = [i for i in range(len(NODES)) if i not in parents]
    for q in _queries(matrix):
        [r] = client.classify(embeddings=q, labelset="t", mode="beam", beam=100, k=20)
        # A beam covering the tree ranks leaves as flat search does, each with its path product.
        [flat] = client.classify(embeddings=q, labelset="t", mode="flat", k=20)
        assert [p.label for p in r.predictions] == [p.label for p in flat.predictions]
        # (Compare the multiset of path products: leaves are not in path order.)
        assert sorted(p.probability for p in r.predictions) == pytest.approx(
            sorted(path_prob(i, q) for i in leaves), abs=1e-5
        )
        best = max(leaves, key=lambda i: float(matrix[i] @ q))
        assert r.predictions[0].label == _label(best)
        chain = []
        node = best
        while node >= 0:
            chain.append(node)
            node = parents[node]
        assert [s.label for s in r.path] == [NODES[i][0] for i in reversed(chain)]
        assert [s.probability for s in r.path] == pytest.approx(
            [path_prob(i, q) for i in reversed(chain)], abs=1e-5
        )


def test_chils_equals_brute_force(setup: tuple[Client, np.ndarray]) -> None:
    client, matrix = setup
    parents = _parents()
    scale = _scale(client)
    leaves = [i for i in range(len(NODES)) if i not in parents]
    depth = {i: _depth(i, parents) for i in range(len(NODES))}
    for q in _queries(matrix):
        p_leaf = _softmax(scale * matrix[leaves] @ q)
        weights = []
        for leaf, p in zip(leaves, p_leaf, strict=True):
            if parents[leaf] < 0:
                weights.append(float(p))
                continue
            level = [j for j in range(len(NODES)) if depth[j] == depth[leaf] - 1]
            pp = _softmax(scale * matrix[level] @ q)[level.index(parents[leaf])]
            weights.append(float(p) * float(pp))
        total = sum(weights)
        expected = sorted((w / total for w in weights), reverse=True)
        [r] = client.classify(embeddings=q, labelset="t", mode="chils", k=20)
        assert [p.probability for p in r.predictions] == pytest.approx(expected, abs=1e-5)


def test_within_and_repeated_names(setup: tuple[Client, np.ndarray]) -> None:
    client, matrix = setup
    q = matrix[7]  # "x" under B
    # "x" is repeated, so predictions name it by the path that tells it apart (issue 20).
    [r] = client.classify(embeddings=q, labelset="t", within="B", k=5)
    assert {p.label for p in r.predictions} == {"b1", "B/x"}
    for mode in ("beam", "marginal", "chils"):
        [r] = client.classify(embeddings=q, labelset="t", within="B", mode=mode, k=5)
        assert {p.label for p in r.predictions} == {"b1", "B/x"}, mode
        assert r.path[0].label == "B" and r.path[0].probability == 1.0
        assert [s.label for s in r.path][-1] in ("b1", "x")  # path steps: own names
    with pytest.raises(InvalidInputError, match="ambiguous"):
        client.classify(embeddings=q, labelset="t", within="x")
    [r] = client.classify(embeddings=q, labelset="t", within="B/x", k=5)
    assert [p.label for p in r.predictions] == ["B/x"]


def test_rank_and_min_confidence(setup: tuple[Client, np.ndarray]) -> None:
    client, matrix = setup
    q = matrix[12]  # c1cc, at the bottom of the single-child chain
    [r] = client.classify(embeddings=q, labelset="t", mode="beam", rank=2, k=3)
    assert all(s.rank != "3" for s in r.path) and len(r.path) == 2
    [r] = client.classify(embeddings=q, labelset="t", mode="beam", k=3)
    assert [s.label for s in r.path] == ["C", "c1", "c1c", "c1cc"]
    # A single-child chain keeps its parent's probability at every step.
    assert r.path[1].probability == pytest.approx(r.path[0].probability, abs=1e-6)
    threshold = (r.path[0].probability + 1.0) / 2 if r.path[0].probability < 1 else 2.0
    [sure] = client.classify(embeddings=q, labelset="t", mode="marginal", min_confidence=0.0)
    assert len(sure.path) == 4
    if threshold <= 1.0:
        [none] = client.classify(embeddings=q, labelset="t", mode="beam", min_confidence=threshold)
        assert none.path == [] and none.predictions == []
    with pytest.raises(InvalidInputError, match="rank"):
        client.classify(embeddings=q, labelset="t", mode="beam", rank="species")
    assert math.isfinite(r.predictions[0].score)
