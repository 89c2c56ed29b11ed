"""Prompt construction: templates × labels, per-label prompt lists, and their cache keys.

Pure Python (no torch): the lead's store code can compute cache keys without loading a model.

Templates use the open_clip placeholder ``{}`` (filled with ``template.format(label)``, exactly
as ``open_clip.build_zero_shot_classifier`` does) or the CLIP_benchmark placeholder ``{c}``
(filled with ``template.format(c=label)``). A label may carry its own list of prompts instead
(CuPL-style).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from json.encoder import encode_basestring

from zsindex.errors import InvalidInputError

__all__ = ["build_prompts", "fill_template", "label_key", "templates_digest", "validate_templates"]


def validate_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Check that every template is a string with exactly one usable placeholder.

    Args:
        templates: templates using ``{}`` or ``{c}``.

    Returns:
        The templates as a tuple.

    Raises:
        InvalidInputError: a template is not a string, has no placeholder, or does not format.
    """
    if isinstance(templates, str):
        raise InvalidInputError("templates must be a list of strings, not a single string")
    out = tuple(templates)
    if not out:
        raise InvalidInputError("templates must not be empty")
    for template in out:
        if not isinstance(template, str):
            raise InvalidInputError(f"template {template!r} is not a string")
        probe = _format(template, "\x00")
        if "\x00" not in probe:
            raise InvalidInputError(f"template {template!r} has no {{}} or {{c}} placeholder")
    return out


def _format(template: str, label: str) -> str:
    # Both placeholders at once, as labels.templates.fill_template does: a textual "{c}" test
    # would take the escaped literal "{{c}}" for a placeholder.
    try:
        return template.format(label, c=label)
    except (IndexError, KeyError, ValueError) as exc:
        raise InvalidInputError(
            f"template {template!r} does not format: use one {{}} or {{c}} placeholder "
            f"and double any literal braces ({exc})"
        ) from None


def fill_template(template: str, label: str) -> str:
    """Fill one template with a label (``{}`` open_clip style or ``{c}`` CLIP_benchmark style)."""
    return _format(template, label)


def build_prompts(
    labels: Sequence[str],
    templates: Sequence[str] | None,
    prompts: Sequence[Sequence[str] | None] | None = None,
) -> list[tuple[str, ...]]:
    """Return each label's prompt list (duplicates kept, order kept).

    Args:
        labels: label names.
        templates: templates filled with each label; ``None`` means a label without its own prompts
            is used verbatim as its only prompt.
        prompts: optional per-label prompt lists (``None`` entries fall back to the templates).

    Raises:
        InvalidInputError: mismatched lengths, empty labels or prompt lists, bad templates.
    """
    if isinstance(labels, str):
        raise InvalidInputError("labels must be a list of strings, not a single string")
    tmpl = validate_templates(templates) if templates is not None else None
    if prompts is not None and len(prompts) != len(labels):
        raise InvalidInputError(
            f"prompts has {len(prompts)} entries but there are {len(labels)} labels"
        )
    out: list[tuple[str, ...]] = []
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise InvalidInputError(f"label #{i} ({label!r}) is empty or not a string")
        own = prompts[i] if prompts is not None else None
        if own is not None:
            if isinstance(own, str):
                raise InvalidInputError(f"prompts for label {label!r} must be a list of strings")
            own_t = tuple(own)
            if not own_t or not all(isinstance(p, str) and p.strip() for p in own_t):
                raise InvalidInputError(f"prompts for label {label!r} must be non-empty strings")
            out.append(own_t)
        elif tmpl is not None:
            out.append(tuple(_format(t, label) for t in tmpl))
        else:
            out.append((label,))
    return out


def templates_digest(templates: Sequence[str] | None) -> str:
    """SHA-256 hex digest identifying a template list (order matters; ``None`` is its own value)."""
    payload = json.dumps(None if templates is None else list(templates), ensure_ascii=False)
    return hashlib.sha256(("templates\x00" + payload).encode("utf-8")).hexdigest()


def label_key(label: str, prompts: Sequence[str] | None = None) -> str:
    """SHA-256 hex key of one label (and its own prompt list, when it has one)."""
    if prompts is None and isinstance(label, str):
        # The same bytes as the general case below, ~4x faster (100k-label sets hash every
        # label): json.dumps([label, None], ensure_ascii=False) is '[' + quoted label + ', null]'.
        payload = "[" + encode_basestring(label) + ", null]"
    else:
        payload = json.dumps(
            [label, None if prompts is None else list(prompts)], ensure_ascii=False
        )
    return hashlib.sha256(("label\x00" + payload).encode("utf-8")).hexdigest()
