"""Label-set plugins: discovery through the ``zsindex.labelsets`` entry-point group.

Plugin contract. A distribution declares, in its ``pyproject.toml``::

    [project.entry-points."zsindex.labelsets"]
    fruits = "my_package.labels:fruits"

The entry point names a callable taking no arguments that returns one of:

- a :class:`~zsindex.labels.spec.LabelSetSpec`;
- a list of label strings;
- a mapping with ``labels`` (a list of strings, or ``{label: [prompts]}``) and optionally
  ``templates`` (a list of ``{}``/``{c}`` templates, or a template set name such as
  ``"openai-imagenet-80"``), ``parents`` (child → parent name), ``prompts``
  (``{label: [prompts]}``), ``rank_names`` (list) and ``allow_duplicates`` (bool: the source list
  deliberately repeats names, as open_clip's ImageNet list does).

Whatever it returns is validated like user input (types, blanks, control characters, lengths,
duplicates unless declared, cycles) with :data:`PLUGIN_LIMITS` (at most 500,000 labels); any
failure — at import, in the call, or in the data — is a :class:`~zsindex.errors.PluginError`
naming the plugin, and other plugins are unaffected. The plugin's templates apply when the user
gives none.

Allow-list (``ZSINDEX_PLUGINS``, :attr:`zsindex.config.Settings.plugins`): ``None`` allows every
installed plugin; otherwise only the listed names, built-ins included. A plugin not allowed is
never imported (its ``EntryPoint.load()`` is never called). Listing imports nothing.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from zsindex.errors import InvalidInputError, NotFoundError, PluginError
from zsindex.labels.build import build_labelset
from zsindex.labels.spec import LabelSetSpec
from zsindex.labels.validate import Limits, check_count, validate_spec

ENTRY_POINT_GROUP = "zsindex.labelsets"
PLUGIN_LIMITS = Limits(max_labels=500_000)
"""Limits for what plugins return (a plugin with a million labels is refused)."""

_RESULT_KEYS = frozenset(
    {"labels", "templates", "parents", "prompts", "rank_names", "allow_duplicates"}
)


@dataclass(frozen=True)
class PluginInfo:
    """An installed label-set plugin, as listed (nothing imported).

    Attributes:
        name: the entry-point name (what ``--plugin`` takes).
        distribution: the distribution that declares it.
        version: that distribution's version.
        target: the ``module:attr`` it points at.
        allowed: whether the allow-list lets it load.
        error: why it cannot load even if allowed (e.g. a name declared twice), else ``None``.
    """

    name: str
    distribution: str | None
    version: str | None
    target: str
    allowed: bool
    error: str | None = None


def _dist(ep: md.EntryPoint) -> tuple[str | None, str | None]:
    dist = ep.dist
    if dist is None:
        return None, None
    try:
        return dist.name, dist.version
    except Exception:  # a broken metadata file must not break listing
        return None, None


def _entry_points() -> dict[str, list[md.EntryPoint]]:
    found: dict[str, list[md.EntryPoint]] = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def is_allowed(name: str, allow: Collection[str] | None) -> bool:
    """Whether plugin ``name`` may load under the allow-list ``allow`` (``None``: all)."""
    return allow is None or name in allow


def _conflict(name: str, eps: list[md.EntryPoint]) -> str | None:
    if len({ep.value for ep in eps}) <= 1:
        return None
    dists = ", ".join(sorted(str(_dist(ep)[0]) for ep in eps))
    return f"plugin {name!r} is declared by several distributions ({dists}): uninstall one"


def list_plugins(allow: Collection[str] | None = None) -> list[PluginInfo]:
    """List installed label-set plugins without importing any of them.

    Args:
        allow: the allow-list (``Settings.plugins``); ``None`` allows all.

    Returns:
        One :class:`PluginInfo` per entry-point name, sorted by name.
    """
    out = []
    for name, eps in sorted(_entry_points().items()):
        dist, version = _dist(eps[0])
        out.append(
            PluginInfo(
                name=name,
                distribution=dist,
                version=version,
                target=eps[0].value,
                allowed=is_allowed(name, allow),
                error=_conflict(name, eps),
            )
        )
    return out


def _label(name: str, ep: md.EntryPoint) -> str:
    dist, version = _dist(ep)
    return f"plugin {name!r}" + (f" ({dist} {version})" if dist else "")


def load_plugin(
    name: str, allow: Collection[str] | None = None, *, limits: Limits | None = None
) -> LabelSetSpec:
    """Import a plugin (if allowed), call it and return its validated label set.

    Args:
        name: the entry-point name.
        allow: the allow-list (``Settings.plugins``); ``None`` allows all.
        limits: limits for its data (default :data:`PLUGIN_LIMITS`).

    Returns:
        A validated spec with ``source="plugin:NAME"``; ``templates`` are the plugin's own.

    Raises:
        NotFoundError: no such plugin installed.
        PluginError: not allowed (nothing imported), failed to import or run, or bad data.
    """
    eps = _entry_points().get(name)
    if not eps:
        installed = ", ".join(sorted(_entry_points())) or "none"
        raise NotFoundError(f"no label-set plugin named {name!r} (installed: {installed})")
    if not is_allowed(name, allow):
        listed = ",".join(sorted(allow or ())) or "(empty)"
        raise PluginError(
            f"plugin {name!r} is not allowed by ZSINDEX_PLUGINS={listed}: add it to the list "
            f"(e.g. ZSINDEX_PLUGINS={','.join([*sorted(allow or ()), name])}) or unset "
            "ZSINDEX_PLUGINS to allow every installed plugin"
        )
    conflict = _conflict(name, eps)
    if conflict:
        raise PluginError(conflict)
    ep = eps[0]
    who = _label(name, ep)
    try:
        factory = ep.load()
    except (Exception, SystemExit) as exc:
        raise PluginError(
            f"{who} failed to import {ep.value}: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(factory):
        raise PluginError(f"{who}: {ep.value} is not callable: point the entry point at a function")
    try:
        result = factory()
    except (Exception, SystemExit) as exc:
        raise PluginError(f"{who} raised {type(exc).__name__}: {exc}") from exc
    try:
        return plugin_result_to_spec(result, name, limits or PLUGIN_LIMITS)
    except InvalidInputError as exc:
        raise PluginError(f"{who} returned bad data: {exc.message}") from None


def plugin_result_to_spec(
    result: object, name: str, limits: Limits = PLUGIN_LIMITS
) -> LabelSetSpec:
    """Validate what a plugin returned (see the module docstring) and make it a spec.

    Raises:
        InvalidInputError: the result breaks the contract (the caller adds the plugin's name).
    """
    source = f"plugin:{name}"
    if isinstance(result, LabelSetSpec):
        check_count(len(result.names), source, limits)
        return validate_spec(replace(result, source=source), limits=limits)
    if isinstance(result, Mapping):
        unknown = set(result) - _RESULT_KEYS
        if unknown or "labels" not in result:
            problem = f"unknown keys {sorted(map(str, unknown))}" if unknown else "no 'labels'"
            raise InvalidInputError(
                f"the mapping has {problem}: use labels, templates, parents, prompts, "
                "rank_names, allow_duplicates"
            )
        allow_duplicates = result.get("allow_duplicates", False)
        if not isinstance(allow_duplicates, bool):
            raise InvalidInputError("allow_duplicates must be true or false")
        fields: dict[str, Any] = {
            k: result[k] for k in ("parents", "prompts", "templates", "rank_names") if k in result
        }
        return build_labelset(
            result["labels"],
            source=source,
            allow_duplicates=allow_duplicates,
            limits=limits,
            **fields,
        )
    if isinstance(result, list | tuple):
        return build_labelset(result, source=source, limits=limits)
    raise InvalidInputError(
        f"expected a LabelSetSpec, a list of labels or a mapping with 'labels', not "
        f"{type(result).__name__}"
    )
