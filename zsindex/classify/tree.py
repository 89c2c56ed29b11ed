"""Label trees in breadth-first storage order, built once per loaded version.

Nodes are renumbered level by level, children grouped under their parents in the parents' order
(BFS order). Then every node's children are one contiguous range, and so are its descendants
at any deeper level: a subtree restriction is a handful of ranges, a beam step is a few slices
of the label matrix, and rank marginals are segment sums (``np.add.reduceat``). Nothing loops
in Python per label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from zsindex.errors import InvalidInputError, NotFoundError


def node_depths(parents: np.ndarray) -> np.ndarray:
    """Depth of each node (roots at 1) for parents given as positions (-1 = root)."""
    n = len(parents)
    depths = np.ones(n, dtype=np.int32)
    current = parents.copy()
    active = current >= 0
    steps = 0
    while active.any():
        steps += 1
        if steps > n:
            raise InvalidInputError("the label tree has a cycle")
        depths[active] += 1
        current[active] = parents[current[active]]
        active = current >= 0
    return depths


def bfs_order(parents: np.ndarray) -> np.ndarray:
    """Permutation ``perm`` (new index → original position) putting nodes in BFS order."""
    parents = np.asarray(parents, dtype=np.int64)
    depths = node_depths(parents)
    rank = np.full(len(parents), -1, dtype=np.int64)
    pieces: list[np.ndarray] = []
    offset = 0
    for depth in range(1, int(depths.max(initial=0)) + 1):
        nodes = np.flatnonzero(depths == depth)
        if depth > 1:
            nodes = nodes[np.lexsort((nodes, rank[parents[nodes]]))]
        rank[nodes] = offset + np.arange(len(nodes))
        offset += len(nodes)
        pieces.append(nodes)
    return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class Tree:
    """A forest whose node ids are in BFS order (see :func:`bfs_order`).

    Attributes:
        parents: parent id per node, -1 for roots (nondecreasing within each level).
        depths: depth per node, roots at 1 (nondecreasing overall).
        rank_names: name of each depth (index = depth - 1); may be shorter than the depth.
    """

    parents: np.ndarray
    depths: np.ndarray
    rank_names: tuple[str, ...] = ()

    @classmethod
    def from_bfs_parents(cls, parents: np.ndarray, rank_names: tuple[str, ...] = ()) -> Tree:
        parents = np.asarray(parents, dtype=np.int64)
        return cls(parents=parents, depths=node_depths(parents), rank_names=rank_names)

    @property
    def size(self) -> int:
        return len(self.parents)

    @cached_property
    def max_depth(self) -> int:
        return int(self.depths.max(initial=0))

    @cached_property
    def level_starts(self) -> np.ndarray:
        """``level_starts[d-1]:level_starts[d]`` are the ids at depth d."""
        return np.searchsorted(self.depths, np.arange(1, self.max_depth + 2)).astype(np.int64)

    def level(self, depth: int) -> range:
        return range(int(self.level_starts[depth - 1]), int(self.level_starts[depth]))

    @cached_property
    def child_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) per node: its children are ids ``start:end``."""
        starts = np.zeros(self.size, dtype=np.int64)
        ends = np.zeros(self.size, dtype=np.int64)
        for depth in range(1, self.max_depth):
            parents_lvl = self.level(depth)
            child_lvl = self.level(depth + 1)
            child_parents = self.parents[child_lvl.start : child_lvl.stop]
            ids = np.arange(parents_lvl.start, parents_lvl.stop)
            starts[ids] = child_lvl.start + np.searchsorted(child_parents, ids, side="left")
            ends[ids] = child_lvl.start + np.searchsorted(child_parents, ids, side="right")
        return starts, ends

    @cached_property
    def is_leaf(self) -> np.ndarray:
        starts, ends = self.child_ranges
        return np.asarray(ends == starts)

    @cached_property
    def leaves(self) -> np.ndarray:
        return np.flatnonzero(self.is_leaf)

    @cached_property
    def ancestors(self) -> np.ndarray:
        """``[N, max_depth]``: the ancestor of each node at each depth (itself at its own
        depth), -1 below it."""
        table = np.full((self.size, max(self.max_depth, 1)), -1, dtype=np.int64)
        current = np.arange(self.size, dtype=np.int64)
        depth = self.depths.astype(np.int64).copy()
        alive = np.ones(self.size, dtype=bool)
        while alive.any():
            idx = np.flatnonzero(alive)
            table[idx, depth[idx] - 1] = current[idx]
            current[idx] = self.parents[current[idx]]
            depth[idx] -= 1
            alive[idx] = current[idx] >= 0
        return table

    def descendant_range(self, node: int, depth: int) -> range:
        """The ids at ``depth`` (≥ the node's depth) that lie in ``node``'s subtree."""
        lo, hi = node, node + 1
        starts, ends = self.child_ranges
        for _ in range(int(self.depths[node]), depth):
            if hi <= lo:
                return range(0)
            lo, hi = int(starts[lo]), int(ends[hi - 1])
        return range(lo, max(lo, hi))

    def resolve_rank(self, rank: str | int | None) -> int:
        """A named rank or a 1-based depth → depth; ``None`` → the deepest level."""
        if rank is None:
            return self.max_depth
        if isinstance(rank, int) or (isinstance(rank, str) and rank.strip().isdigit()):
            depth = int(rank)
            if not 1 <= depth <= self.max_depth:
                raise InvalidInputError(
                    f"rank {rank} is out of range: this tree has depths 1..{self.max_depth}"
                )
            return depth
        lowered = [r.lower() for r in self.rank_names]
        if rank.lower() in lowered:
            depth = lowered.index(rank.lower()) + 1
            if depth <= self.max_depth:
                return depth
        known = ", ".join(self.rank_names[: self.max_depth]) or "none (use a depth number)"
        raise InvalidInputError(f"unknown rank {rank!r}: this tree's ranks are {known}")

    def rank_name(self, depth: int) -> str:
        return self.rank_names[depth - 1] if 0 < depth <= len(self.rank_names) else str(depth)

    def path_to(self, node: int) -> list[int]:
        """Ancestors of ``node`` from depth 1 down to the node itself."""
        return [int(x) for x in self.ancestors[node, : self.depths[node]]]


def find_node(names: list[str], tree: Tree, query: str) -> int:
    """Resolve ``--within NODE``: a node name, or a path ``a/b/c`` when a name is ambiguous.

    Raises:
        NotFoundError: no node has that name.
        InvalidInputError: the name is ambiguous (lists paths to choose from).
    """
    parts = [p for p in query.split("/") if p] or [query]
    candidates = [i for i, name in enumerate(names) if name == parts[-1]]
    if len(parts) > 1:
        candidates = [
            i for i in candidates if [names[a] for a in tree.path_to(i)][-len(parts) :] == parts
        ]
    if not candidates:
        raise NotFoundError(f"no node named {query!r} in this label set")
    if len(candidates) > 1:
        paths = ["/".join(names[a] for a in tree.path_to(i)) for i in candidates[:5]]
        raise InvalidInputError(
            f"node name {query!r} is ambiguous; give its path, e.g. {' or '.join(paths)}"
        )
    return candidates[0]


def path_of(parents: Sequence[int], node: int) -> list[int]:
    """``node``'s path from its root down to itself, for parents in any order (-1 = root)."""
    path = [node]
    while parents[path[-1]] >= 0 and len(path) <= len(parents):  # a cycle cannot loop forever
        path.append(int(parents[path[-1]]))
    return path[::-1]


def unique_labels(names: Sequence[str], parents: Sequence[int]) -> list[str]:
    """How predictions name each node: its own name where no other node has that name, else
    the shortest ``a/b`` path suffix no other node's path ends with (the full path when there
    is none), which :func:`find_node` and ``within`` resolve back to the node."""
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_name.setdefault(name, []).append(i)
    labels = list(names)
    repeated = [group for group in by_name.values() if len(group) > 1]
    if not repeated:
        return labels
    for group in repeated:
        spelled = {i: tuple(names[a] for a in path_of(parents, i)) for i in group}
        todo = list(group)
        length = 1
        while todo:
            # Only same-named nodes can share a suffix; a shorter path never ends with a longer one.
            seen = Counter(spelled[j][-length:] for j in group)
            left = []
            for i in todo:
                if seen[spelled[i][-length:]] == 1 or length >= len(spelled[i]):
                    labels[i] = "/".join(spelled[i][-length:])
                else:
                    left.append(i)
            todo, length = left, length + 1
    return labels
