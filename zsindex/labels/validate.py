"""Validation of label sets and label-set names, before anything is written.

Every failure is one :class:`~zsindex.errors.InvalidInputError` line naming the file and line
(files) or the field (API input), the reason, and what to do.

Rules (defaults in :class:`Limits`):

- A set has at least one label and at most ``max_labels`` (2,000,000) nodes.
- A label (and a prompt) is a string, not blank, without control characters (C0/C1, DEL,
  U+2028/U+2029, lone surrogates) and at most ``max_label_length`` (1,000) characters: a
  10,000-character label is a clean error.
- Duplicates: two labels under the same parent (or two flat labels) whose keys are equal — key =
  Unicode NFC, case-folded, whitespace collapsed — are an error unless duplicates are allowed
  (``--allow-duplicates``, built-in sets); labels are identified by position, never by name.
- Trees: parents are indices in range; no cycles; no node name contains ``/``, which separates
  the parts of a ``--within a/b`` path (flat sets may use it: ``--within`` never applies); a
  tree with per-node ranks but no rank names is named by depth from them
  (:meth:`LabelSetSpec.ranks_by_depth`).
- Templates: see :mod:`zsindex.labels.templates`.
- Label-set names: ``[a-z0-9][a-z0-9._-]{0,63}`` without ``..`` (so never a path).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace

from zsindex.errors import InvalidInputError
from zsindex.labels._text import (
    BAD_CHARS_BUT_NUL_RE,
    BLANK_ITEM_RE,
    bad_char,
    label_keys,
    short,
)
from zsindex.labels.spec import LabelSetSpec, tree_depths
from zsindex.labels.templates import MAX_TEMPLATES, validate_templates


@dataclass(frozen=True)
class Limits:
    """Size limits for one label set.

    Attributes:
        max_labels: most nodes (internal tree nodes included).
        max_label_length: longest label, prompt or node text, in characters.
        max_prompts_per_label: most prompts one label may carry.
        max_templates: most templates.
    """

    max_labels: int = 2_000_000
    max_label_length: int = 1000
    max_prompts_per_label: int = 1000
    max_templates: int = MAX_TEMPLATES


DEFAULT_LIMITS = Limits()

LABELSET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def validate_labelset_name(name: object) -> str:
    """Return ``name`` if it is a valid label-set name, else raise.

    Valid: 1–64 characters of ``a-z 0-9 . _ -``, starting with a letter or digit, with no
    ``..``; so a name is never a path (no ``/``, no ``..``).

    Raises:
        InvalidInputError: naming the problem and the rule.
    """
    rule = "use 1-64 characters a-z, 0-9, '.', '_', '-', starting with a letter or digit"
    if not isinstance(name, str):
        raise InvalidInputError(f"label set name must be a string, not {type(name).__name__}")
    if not LABELSET_NAME_RE.fullmatch(name) or ".." in name:
        hint = " (lowercase only)" if LABELSET_NAME_RE.fullmatch(name.lower()) else ""
        raise InvalidInputError(f"invalid label set name {short(name)}: {rule}{hint}")
    return name


def check_count(count: int, source: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise if ``count`` labels exceed ``limits.max_labels`` (checked before any parsing work)."""
    if count > limits.max_labels:
        raise InvalidInputError(
            f"{source}: {count:,} labels is more than the limit of {limits.max_labels:,}: "
            "split the set or raise the limit"
        )


def _ref(spec: LabelSetSpec, i: int) -> str:
    if spec.lines is not None:
        return f"line {spec.lines[i]}"
    return spec.where(i).removeprefix(f"{spec.source}: ")


def _check_text(spec: LabelSetSpec, i: int, value: object, what: str, limits: Limits) -> None:
    where = spec.where(i)
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: {what} must be a string, not {type(value).__name__}")
    if not value or value.isspace():
        raise InvalidInputError(f"{where}: {what} is blank: remove the line or give a {what}")
    if len(value) > limits.max_label_length:
        raise InvalidInputError(
            f"{where}: {what} is {len(value):,} characters long (limit "
            f"{limits.max_label_length:,}): shorten it"
        )
    problem = bad_char(value)
    if problem:
        raise InvalidInputError(f"{where}: {what} {short(value)} contains a {problem}: remove it")


def _check_names(spec: LabelSetSpec, limits: Limits) -> None:
    names = spec.names
    # Fast path over one NUL-joined string (NUL is itself forbidden, so it cannot hide a problem);
    # the per-name scan runs only to name the offending label.
    ok = all(type(s) is str for s in names)
    if ok:
        joined = "\x00".join(names)
        ok = (
            joined.count("\x00") == len(names) - 1
            and max(map(len, names)) <= limits.max_label_length
            and BAD_CHARS_BUT_NUL_RE.search(joined) is None
            and BLANK_ITEM_RE.search(f"\x00{joined}\x00") is None
        )
    if not ok:
        for i, name in enumerate(names):
            _check_text(spec, i, name, "label", limits)


def _check_tree_names(spec: LabelSetSpec) -> None:
    # One scan of the joined names; the loop runs only to name the first offender.
    if not spec.is_tree or "/" not in "\x00".join(spec.names):
        return
    i = next(j for j, name in enumerate(spec.names) if "/" in name)
    raise InvalidInputError(
        f"{spec.where(i)}: tree node name {short(spec.names[i])} contains '/', which separates "
        "the parts of a --within path: rename it (e.g. 'a or b'); only flat label sets may "
        "use '/'"
    )


def _check_prompts(spec: LabelSetSpec, limits: Limits) -> None:
    for column, what in ((spec.prompts, "prompt"), (spec.texts, "text")):
        if column is None:
            continue
        for i, value in enumerate(column):
            if value is None:
                continue
            if what == "text":
                _check_text(spec, i, value, what, limits)
                continue
            if isinstance(value, str) or not isinstance(value, tuple | list):
                raise InvalidInputError(
                    f"{spec.where(i)}: prompts must be a list of strings, not "
                    f"{type(value).__name__}"
                )
            if len(value) > limits.max_prompts_per_label:
                raise InvalidInputError(
                    f"{spec.where(i)}: {len(value)} prompts (limit "
                    f"{limits.max_prompts_per_label}): use fewer prompts"
                )
            for prompt in value:
                _check_text(spec, i, prompt, what, limits)
    if spec.ranks is not None:
        for i, rank in enumerate(spec.ranks):
            if rank is not None:
                _check_text(spec, i, rank, "rank", limits)


def _check_tree(spec: LabelSetSpec) -> None:
    parents = spec.parents
    if parents is None:
        return
    # Fast path: every parent defined before its child (no cycle is possible then).
    if all(p is None or (type(p) is int and 0 <= p < i) for i, p in enumerate(parents)):
        return
    n = len(parents)
    for i, parent in enumerate(parents):
        if parent is None:
            continue
        if type(parent) is not int or not 0 <= parent < n:
            raise InvalidInputError(
                f"{spec.where(i)}: parent {parent!r} is not the index of a node (0..{n - 1})"
            )

    def cycle(nodes: list[int]) -> Exception:
        listed = " -> ".join(f"{short(spec.names[j], 30)} ({_ref(spec, j)})" for j in nodes[:5])
        more = " -> …" if len(nodes) > 5 else ""
        return InvalidInputError(
            f"{spec.source}: the parents form a cycle: {listed}{more} -> back to the start: "
            "give one of them no parent"
        )

    # Checked before LabelSetSpec.node_depths, which assumes an acyclic tree.
    tree_depths(parents, cycle)


def _check_duplicates(spec: LabelSetSpec) -> None:
    names = spec.names
    keys = label_keys(names)
    if len(set(keys)) == len(keys):
        return
    tree = spec.is_tree and spec.parents is not None
    if tree and spec.parents is not None:
        # Only keys seen more than once can collide under one parent.
        repeated = {k for k, count in Counter(keys).items() if count > 1}
        pairs = [(p, k) for p, k in zip(spec.parents, keys, strict=True) if k in repeated]
        if len(set(pairs)) == len(pairs):
            return
    seen: dict[object, int] = {}
    for i, key in enumerate(keys):
        ident: object = (spec.parents[i], key) if tree and spec.parents is not None else key
        first = seen.setdefault(ident, i)
        if first != i:
            exact = names[first] == names[i]
            how = "" if exact else " after Unicode normalisation and case-folding"
            scope = " under the same parent" if tree else ""
            raise InvalidInputError(
                f"{spec.where(i)}: duplicate label {short(names[i])} (same as "
                f"{_ref(spec, first)}{how}{scope}): remove or rename it, or allow duplicates "
                "(--allow-duplicates)"
            )


def validate_spec(
    spec: LabelSetSpec, *, allow_duplicates: bool | None = None, limits: Limits | None = None
) -> LabelSetSpec:
    """Check a spec against every rule of this module.

    Args:
        spec: the label set.
        allow_duplicates: override ``spec.allow_duplicates``.
        limits: size limits (default :data:`DEFAULT_LIMITS`).

    Returns:
        The spec (with ``allow_duplicates`` set as decided).

    Raises:
        InvalidInputError: the first problem found, naming file and line or field.
    """
    limits = limits or DEFAULT_LIMITS
    allow = spec.allow_duplicates if allow_duplicates is None else allow_duplicates
    if not spec.names:
        raise InvalidInputError(f"{spec.source}: no labels: give at least one label")
    check_count(len(spec.names), spec.source, limits)
    _check_names(spec, limits)
    _check_prompts(spec, limits)
    _check_tree(spec)
    _check_tree_names(spec)
    if spec.templates is not None:
        validate_templates(
            spec.templates, f"{spec.source}: templates", max_templates=limits.max_templates
        )
    for i, rank in enumerate(spec.rank_names):
        if not isinstance(rank, str) or not rank.strip() or bad_char(rank):
            raise InvalidInputError(f"{spec.source}: rank name {i + 1} ({rank!r}) is not valid")
    if not allow:
        _check_duplicates(spec)
    if spec.is_tree and spec.ranks is not None and not spec.rank_names:
        # Per-node ranks only (a JSON tree's "rank" keys, an exported names file): name the
        # depths after them, so that --rank finds them and an export imports back the same.
        derived = spec.ranks_by_depth()
        if derived:
            spec = replace(spec, rank_names=derived)
    return spec if allow == spec.allow_duplicates else replace(spec, allow_duplicates=allow)
