"""Typed inputs of the public API: classify options, label sources and imported names.

One object per concept goes through every layer unchanged — the CLI, ``Client`` (local and
remote), the HTTP schemas and the pipeline all take a :class:`ClassifyOptions`, so an option is
spelled, defaulted and validated in exactly one place (:meth:`ClassifyOptions.check`, and
:func:`check_fits` once the label set is known).

Which option applies where is one table, :data:`OPTION_RULES`:

==================  ================================  ====================
option              modes                             label sets
==================  ================================  ====================
``k``               all                               flat and tree
``mode``            (flat, pruned, beam, marginal,    flat: ``flat`` and
                    chils)                            ``pruned`` only
``rank``            beam, marginal, chils             tree
``beam``            beam                              tree
``within``          all                               tree
``min_confidence``  beam, marginal, chils             tree
``activation``      sigmoid: flat only                flat and tree
``fast_decode``     all                               flat and tree
``reject_below``    all                               flat and tree
==================  ================================  ====================

An option given where it does not apply is an error naming the option and the mode (or the
label set), never silently ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from zsindex.errors import InvalidInputError
from zsindex.settings_types import DEFAULT_BEAM_TOLERANCE as DEFAULT_BEAM_TOLERANCE

Mode = Literal["flat", "beam", "marginal", "chils", "pruned"]
Activation = Literal["softmax", "sigmoid"]
OnError = Literal["raise", "report"]
NodeText = Literal["name", "path"]

MODES: tuple[str, ...] = ("flat", "beam", "marginal", "chils", "pruned")
ACTIVATIONS: tuple[str, ...] = ("softmax", "sigmoid")
DEFAULT_BEAM = 8
"""The narrowest beam; without ``beam`` the width adapts above it (see the tolerance below)."""
FLAT_SET_MODES: tuple[str, ...] = ("flat", "pruned")
"""Modes a flat label set takes: ``pruned`` is flat search's exact top k, found by pruning."""
MAX_K = 10_000
MAX_BEAM = 100_000
TREE_MODES: tuple[str, ...] = ("beam", "marginal", "chils")


@dataclass(frozen=True)
class OptionRule:
    """Where one option applies: the modes that accept it and whether it needs a tree."""

    modes: tuple[str, ...]
    needs_tree: bool
    flag: str
    """How the CLI spells it (messages name both spellings)."""


OPTION_RULES: dict[str, OptionRule] = {
    "rank": OptionRule(TREE_MODES, needs_tree=True, flag="--rank"),
    "beam": OptionRule(("beam",), needs_tree=True, flag="--beam"),
    "within": OptionRule(MODES, needs_tree=True, flag="--within"),
    "min_confidence": OptionRule(TREE_MODES, needs_tree=True, flag="--min-confidence"),
    "sigmoid": OptionRule(("flat",), needs_tree=False, flag="--sigmoid"),
}
"""Options that apply only in some modes or to trees (``sigmoid``: ``activation="sigmoid"``);
``k``, ``mode``, ``activation="softmax"`` and ``fast_decode`` apply everywhere (the modes other
than ``flat`` need a tree)."""


def _given(options: ClassifyOptions) -> list[str]:
    """The rule-bound options that ``options`` sets, in table order."""
    set_ = {
        "rank": options.rank is not None,
        "beam": options.beam is not None,
        "within": options.within is not None,
        "min_confidence": options.min_confidence is not None,
        "sigmoid": options.activation == "sigmoid",
    }
    return [name for name in OPTION_RULES if set_[name]]


def _spell(name: str) -> str:
    if name == "sigmoid":
        return "activation 'sigmoid' (--sigmoid)"
    return f"{name} ({OPTION_RULES[name].flag})"


def _modes_text(modes: tuple[str, ...]) -> str:
    words = ", ".join(modes[:-1]) + " and " + modes[-1] if len(modes) > 1 else modes[0]
    return f"the {words} mode{'s' if len(modes) > 1 else ''}"


def check_fits(options: ClassifyOptions, labelset: str, *, is_tree: bool) -> None:
    """Raise :class:`InvalidInputError` when ``options`` need a tree and ``labelset`` is flat
    (the options' own rules are :meth:`ClassifyOptions.check`'s)."""
    if is_tree:
        return
    if options.mode not in FLAT_SET_MODES:
        raise InvalidInputError(
            f"mode {options.mode!r} needs a tree; {labelset!r} is a flat label set (use flat "
            "or pruned)"
        )
    for name in _given(options):
        if OPTION_RULES[name].needs_tree:
            raise InvalidInputError(
                f"{_spell(name)} applies to label trees; {labelset!r} is a flat label set"
            )


@dataclass(frozen=True)
class ClassifyOptions:
    """How to classify (the same meaning on every interface; where each option applies is
    :data:`OPTION_RULES`, see the module's table).

    Attributes:
        k: predictions per image (1 to 10,000).
        mode: ``flat`` (leaves of a tree), ``beam``, ``marginal`` or ``chils`` (trees), or
            ``pruned``: flat's exact top k found by bound-pruned group search (probabilities
            normalised with a bounded, reported error; see ``probability_error``).
        rank: named rank or depth to stop at (tree modes).
        beam: nodes kept per level in ``beam`` mode (a fixed width); ``None``: at least 8,
            widened per query until the dropped path probability is within the tolerance.
        within: restrict to the subtree of this node (a name or an ``a/b/c`` path; trees, any
            mode).
        min_confidence: in tree modes, stop at the deepest node with at least this probability.
        activation: ``softmax`` (one label) or ``sigmoid`` (multi-label, SigLIP-style; flat
            mode).
        fast_decode: decode JPEGs at a reduced scale (libjpeg draft mode) before the model's
            preprocessing: faster on large JPEGs, not bit-exact (see README); ``None`` takes
            the ``ZSINDEX_FAST_DECODE`` setting (default off).
        reject_below: "none of these": a result whose top probability is below this is
            marked ``rejected`` (its predictions stay listed); ``None``: never rejected.
    """

    k: int = 5
    mode: Mode = "flat"
    rank: str | int | None = None
    beam: int | None = None
    within: str | None = None
    min_confidence: float | None = None
    activation: Activation = "softmax"
    fast_decode: bool | None = None
    reject_below: float | None = None

    def check(self) -> ClassifyOptions:
        """Return ``self`` if every field is valid; raise :class:`InvalidInputError` naming the
        first bad field otherwise."""
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_K:
            raise InvalidInputError(f"k must be an integer from 1 to {MAX_K}, got {self.k!r}")
        if self.mode not in MODES:
            raise InvalidInputError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.activation not in ACTIVATIONS:
            raise InvalidInputError(
                f"activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}"
            )
        if self.rank is not None and (
            isinstance(self.rank, bool) or not isinstance(self.rank, str | int)
        ):
            raise InvalidInputError(f"rank must be a rank name or a depth, got {self.rank!r}")
        if self.beam is not None and (
            isinstance(self.beam, bool)
            or not isinstance(self.beam, int)
            or not 1 <= self.beam <= MAX_BEAM
        ):
            raise InvalidInputError(
                f"beam must be an integer from 1 to {MAX_BEAM}, got {self.beam!r}"
            )
        if self.within is not None and (not isinstance(self.within, str) or not self.within):
            raise InvalidInputError(f"within must be a node name, got {self.within!r}")
        if self.min_confidence is not None:
            value = self.min_confidence
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0.0 <= value <= 1.0
            ):
                raise InvalidInputError(f"min_confidence must be within [0, 1], got {value!r}")
        if self.reject_below is not None:
            value = self.reject_below
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0.0 <= value <= 1.0
            ):
                raise InvalidInputError(
                    f"reject_below (--reject-below) must be within [0, 1], got {value!r}"
                )
        if self.fast_decode is not None and not isinstance(self.fast_decode, bool):
            raise InvalidInputError(f"fast_decode must be true or false, got {self.fast_decode!r}")
        for name in _given(self):
            modes = OPTION_RULES[name].modes
            if self.mode not in modes:
                raise InvalidInputError(
                    f"{_spell(name)} applies to {_modes_text(modes)} only, not to {self.mode} "
                    f"mode; drop it or give mode (--mode) {' or '.join(modes)}"
                )
        return self

    def with_defaults(self, *, fast_decode: bool) -> ClassifyOptions:
        """A copy with the settings' defaults filled in where the caller left ``None``."""
        if self.fast_decode is None:
            return replace(self, fast_decode=fast_decode)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from their defaults (the wire form)."""
        default = ClassifyOptions()
        return {k: v for k, v in asdict(self).items() if v != getattr(default, k)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassifyOptions:
        """Options from their wire form; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"unknown classify option(s): {', '.join(unknown)}")
        return cls(**dict(data)).check()


@dataclass(frozen=True)
class LabelSource:
    """Exactly one source of labels for :meth:`zsindex.Client.add_labelset`.

    Attributes:
        labels: a list of names, or a ``{label: [prompts]}`` dict.
        parents: child → parent names, making ``labels`` a tree (each parent must be a label).
        plugin: a plugin's name (``zsindex labels plugins``).
        content: a label file's text, with ``format``.
        format: ``text``, ``csv``, ``json``, ``yaml`` or ``taxonomy-csv`` (for ``content``).
        content_name: how messages name ``content`` (the CLI passes the file's path).
        node_text: ``name`` or ``path``: what taxonomy nodes' prompts are filled with.
        allow_duplicates: keep duplicate names (labels are identified by position).
    """

    labels: Sequence[str] | Mapping[str, Sequence[str]] | None = None
    parents: Mapping[str, str] | None = None
    plugin: str | None = None
    content: str | None = None
    format: str | None = None
    content_name: str = "content"
    node_text: NodeText = "name"
    allow_duplicates: bool = False

    def check(self) -> LabelSource:
        """Return ``self`` if it names exactly one source."""
        given = [x for x in (self.labels, self.plugin, self.content) if x is not None]
        if len(given) != 1:
            raise InvalidInputError(
                "give exactly one label source: labels, plugin, or content (with format)"
            )
        if self.content is not None and self.format is None:
            raise InvalidInputError("content needs a format (text, csv, json, yaml, taxonomy-csv)")
        if self.parents is not None and self.labels is None:
            raise InvalidInputError("parents apply to labels given as a list")
        if self.node_text not in ("name", "path"):
            raise InvalidInputError(f"node_text must be 'name' or 'path', got {self.node_text!r}")
        return self


@dataclass(frozen=True)
class LabelNames:
    """The names of imported embedding rows: a list, or a names file's text.

    Attributes:
        names: one name per row.
        parents: per row, the parent's row index or name (``None`` for a root): a tree.
        content: a names file's text instead (``text``, ``json``, ``csv``; see
            ``zsindex labels import --help``), with optional ``format``.
        format: the names file's format (detected from the content when ``None``).
        content_name: how messages name ``content``.
    """

    names: Sequence[str] | None = None
    parents: Sequence[str | int | None] | None = None
    content: str | None = None
    format: str | None = None
    content_name: str = "names"

    def check(self) -> LabelNames:
        """Return ``self`` if it holds exactly one kind of names."""
        if (self.names is None) == (self.content is None):
            raise InvalidInputError("give either names or a names file's content")
        if self.parents is not None and self.names is None:
            raise InvalidInputError("parents apply to names given as a list")
        return self
