"""Building :class:`LabelSetSpec` objects from Python structures.

The ``spec_from_*`` constructors only arrange data (raising for references they cannot resolve);
:func:`build_labelset` is the entry point for untrusted structures (``Client.add_labelset``, the
HTTP API, plugins): it checks types, builds, and runs
:func:`~zsindex.labels.validate.validate_spec`.

Trees from a ``parents`` mapping (child name → parent name): every child and every parent must
be one of the labels, internal nodes included (``labels=["circle", "red circle"],
parents={"red circle": "circle"}``). A name that is not a label is an error naming it — most
likely a typo, which would otherwise become a new root silently — as is a parent name shared by
several labels (ambiguous). Cycles are reported by the validator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zsindex.errors import InvalidInputError
from zsindex.labels._text import short
from zsindex.labels.spec import LabelNode, LabelSetSpec
from zsindex.labels.templates import resolve_templates, validate_templates
from zsindex.labels.validate import Limits, check_count, validate_spec


def _prompt_tuple(prompts: Sequence[str] | None) -> tuple[str, ...] | None:
    # An empty prompt list means "use the templates".
    return tuple(prompts) if prompts else None


def spec_from_labels(
    labels: Sequence[str],
    *,
    templates: Sequence[str] | None = None,
    source: str = "labels",
    allow_duplicates: bool = False,
    lines: Sequence[int] | None = None,
) -> LabelSetSpec:
    """A flat label set, in the given order (not validated)."""
    return LabelSetSpec(
        names=tuple(labels),
        templates=tuple(templates) if templates else None,
        source=source,
        allow_duplicates=allow_duplicates,
        lines=lines,
    )


def spec_from_prompts(
    prompts: Mapping[str, Sequence[str]],
    *,
    templates: Sequence[str] | None = None,
    source: str = "labels",
    allow_duplicates: bool = False,
) -> LabelSetSpec:
    """A flat CuPL set ``{label: [prompts]}``: each label embedded from its own prompts.

    A label with an empty prompt list uses the templates (not validated).
    """
    return LabelSetSpec(
        names=tuple(prompts),
        prompts=tuple(_prompt_tuple(p) for p in prompts.values()),
        templates=tuple(templates) if templates else None,
        source=source,
        allow_duplicates=allow_duplicates,
    )


def spec_from_parents(
    labels: Sequence[str],
    parents: Mapping[str, str | None],
    *,
    prompts: Mapping[str, Sequence[str]] | None = None,
    templates: Sequence[str] | None = None,
    rank_names: Sequence[str] = (),
    source: str = "labels",
    allow_duplicates: bool = False,
) -> LabelSetSpec:
    """A tree from labels and a child → parent mapping (see the module docstring).

    Args:
        labels: node names, in order; duplicates get the same parent and prompts.
        parents: child name → parent name (``None``: a root), both labels. Unmentioned labels
            are roots.
        prompts: optional per-name prompts.
        templates: the set's own templates.
        rank_names: rank names by depth.
        source: name used in messages.
        allow_duplicates: duplicate names are deliberate.

    Raises:
        InvalidInputError: a child or parent that is not a label, or an ambiguous parent name.
    """
    names = list(labels)
    index: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        index.setdefault(name, []).append(i)
    for child, parent in parents.items():
        if child not in index:
            raise InvalidInputError(
                f"{source}: parents: {short(child)} is not a label: add it to the labels "
                "or remove it from parents"
            )
        if parent is not None and parent not in index:
            raise InvalidInputError(
                f"{source}: parents[{short(child)}]: parent {short(parent)} is not a label: "
                "fix the name or add it to the labels"
            )
    parent_of: list[int | None] = [None] * len(names)
    for child, parent in parents.items():
        if parent is None:
            continue
        targets = index[parent]
        if len(targets) > 1:
            raise InvalidInputError(
                f"{source}: parents[{short(child)}]: parent {short(parent)} is ambiguous "
                f"({len(targets)} labels have that name): rename them"
            )
        for i in index[child]:
            parent_of[i] = targets[0]
    node_prompts: tuple[tuple[str, ...] | None, ...] | None = None
    if prompts:
        for name in prompts:
            if name not in index:
                raise InvalidInputError(f"{source}: prompts: {short(name)} is not a label")
        node_prompts = tuple(_prompt_tuple(prompts.get(name)) for name in names)
    return LabelSetSpec(
        names=tuple(names),
        parents=tuple(parent_of),
        prompts=node_prompts,
        templates=tuple(templates) if templates else None,
        rank_names=tuple(rank_names),
        source=source,
        allow_duplicates=allow_duplicates,
    )


def spec_from_nodes(
    nodes: Sequence[LabelNode],
    *,
    templates: Sequence[str] | None = None,
    rank_names: Sequence[str] = (),
    source: str = "labels",
    allow_duplicates: bool = False,
    lines: Sequence[int] | None = None,
) -> LabelSetSpec:
    """A spec from :class:`LabelNode` objects (parents are indices into ``nodes``)."""
    meta_keys: dict[str, None] = {}
    for node in nodes:
        if node.meta:
            meta_keys.update(dict.fromkeys(node.meta))
    has = {
        f: any(getattr(node, f) is not None for node in nodes)
        for f in ("parent", "prompts", "rank", "text")
    }
    return LabelSetSpec(
        names=tuple(node.name for node in nodes),
        parents=tuple(node.parent for node in nodes) if has["parent"] else None,
        prompts=tuple(_prompt_tuple(node.prompts) for node in nodes) if has["prompts"] else None,
        texts=tuple(node.text for node in nodes) if has["text"] else None,
        ranks=tuple(node.rank for node in nodes) if has["rank"] else None,
        templates=tuple(templates) if templates else None,
        rank_names=tuple(rank_names),
        source=source,
        allow_duplicates=allow_duplicates,
        lines=lines,
        node_meta={k: tuple((node.meta or {}).get(k) for node in nodes) for k in meta_keys},
    )


# Untrusted structures ---------------------------------------------------------------------------


def _type(value: object) -> str:
    return type(value).__name__


def check_str_list(value: object, field: str, limits: Limits | None = None) -> list[str]:
    """Check that ``value`` is a list/tuple of strings (count first, then types)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidInputError(f"{field} must be a list of strings, not {_type(value)}")
    if limits is not None:
        check_count(len(value), field, limits)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidInputError(f"{field}: item {i + 1} must be a string, not {_type(item)}")
    return list(value)


def _check_str_mapping(value: object, field: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{field} must be an object (mapping), not {_type(value)}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidInputError(f"{field}: key {key!r} must be a string, not {_type(key)}")
    return value


def _check_prompts_mapping(value: object, field: str) -> dict[str, list[str]]:
    mapping = _check_str_mapping(value, field)
    out: dict[str, list[str]] = {}
    for key, prompts in mapping.items():
        if prompts is None:
            out[key] = []
            continue
        out[key] = check_str_list(prompts, f"{field}[{short(key)}]")
    return out


def check_templates_value(value: object, field: str = "templates") -> tuple[str, ...] | None:
    """``None``, a template set name, or a list of templates → validated templates or ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        return resolve_templates(value, allow_files=False)
    return validate_templates(value, field)


def build_labelset(
    labels: object,
    *,
    parents: object = None,
    prompts: object = None,
    templates: object = None,
    rank_names: object = None,
    source: str = "labels",
    allow_duplicates: bool = False,
    limits: Limits | None = None,
) -> LabelSetSpec:
    """Build and validate a label set from untrusted Python/JSON values.

    This is what ``Client.add_labelset(name, labels, templates=..., parents=...)`` and
    ``POST /v1/labelsets`` use.

    Args:
        labels: a list of strings, or a ``{label: [prompts]}`` mapping (CuPL).
        parents: optional child → parent name mapping (makes a tree; see the module docstring).
        prompts: optional ``{label: [prompts]}`` for some labels of a list.
        templates: ``None``, a list of templates, or a template set name (never a path).
        rank_names: optional rank names by depth.
        source: name used in error messages (e.g. ``"labels"`` or a request field).
        allow_duplicates: accept duplicate names (labels are identified by position).
        limits: size limits (default :data:`~zsindex.labels.validate.DEFAULT_LIMITS`).

    Returns:
        A validated spec.

    Raises:
        InvalidInputError: wrong types, or any validation failure (one line naming the field).
    """

    def field(name: str) -> str:
        return name if source == "labels" else f"{source}: {name}"

    limits = limits or Limits()
    if isinstance(labels, str):
        raise InvalidInputError(
            f"{field('labels')} must be a list of strings, not a string: split 'a,b,c' into a list"
        )
    per_label: dict[str, list[str]] = {}
    if isinstance(labels, Mapping):
        check_count(len(labels), source, limits)
        per_label = _check_prompts_mapping(labels, field("labels"))
        names = list(per_label)
    else:
        names = check_str_list(labels, field("labels"), limits)
    if prompts is not None:
        per_label.update(_check_prompts_mapping(prompts, field("prompts")))
    checked_templates = check_templates_value(templates, field("templates"))
    ranks: tuple[str, ...] = ()
    if rank_names is not None:
        ranks = tuple(check_str_list(rank_names, field("rank_names")))
    if parents is not None:
        mapping = _check_str_mapping(parents, field("parents"))
        for child, parent in mapping.items():
            if parent is not None and not isinstance(parent, str):
                raise InvalidInputError(
                    f"{field('parents')}[{short(child)}] must be a string or null, "
                    f"not {_type(parent)}"
                )
        spec = spec_from_parents(
            names,
            mapping,
            prompts=per_label or None,
            templates=checked_templates,
            rank_names=ranks,
            source=source,
            allow_duplicates=allow_duplicates,
        )
    else:
        known = set(names)
        unknown = [name for name in per_label if name not in known]
        if unknown:
            raise InvalidInputError(f"{field('prompts')}: {short(unknown[0])} is not a label")
        spec = LabelSetSpec(
            names=tuple(names),
            prompts=tuple(_prompt_tuple(per_label.get(n)) for n in names) if per_label else None,
            templates=checked_templates,
            rank_names=ranks,
            source=source,
            allow_duplicates=allow_duplicates,
        )
    return validate_spec(spec, limits=limits)
