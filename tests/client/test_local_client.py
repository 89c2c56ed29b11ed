"""Client.local() end to end on both backends, with a random-weight open_clip model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsindex import Client
from zsindex.errors import InvalidInputError, NotFoundError


@pytest.fixture
def client(db_url: str, zs_home: Path, random_model: str) -> Client:
    c = Client.local(database_url=db_url, device="cpu")
    yield c
    c.close()


def _reference_probs(c: Client, name: str, emb: np.ndarray) -> np.ndarray:
    """The seed pipeline: embeddings @ classifier, × logit scale, softmax over all labels."""
    _, matrix = c.embeddings(name)
    info = c.labelset(name)
    scale = c.backend.resolve(name).logit_scale  # type: ignore[attr-defined]
    logits = scale * emb @ matrix.T
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    assert info.num_labels == matrix.shape[0]
    return p / p.sum(axis=1, keepdims=True)


def test_register_classify_and_versions(client: Client, random_model: str) -> None:
    info = client.add_labelset(
        "pets", ["dog", "cat", "bird"], model=random_model, templates=["a photo of a {}."]
    )
    assert (info.name, info.version, info.num_labels) == ("pets", 1, 3)
    assert info.templates == ["a photo of a {}."]
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    [result] = client.classify([img], labelset="pets", k=3)
    assert result.labelset == "pets" and result.version == 1
    assert sorted(p.label for p in result.predictions) == ["bird", "cat", "dog"]
    assert sum(p.probability for p in result.predictions) == pytest.approx(1.0, abs=1e-5)
    again = client.add_labelset("pets", ["dog", "cat", "bird", "fish"], model=random_model)
    assert again.version == 2
    assert [v.version for v in client.history("pets")] == [1, 2]
    [result] = client.classify([img], labelset="pets", k=10)
    assert result.version == 2 and len(result.predictions) == 4


def test_classify_embeddings_matches_seed_pipeline(client: Client, random_model: str) -> None:
    client.add_labelset("nums", [f"number {i}" for i in range(20)], model=random_model)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    results = client.classify(embeddings=emb, labelset="nums", k=20)
    expected = _reference_probs(client, "nums", emb)
    names, _ = client.embeddings("nums")
    for q, result in enumerate(results):
        got = {p.label: p.probability for p in result.predictions}
        for i, name in enumerate(names):
            assert got[name] == pytest.approx(expected[q, i], rel=1e-4, abs=1e-7)
        top = int(np.argmax(expected[q]))
        assert result.predictions[0].label == names[top]


def test_tree_modes_and_embeddings_order(client: Client, random_model: str) -> None:
    labels = ["red circle", "blue circle", "red square", "circle", "square"]
    parents = {"red circle": "circle", "blue circle": "circle", "red square": "square"}
    client.add_labelset("tree", labels, parents=parents, model=random_model)
    names, matrix = client.embeddings("tree")
    assert names == labels  # registration order, internal nodes included, own names only
    tree = client.tree("tree")
    assert tree.names == labels
    assert tree.parents == [3, 3, 4, -1, -1]  # row indices, -1 for roots
    assert tree.depths == [2, 2, 2, 1, 1] and tree.is_tree
    assert matrix.shape == (5, 64) and matrix.dtype == np.float32
    emb = matrix[[0]]  # a query equal to "red circle"'s own text embedding
    for mode in ("flat", "beam", "marginal", "chils"):
        [r] = client.classify(embeddings=emb, labelset="tree", mode=mode, k=3)
        leaves = {"red circle", "blue circle", "red square"}
        assert {p.label for p in r.predictions} <= leaves, mode
        if mode != "flat":
            assert [s.label for s in r.path][-1] == r.predictions[0].label
            assert r.path[0].label in {"circle", "square"}
    [coarse] = client.classify(embeddings=emb, labelset="tree", mode="marginal", rank=1, k=2)
    assert {p.label for p in coarse.predictions} == {"circle", "square"}
    assert sum(p.probability for p in coarse.predictions) == pytest.approx(1.0, abs=1e-5)
    [inside] = client.classify(embeddings=emb, labelset="tree", within="square", k=3)
    assert [p.label for p in inside.predictions] == ["red square"]


def test_errors_are_clear_and_change_nothing(client: Client, random_model: str) -> None:
    with pytest.raises(NotFoundError):
        client.labelset("missing")
    with pytest.raises(InvalidInputError):
        client.add_labelset("Bad/Name", ["a"], model=random_model)
    with pytest.raises(InvalidInputError):
        client.add_labelset("dups", ["a", "A"], model=random_model)
    assert client.labelsets() == []
    client.add_labelset("flat", ["a", "b"], model=random_model)
    with pytest.raises(InvalidInputError, match="tree"):
        client.classify(embeddings=np.ones((1, 64)), labelset="flat", mode="beam")
    with pytest.raises(InvalidInputError, match="shape"):
        client.classify(embeddings=np.ones((1, 3)), labelset="flat")


def test_delete(client: Client, random_model: str) -> None:
    client.add_labelset("gone", ["a", "b"], model=random_model)
    client.delete_labelset("gone")
    assert client.labelsets() == []
    with pytest.raises(NotFoundError):
        client.classify(embeddings=np.ones((1, 64)), labelset="gone")


def test_same_content_is_not_a_new_version(client: Client, random_model: str) -> None:
    first = client.add_labelset("same", ["a", "b"], model=random_model, templates="photo")
    again = client.add_labelset("same", ["a", "b"], model=random_model, templates="photo")
    assert (first.version, again.version, again.digest) == (1, 1, first.digest)
    changed = client.add_labelset("same", ["a", "b"], model=random_model, templates="simple-7")
    assert changed.version == 2 and changed.digest != first.digest
