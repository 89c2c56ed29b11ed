"""A :class:`~zsindex.options.LabelSource` (what a caller gave) → a validated spec.

Only content is parsed here, never a path: the CLI reads a user's file itself and hands its
text down, so nothing below the CLI opens a path named by a caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from zsindex.labels.spec import LabelSetSpec
from zsindex.options import LabelSource

DEFAULT_TEMPLATE_SET = "simple-7"


def spec_from_source(source: LabelSource, plugins: tuple[str, ...] | None) -> LabelSetSpec:
    """Parse and validate exactly one label source (nothing is written).

    Args:
        source: the labels, a plugin name, or a file's content with its format.
        plugins: the plugin allow-list (``None``: every installed plugin).
    """
    source.check()
    if source.plugin is not None:
        from zsindex.labels.plugins import load_plugin

        return load_plugin(source.plugin, plugins)
    if source.content is not None:
        from zsindex.labels.formats import parse_labels_text

        return parse_labels_text(
            source.content,
            source.format or "",
            source.content_name,
            allow_duplicates=source.allow_duplicates,
            node_text=source.node_text,
        )
    from zsindex.labels.build import build_labelset

    labels = source.labels
    if isinstance(labels, Mapping):
        return build_labelset(
            list(labels),
            prompts=labels,
            parents=source.parents,
            allow_duplicates=source.allow_duplicates,
        )
    return build_labelset(labels, parents=source.parents, allow_duplicates=source.allow_duplicates)


def choose_templates(templates: Sequence[str] | str | None, spec: LabelSetSpec) -> tuple[str, ...]:
    """The templates to embed with: the caller's (a list, or a named set — never a file), else
    the source's own, else :data:`DEFAULT_TEMPLATE_SET`; none at all (``()``) when every label
    has its own prompts, so that the version does not list templates it never used."""
    from zsindex.labels.templates import resolve_templates, template_set, validate_templates

    if templates is None:
        chosen = spec.templates or template_set(DEFAULT_TEMPLATE_SET)
    elif isinstance(templates, str):
        chosen = resolve_templates(templates, allow_files=False)
    else:
        chosen = validate_templates(list(templates))  # checked even where unused
    if spec.prompts is not None and all(spec.prompts):
        return ()
    return chosen
