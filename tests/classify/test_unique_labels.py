"""How predictions name nodes whose names repeat (issue 20): a label finds its node again."""

from __future__ import annotations

import numpy as np
import pytest

from zsindex.classify.tree import Tree, bfs_order, find_node, path_of, unique_labels

CASES = [
    # (names, parents, labels)
    (["circle", "square", "red", "red", "blue"], [-1, -1, 0, 1, 0],
     ["circle", "square", "circle/red", "square/red", "blue"]),
    (["a", "x", "b", "x", "x"], [-1, 0, -1, 2, 3], ["a", "a/x", "b", "b/x", "x/x"]),
    # A root whose name repeats below keeps its name: a path is never shorter than itself.
    (["red", "circle", "red"], [-1, -1, 1], ["red", "circle", "circle/red"]),
    # Same-named siblings share a path: they get the full path, the best there is.
    (["r", "a", "a", "x", "x"], [-1, 0, 0, 1, 2], ["r", "r/a", "r/a", "r/a/x", "r/a/x"]),
    (["p", "q"], [-1, -1], ["p", "q"]),
]  # fmt: skip


@pytest.mark.parametrize(("names", "parents", "labels"), CASES)
def test_unique_labels(names: list[str], parents: list[int], labels: list[str]) -> None:
    assert unique_labels(names, parents) == labels


@pytest.mark.parametrize(("names", "parents", "labels"), CASES[:2])
def test_a_label_finds_its_node(names: list[str], parents: list[int], labels: list[str]) -> None:
    order = bfs_order(np.array(parents))
    row = np.empty(len(order), dtype=np.int64)
    row[order] = np.arange(len(order))
    bfs_parents = np.array([row[parents[o]] if parents[o] >= 0 else -1 for o in order])
    tree = Tree.from_bfs_parents(bfs_parents)
    bfs_names = [names[o] for o in order]
    for original, label in enumerate(labels):
        assert find_node(bfs_names, tree, label) == row[original]


def test_path_of() -> None:
    assert path_of([-1, 0, 1, -1], 2) == [0, 1, 2]
    assert path_of([-1, 0, 1, -1], 3) == [3]
