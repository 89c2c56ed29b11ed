"""JSON and YAML label documents.

A document is one of:

1. A flat list of strings: ``["dog", "cat"]``.
2. A CuPL mapping, every value a list of strings: ``{"dog": ["a photo of a dog.", ...]}`` — each
   label is embedded from its own prompts (an empty list: the templates are used).
3. A nested tree — a mapping in which some value is not a list (a mapping or null), or a list of
   node objects. Mapping keys are node names; a value is a mapping (the children), a list (child
   items) or null (a leaf). A list item is a string (a leaf) or a node object
   ``{"name": str, "children"?: list|mapping, "prompts"?: [str], "text"?: str, "rank"?: str}``.
   Example: ``{"Aves": {"Corvus": ["corax", "cornix"], "Pica": null}}``. Nodes are numbered in
   document order (pre-order: each node before its children).
4. An envelope: ``{"labels": <1, 2 or 3>, "templates"?: [str] | "set-name",
   "parents"?: {child: parent}, "prompts"?: {label: [str]}, "rank_names"?: [str]}`` — the same
   fields as ``POST /v1/labelsets``. A mapping is an envelope when it has a ``labels`` key and
   only those keys.

So a two-level tree whose leaves are given as lists must write the leaves as ``{"name": null}``
or use an envelope with ``parents``; a mapping of only lists is always CuPL. Duplicate keys in a
mapping are an error (JSON and YAML parsers would otherwise keep the last one silently).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from zsindex.errors import InvalidInputError
from zsindex.labels._text import short
from zsindex.labels.build import build_labelset, check_str_list, check_templates_value
from zsindex.labels.spec import LabelSetSpec
from zsindex.labels.validate import Limits, check_count, validate_spec

ENVELOPE_KEYS = frozenset({"labels", "templates", "parents", "prompts", "rank_names"})
NODE_KEYS = frozenset({"name", "children", "prompts", "text", "rank"})
_ITEM = object()  # marks a list item (string or node object) on the walk stack


class _DuplicateKey(Exception):
    pass


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def load_json(content: str, source: str) -> object:
    """Parse JSON, rejecting duplicate keys; errors name the line. Blank content is ``None``."""
    if not content.removeprefix("\ufeff").strip():
        return None  # reported as an empty document, like an empty YAML file
    try:
        return json.loads(content.removeprefix("\ufeff"), object_pairs_hook=_pairs_hook)
    except _DuplicateKey as exc:
        raise InvalidInputError(f"{source}: duplicate key {short(str(exc))} in an object") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{source}, line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidInputError(f"{source}: JSON nested too deeply") from None


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]  # CSafeLoader or SafeLoader, chosen at run time
    """Safe YAML loader that rejects duplicate mapping keys."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in keys:
                line = key_node.start_mark.line + 1
                raise InvalidInputError(f"line {line}: duplicate key {short(str(key))}")
            if isinstance(key, str | int | float | bool):
                keys.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(content: str, source: str) -> object:
    """Parse YAML safely (no object construction), rejecting duplicate keys."""
    try:
        return yaml.load(content.removeprefix("\ufeff"), Loader=_Loader)  # a safe loader
    except InvalidInputError as exc:
        raise InvalidInputError(f"{source}, {exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}, line {mark.line + 1}" if mark is not None else source
        raise InvalidInputError(f"{where}: not valid YAML ({exc.problem})") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise InvalidInputError(f"{source}: not valid YAML ({exc})") from None


def _is_cupl(data: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in data.values())


def _is_flat(items: list[Any]) -> bool:
    return all(isinstance(item, str) for item in items)


def spec_from_document(
    data: object,
    source: str,
    *,
    allow_duplicates: bool = False,
    limits: Limits | None = None,
    yaml_hints: bool = False,
) -> LabelSetSpec:
    """Turn a parsed JSON/YAML document into a validated spec (see the module docstring).

    Raises:
        InvalidInputError: an unknown shape or wrong types, naming the field.
    """
    limits = limits or Limits()
    if data is None:  # an empty YAML file, or a JSON/YAML null
        raise InvalidInputError(
            f'{source}: the document is empty: write a list of labels, e.g. ["dog", "cat"]'
        )
    common: dict[str, Any] = {}
    if isinstance(data, Mapping) and "labels" in data and set(data) <= ENVELOPE_KEYS:
        common = {
            k: data[k] for k in ("templates", "parents", "prompts", "rank_names") if k in data
        }
        data = data["labels"]
    if isinstance(data, Mapping) and _is_cupl(data):
        return build_labelset(
            data, source=source, allow_duplicates=allow_duplicates, limits=limits, **common
        )
    if isinstance(data, list) and _is_flat(data):
        return build_labelset(
            data, source=source, allow_duplicates=allow_duplicates, limits=limits, **common
        )
    if not isinstance(data, list | Mapping):
        raise InvalidInputError(
            f"{source}: expected a list of labels or an object, not {type(data).__name__}"
        )
    if "parents" in common or "prompts" in common:
        raise InvalidInputError(
            f"{source}: 'parents' and 'prompts' go with a flat list of labels, not a nested tree"
        )
    columns = _nested_tree(data, source, limits, yaml_hints)
    return _finish_tree(columns, source, allow_duplicates, limits, common)


def _finish_tree(
    columns: dict[str, list[Any]],
    source: str,
    allow_duplicates: bool,
    limits: Limits,
    common: dict[str, Any],
) -> LabelSetSpec:
    rank_names = common.get("rank_names")
    spec = LabelSetSpec(
        names=tuple(columns["names"]),
        parents=tuple(columns["parents"]),
        prompts=tuple(columns["prompts"]) if any(columns["prompts"]) else None,
        texts=tuple(columns["texts"]) if any(t is not None for t in columns["texts"]) else None,
        ranks=tuple(columns["ranks"]) if any(r is not None for r in columns["ranks"]) else None,
        templates=check_templates_value(common.get("templates")),
        rank_names=tuple(check_str_list(rank_names, "rank_names")) if rank_names else (),
        source=source,
        allow_duplicates=allow_duplicates,
    )
    return validate_spec(spec, limits=limits)


def _nested_tree(
    data: list[Any] | Mapping[Any, Any], source: str, limits: Limits, yaml_hints: bool
) -> dict[str, list[Any]]:
    names: list[str] = []
    parents: list[int | None] = []
    prompts: list[tuple[str, ...] | None] = []
    texts: list[str | None] = []
    ranks: list[str | None] = []

    def where(parent: int | None, item: str) -> str:
        if parent is None:
            return f"{source}: {item}"
        chain = []
        node: int | None = parent
        while node is not None:
            chain.append(names[node])
            node = parents[node]
        return f"{source}: under {' > '.join(reversed(chain))!r}: {item}"

    def entries(value: object, parent: int | None) -> list[tuple[object, object, int | None, str]]:
        # -> (name-or-item, children, parent, position) in document order
        if value is None:
            return []
        if isinstance(value, Mapping):
            return [(k, v, parent, f"key {short(str(k))}") for k, v in value.items()]
        if isinstance(value, list):
            # 1-based, as editors and every other message count
            return [(item, _ITEM, parent, f"item {i + 1}") for i, item in enumerate(value)]
        raise InvalidInputError(
            f"{where(parent, 'children')} must be a mapping, a list or null, "
            f"not {type(value).__name__}"
        )

    stack = list(reversed(entries(data, None)))
    while stack:
        key, children, parent, position = stack.pop()
        node_prompts: object = None
        text: object = None
        rank: object = None
        if children is _ITEM:
            if isinstance(key, Mapping):
                unknown = set(key) - NODE_KEYS
                if unknown or "name" not in key:
                    problem = (
                        f"unknown keys {sorted(map(str, unknown))}" if unknown else "no 'name'"
                    )
                    raise InvalidInputError(
                        f"{where(parent, position)}: node object has {problem}: use name, "
                        "children, prompts, text, rank"
                    )
                children = key.get("children")
                node_prompts, text, rank = key.get("prompts"), key.get("text"), key.get("rank")
                key = key["name"]
            else:
                children = None
        if not isinstance(key, str):
            raise InvalidInputError(
                f"{where(parent, position)}: label must be a string, not {type(key).__name__}"
                + (" (quote it in YAML)" if yaml_hints else "")
            )
        if node_prompts is not None and (
            not isinstance(node_prompts, list) or not all(isinstance(p, str) for p in node_prompts)
        ):
            raise InvalidInputError(f"{where(parent, position)}: prompts must be a list of strings")
        for field, value in (("text", text), ("rank", rank)):
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{where(parent, position)}: {field} must be a string")
        index = len(names)
        check_count(index + 1, source, limits)
        names.append(key)
        parents.append(parent)
        prompts.append(tuple(node_prompts) if node_prompts else None)
        texts.append(text)  # type: ignore[arg-type]  # None only where the column is absent
        ranks.append(rank)  # type: ignore[arg-type]  # None only where the column is absent
        stack.extend(reversed(entries(children, index)))
    return {"names": names, "parents": parents, "prompts": prompts, "texts": texts, "ranks": ranks}
