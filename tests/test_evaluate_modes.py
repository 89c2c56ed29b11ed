"""``zsindex.evaluate`` in tree modes: which rows a folder may name at a rank (issue 20).

The tree is given in an order that is not breadth-first, with a leaf above the deepest rank
(``fungus``), so the rows eval accepts must be mapped back from classification's BFS rows and
must include a leaf that is its own answer at a deeper rank, as marginal and beam answer it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsindex import Client
from zsindex.config import Settings
from zsindex.errors import InvalidInputError, NotFoundError
from zsindex.evaluate import answer_rows, evaluate_folder
from zsindex.options import ClassifyOptions
from zsindex.results import LabelTree

NAMES = ["dog", "animal", "fungus", "cat", "plant", "rose"]
PARENTS = [1, -1, -1, 1, -1, 4]
TREE = LabelTree(
    names=NAMES,
    parents=PARENTS,
    depths=[2, 1, 1, 2, 1, 2],
    ranks=["species", "kingdom", "kingdom", "species", "kingdom", "species"],
    rank_names=["kingdom", "species"],
)


def _names(options: ClassifyOptions) -> tuple[set[str], str]:
    rows, what = answer_rows(TREE, options)
    return {NAMES[i] for i in rows}, what


def test_rows_at_each_rank() -> None:
    assert _names(ClassifyOptions(mode="marginal", rank="kingdom")) == (
        {"animal", "fungus", "plant"},
        "node at rank kingdom of the label set",
    )
    # A leaf above the rank is its own answer there.
    assert _names(ClassifyOptions(mode="beam", rank=2))[0] == {"dog", "cat", "fungus", "rose"}
    # No rank, or flat mode: the leaves.
    assert _names(ClassifyOptions(mode="marginal"))[0] == {"dog", "cat", "fungus", "rose"}
    assert _names(ClassifyOptions())[0] == {"dog", "cat", "fungus", "rose"}
    assert _names(ClassifyOptions(mode="chils", rank="species", within="animal")) == (
        {"dog", "cat"},
        "node at rank species under 'animal' of the label set",
    )


def test_rank_and_within_follow_classification_rules() -> None:
    with pytest.raises(InvalidInputError, match="unknown rank 'genus'"):
        answer_rows(TREE, ClassifyOptions(mode="marginal", rank="genus"))
    with pytest.raises(InvalidInputError, match="not below the within node"):
        answer_rows(TREE, ClassifyOptions(mode="marginal", rank=1, within="animal"))
    with pytest.raises(NotFoundError):
        answer_rows(TREE, ClassifyOptions(mode="marginal", within="tree"))


def test_evaluate_folder_at_a_rank_with_a_shallow_leaf(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", device="cpu", model="zsindex-tiny", pretrained=None)
    rows = np.random.default_rng(0).standard_normal((len(NAMES), 128)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    with Client.local(settings=settings) as client:
        parents = [p if p >= 0 else None for p in PARENTS]
        client.import_labelset("life", rows, NAMES, parents=parents, model="zsindex-tiny")
        root = tmp_path / "data"
        for i, folder in enumerate(["fungus", "dog", "rose"]):
            (root / folder).mkdir(parents=True)
            Image.new("RGB", (40, 30), (80 * i, 120, 200)).save(root / folder / "a.png")
        options = ClassifyOptions(mode="marginal", rank=2)  # an import has no rank names
        report = evaluate_folder(client, root, "life", options)
        results = client.classify(sorted(root.rglob("*.png")), labelset="life", options=options)
        truths = [Path(r.image).parent.name for r in results]
        hits = [r.predictions[0].label == t for r, t in zip(results, truths, strict=True)]
        assert report["n"] == 3 and report["top1"] == pytest.approx(sum(hits) / 3)
        assert report["mean_per_class_recall"] == pytest.approx(sum(hits) / 3)
        with pytest.raises(InvalidInputError, match=r"rank 1 .*e\.g\. animal, fungus, plant"):
            evaluate_folder(client, root, "life", ClassifyOptions(mode="beam", rank=1))
