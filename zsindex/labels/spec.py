"""LabelSetSpec: a parsed, position-identified label set (flat list or tree), before encoding.

A spec is column-oriented so that a million labels stay cheap: ``names[i]``, ``parents[i]``,
``prompts[i]`` … describe node ``i``. :attr:`LabelSetSpec.labels` gives the same data as a tuple of
:class:`LabelNode` (built on first use).

Order: nodes keep the order in which they were first defined (for trees every node, internal ones
included); a parent may come after its children. :meth:`LabelSetSpec.topological_order` gives a
parents-before-children view. Labels are identified by position, never by name.

Text to embed for node ``i``: its own ``prompts`` if it has any (CuPL style, used as-is), else its
``text`` (default: its name) filled into each template (:meth:`LabelSetSpec.prompt_texts_for`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, NamedTuple

from zsindex.errors import InvalidInputError
from zsindex.labels.templates import DEFAULT_TEMPLATES, fill_template

DIGEST_VERSION = "zsindex-labelset-v1"


class LabelNode(NamedTuple):
    """One label (a tree node, internal or leaf).

    Attributes:
        name: the node's own name (what results show).
        prompts: its own prompts (used instead of templates), or ``None``.
        parent: index of its parent in :attr:`LabelSetSpec.labels`, or ``None`` for a root.
        rank: its rank name (e.g. ``"genus"``), or ``None``.
        meta: extra per-node data (e.g. ``{"common_name": ...}``), or ``None``.
        text: the text templates are filled with, when it differs from ``name`` (e.g. the
            taxonomic path "Animalia Chordata … Corvus corax"), else ``None``.
    """

    name: str
    prompts: tuple[str, ...] | None = None
    parent: int | None = None
    rank: str | None = None
    meta: Mapping[str, Any] | None = None
    text: str | None = None


def tree_depths(
    parents: Sequence[int | None], on_cycle: Callable[[list[int]], Exception]
) -> list[int]:
    """Depth of every node (roots are 0), iteratively; ``on_cycle(nodes)`` builds the error.

    Parent indices must be in range (checked by the validator before calling).
    """
    depth = [-1] * len(parents)  # -1: unknown, -2: on the current walk
    if all(p is None or p < i for i, p in enumerate(parents)):
        # Parents before children (the usual case): one pass.
        for i, p in enumerate(parents):
            depth[i] = 0 if p is None else depth[p] + 1
        return depth
    for start in range(len(parents)):
        if depth[start] >= 0:
            continue
        chain: list[int] = []
        node: int | None = start
        while node is not None:
            d = depth[node]
            if d >= 0:
                break
            if d == -2:
                raise on_cycle(chain[chain.index(node) :])
            depth[node] = -2
            chain.append(node)
            node = parents[node]
        base = -1 if node is None else depth[node]
        for member in reversed(chain):
            base += 1
            depth[member] = base
    return depth


def _cycle_error(nodes: list[int]) -> Exception:
    return InvalidInputError(f"the parents form a cycle through nodes {nodes[:10]}")


@dataclass(frozen=True)
class LabelSetSpec:
    """A label set: labels (or tree nodes) in a stable order, with optional prompts and templates.

    Build one with :meth:`from_labels`, :meth:`from_prompts`, :meth:`from_parents`,
    :meth:`from_nodes`, the parsers in :mod:`zsindex.labels.formats`, or a plugin. Column tuples
    that are ``None`` mean "not set for any node".

    Attributes:
        names: each node's own name.
        parents: each node's parent index (``None`` for roots); ``None`` for a flat set.
        prompts: each node's own prompts or ``None``; ``None`` when no node has prompts.
        texts: each node's template text when it differs from its name, else ``None``.
        ranks: explicit per-node rank names; when unset a node's rank is
            ``rank_names[depth]`` (see :meth:`rank_of`).
        templates: the source's own templates, or ``None`` (see :meth:`effective_templates`).
        rank_names: rank names by depth (e.g. taxonomy CSV headers).
        source: where it came from (file name, ``plugin:NAME``, ``labels``) for messages.
        allow_duplicates: duplicate names are deliberate (``--allow-duplicates``, built-ins).
        lines: 1-based source line of each node (line formats), for error messages.
        node_meta: extra columns, name → one value per node (e.g. ``"common_name"``).
    """

    names: tuple[str, ...]
    parents: tuple[int | None, ...] | None = None
    prompts: tuple[tuple[str, ...] | None, ...] | None = None
    texts: tuple[str | None, ...] | None = None
    ranks: tuple[str | None, ...] | None = None
    templates: tuple[str, ...] | None = None
    rank_names: tuple[str, ...] = ()
    source: str = "labels"
    allow_duplicates: bool = False
    lines: Sequence[int] | None = field(default=None, compare=False)
    node_meta: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.names)
        columns: dict[str, Sequence[Any] | None] = {
            "parents": self.parents,
            "prompts": self.prompts,
            "texts": self.texts,
            "ranks": self.ranks,
            "lines": self.lines,
            **{f"node_meta[{k!r}]": v for k, v in self.node_meta.items()},
        }
        for column, values in columns.items():
            if values is not None and len(values) != n:
                raise InvalidInputError(
                    f"{self.source}: {column} has {len(values)} entries for {n} labels"
                )

    # Constructors (implemented in zsindex.labels.build) ---------------------------------------

    @classmethod
    def from_labels(cls, labels: Sequence[str], **kwargs: Any) -> LabelSetSpec:
        """A flat set; see :func:`zsindex.labels.build.spec_from_labels`."""
        from zsindex.labels.build import spec_from_labels

        return spec_from_labels(labels, **kwargs)

    @classmethod
    def from_prompts(cls, prompts: Mapping[str, Sequence[str]], **kwargs: Any) -> LabelSetSpec:
        """A flat CuPL set ``{label: [prompts]}``; see ``build.spec_from_prompts``."""
        from zsindex.labels.build import spec_from_prompts

        return spec_from_prompts(prompts, **kwargs)

    @classmethod
    def from_parents(
        cls, labels: Sequence[str], parents: Mapping[str, str | None], **kwargs: Any
    ) -> LabelSetSpec:
        """A tree from child → parent names; see :func:`~zsindex.labels.build.spec_from_parents`."""
        from zsindex.labels.build import spec_from_parents

        return spec_from_parents(labels, parents, **kwargs)

    @classmethod
    def from_nodes(cls, nodes: Sequence[LabelNode], **kwargs: Any) -> LabelSetSpec:
        """A spec from :class:`LabelNode` objects; see ``build.spec_from_nodes``."""
        from zsindex.labels.build import spec_from_nodes

        return spec_from_nodes(nodes, **kwargs)

    # Views ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.names)

    @cached_property
    def labels(self) -> tuple[LabelNode, ...]:
        """Every node as a :class:`LabelNode`, in the stable order."""
        n = len(self.names)
        parents = self.parents or (None,) * n
        prompts = self.prompts or (None,) * n
        texts = self.texts or (None,) * n
        ranks = [self.rank_of(i) for i in range(n)] if self.rank_names or self.ranks else None
        meta_keys = list(self.node_meta)
        out = []
        for i in range(n):
            meta = None
            if meta_keys:
                values = {k: self.node_meta[k][i] for k in meta_keys}
                meta = {k: v for k, v in values.items() if v is not None} or None
            out.append(
                LabelNode(
                    self.names[i],
                    prompts[i],
                    parents[i],
                    ranks[i] if ranks else None,
                    meta,
                    texts[i],
                )
            )
        return tuple(out)

    @cached_property
    def is_tree(self) -> bool:
        """Whether any node has a parent."""
        return self.parents is not None and any(p is not None for p in self.parents)

    @cached_property
    def node_depths(self) -> tuple[int, ...]:
        """Each node's depth: 0 for roots (and for every node of a flat set)."""
        if not self.is_tree or self.parents is None:
            return (0,) * len(self.names)
        return tuple(tree_depths(self.parents, _cycle_error))

    @property
    def depth(self) -> int:
        """Number of levels: 1 for a flat set, 2 for roots with children, …; 0 when empty."""
        return max(self.node_depths, default=-1) + 1

    @cached_property
    def children(self) -> tuple[tuple[int, ...], ...]:
        """``children[i]``: indices of node ``i``'s children, in the stable order."""
        kids: list[list[int]] = [[] for _ in self.names]
        if self.parents is not None:
            for i, parent in enumerate(self.parents):
                if parent is not None:
                    kids[parent].append(i)
        return tuple(tuple(k) for k in kids)

    def roots(self) -> tuple[int, ...]:
        """Indices of the nodes without a parent (every node of a flat set)."""
        if self.parents is None:
            return tuple(range(len(self.names)))
        return tuple(i for i, p in enumerate(self.parents) if p is None)

    def leaves(self) -> tuple[int, ...]:
        """Indices of the nodes without children (every node of a flat set)."""
        return tuple(i for i, kids in enumerate(self.children) if not kids)

    def topological_order(self) -> tuple[int, ...]:
        """All indices, parents before children (by depth, then stable order)."""
        depths = self.node_depths
        return tuple(sorted(range(len(self.names)), key=depths.__getitem__))

    def path(self, i: int) -> tuple[int, ...]:
        """Indices from node ``i``'s root down to ``i``."""
        out = [i]
        parents = self.parents
        while parents is not None and (p := parents[out[-1]]) is not None:
            out.append(p)
        return tuple(reversed(out))

    def rank_of(self, i: int) -> str | None:
        """Node ``i``'s rank: its explicit rank, else ``rank_names[depth]``, else ``None``."""
        if self.ranks is not None and self.ranks[i] is not None:
            return self.ranks[i]
        depth = self.node_depths[i]
        return self.rank_names[depth] if depth < len(self.rank_names) else None

    def ranks_by_depth(self) -> tuple[str, ...]:
        """Rank names by depth read off the nodes' own ranks: depth ``d`` is named while every
        node at that depth has one and the same rank (``()`` without per-node ranks)."""
        if self.ranks is None:
            return ()
        by_depth: dict[int, set[str | None]] = {}
        for d, rank in zip(self.node_depths, self.ranks, strict=True):
            by_depth.setdefault(d, set()).add(rank)
        out: list[str] = []
        for d in range(self.depth):
            values = by_depth.get(d, set())
            if len(values) != 1 or None in values:
                break
            out.extend(r for r in values if r is not None)
        return tuple(out)

    def where(self, i: int) -> str:
        """A human location of node ``i`` for messages: ``"file.txt, line 5"``, else its 1-based
        position (``"labels: label 3"``, with its path in a tree)."""
        if self.lines is not None:
            return f"{self.source}, line {self.lines[i]}"
        # 1-based, like line numbers and every other position in a message
        parents = self.parents
        if parents is None or parents[i] is None:
            return f"{self.source}: label {i + 1}"
        # Walk up defensively: this also runs on unvalidated specs (cycles, bad indices).
        chain = [i]
        node = parents[i]
        while type(node) is int and 0 <= node < len(parents) and node not in chain[:64]:
            chain.append(node)
            if len(chain) > 64:
                break
            node = parents[node]
        path = " > ".join(str(self.names[j]) for j in reversed(chain))
        return f"{self.source}: label {i + 1} ({path})"

    # Prompts ----------------------------------------------------------------------------------

    def text_of(self, i: int) -> str:
        """The text templates are filled with for node ``i`` (its ``text``, else its name)."""
        if self.texts is not None and self.texts[i] is not None:
            return self.texts[i]  # type: ignore[return-value]  # texts[i] is set wherever texts is not None
        return self.names[i]

    def effective_templates(self, override: Sequence[str] | None = None) -> tuple[str, ...]:
        """Templates to use: ``override`` (the user's), else the spec's, else the default."""
        if override:
            return tuple(override)
        return self.templates or DEFAULT_TEMPLATES

    def prompt_texts_for(self, i: int, templates: Sequence[str] | None = None) -> tuple[str, ...]:
        """The prompts embedded (and averaged) for node ``i``.

        Args:
            i: node index.
            templates: overrides the spec's templates (see :meth:`effective_templates`).

        Returns:
            The node's own prompts if it has any, else its text filled into each template.
        """
        if self.prompts is not None and self.prompts[i]:
            return self.prompts[i]  # type: ignore[return-value]  # prompts[i] is checked non-None just above
        text = self.text_of(i)
        return tuple(fill_template(t, text) for t in self.effective_templates(templates))

    def with_templates(self, templates: Sequence[str] | None) -> LabelSetSpec:
        """A copy whose templates are ``templates`` (``None``: keep the spec's own)."""
        if templates is None:
            return self
        return replace(self, templates=tuple(templates))

    # Identity ---------------------------------------------------------------------------------

    def digest(self, model_fingerprint: str) -> str:
        """SHA-256 (hex) of everything that defines this set's embeddings and tree, with the model.

        Covers names, texts, prompts, parents, ranks, rank names and the effective templates
        (``None`` templates count as :data:`~zsindex.labels.templates.DEFAULT_TEMPLATES`), plus
        ``model_fingerprint``. Not covered: ``source``, ``lines``, ``node_meta``,
        ``allow_duplicates``. Deterministic across processes and platforms.
        """
        h = hashlib.sha256()

        def feed(tag: str, value: object) -> None:
            h.update(tag.encode())
            h.update(b"=")
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            h.update(text.encode("utf-8", "surrogatepass"))
            h.update(b"\n")

        n = len(self.names)
        feed("version", DIGEST_VERSION)
        feed("model", model_fingerprint)
        feed("names", self.names)
        feed("texts", [self.text_of(i) for i in range(n)] if self.texts is not None else None)
        feed("prompts", self.prompts)
        feed("parents", self.parents if self.is_tree else None)
        feed("ranks", [self.rank_of(i) for i in range(n)] if self.ranks is not None else None)
        feed("rank_names", self.rank_names)
        feed("templates", self.effective_templates())
        return h.hexdigest()
