"""Prompt templates: named sets, template files, validation and filling.

A template is a ``str.format`` string with exactly one placeholder, ``{}`` (open_clip style) or
``{c}`` (CLIP_benchmark style); ``{{`` and ``}}`` are literal braces. Filling a ``{}`` template
gives exactly ``template.format(label)``, the text ``open_clip.build_zero_shot_classifier`` builds.

Named sets (:data:`TEMPLATE_SET_NAMES`):

- ``openai-imagenet-80``: open_clip's ``OPENAI_IMAGENET_TEMPLATES`` (80).
- ``simple-7``: open_clip's ``SIMPLE_IMAGENET_TEMPLATES`` (7).
- ``cifar-18``: the 18 CIFAR templates of OpenAI CLIP / CLIP_benchmark.
- ``photo``: ``"a photo of a {}."`` — also :data:`DEFAULT_TEMPLATES`, used when neither the user
  nor the label source gives templates.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path

from zsindex.errors import InvalidInputError
from zsindex.labels import _openclip_meta
from zsindex.labels._text import bad_char, short

MAX_TEMPLATES = 1000
"""Most templates one set may hold."""

MAX_TEMPLATE_LENGTH = 1000
"""Longest template, in characters."""

PHOTO_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

DEFAULT_TEMPLATES: tuple[str, ...] = PHOTO_TEMPLATES
"""Templates used when neither the user nor the label source gives any."""

CIFAR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)
"""OpenAI CLIP's 18 CIFAR-10/100 templates (as in CLIP_benchmark)."""

_SETS: dict[str, Callable[[], tuple[str, ...]]] = {
    "openai-imagenet-80": _openclip_meta.openai_imagenet_templates,
    "simple-7": _openclip_meta.simple_imagenet_templates,
    "cifar-18": lambda: CIFAR_TEMPLATES,
    "photo": lambda: PHOTO_TEMPLATES,
}

TEMPLATE_SET_NAMES: tuple[str, ...] = tuple(_SETS)
"""Names accepted by :func:`template_set` and :func:`resolve_templates`."""


def template_set(name: str) -> tuple[str, ...]:
    """Return the named template set.

    Args:
        name: one of :data:`TEMPLATE_SET_NAMES`.

    Returns:
        The templates as ``{}`` format strings.

    Raises:
        InvalidInputError: the name is not a known set.
    """
    factory = _SETS.get(name)
    if factory is None:
        raise InvalidInputError(
            f"unknown template set {name!r}: use one of {', '.join(TEMPLATE_SET_NAMES)}"
        )
    return factory()


def check_template(template: object, where: str, max_length: int = MAX_TEMPLATE_LENGTH) -> str:
    """Check one template and return it.

    Args:
        template: the candidate (must be a string).
        where: where it came from, for the error message (``"file.txt, line 3"``).
        max_length: longest allowed template.

    Raises:
        InvalidInputError: not a string, too long, a control character, a malformed format
            string, or not exactly one ``{}``/``{c}`` placeholder.
    """
    if not isinstance(template, str):
        raise InvalidInputError(
            f"{where}: template must be a string, not {type(template).__name__}"
        )
    if len(template) > max_length:
        raise InvalidInputError(
            f"{where}: template is {len(template)} characters long (limit {max_length}): shorten it"
        )
    problem = bad_char(template)
    if problem:
        raise InvalidInputError(f"{where}: template {short(template)} contains a {problem}")
    try:
        fields = [
            (name, spec, conv)
            for _, name, spec, conv in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        raise InvalidInputError(
            f"{where}: template {short(template)} is not a valid format string ({exc}); "
            "write literal braces as {{ and }}"
        ) from None
    if not fields:
        raise InvalidInputError(
            f"{where}: template {short(template)} has no {{}} or {{c}} placeholder: add one "
            "where the label goes"
        )
    if len(fields) > 1:
        raise InvalidInputError(
            f"{where}: template {short(template)} has {len(fields)} placeholders: use exactly "
            "one {} or {c} for the label (write literal braces as {{ and }})"
        )
    name, spec, conv = fields[0]
    if name not in ("", "c"):
        raise InvalidInputError(
            f"{where}: template {short(template)} uses the field {{{name}}}: write {{}} or "
            "{c} where the label goes (numbered and named fields are not supported)"
        )
    if spec or conv:
        raise InvalidInputError(
            f"{where}: template {short(template)}: the placeholder has a format spec or "
            "conversion: write a plain {} or {c}"
        )
    return template


def validate_templates(
    templates: object,
    source: str = "templates",
    *,
    max_templates: int = MAX_TEMPLATES,
    lines: list[int] | None = None,
) -> tuple[str, ...]:
    """Check a list of templates and return it as a tuple.

    Args:
        templates: a list or tuple of strings.
        source: field or file name used in error messages.
        max_templates: the most templates allowed.
        lines: 1-based source lines of the templates (for files).

    Raises:
        InvalidInputError: not a list, empty, too many, or a bad template.
    """
    if isinstance(templates, str) or not isinstance(templates, list | tuple):
        raise InvalidInputError(
            f"{source}: templates must be a list of strings, not {type(templates).__name__}"
        )
    if not templates:
        raise InvalidInputError(
            f"{source}: no templates: give at least one, e.g. 'a photo of a {{}}.'"
        )
    if len(templates) > max_templates:
        raise InvalidInputError(
            f"{source}: {len(templates)} templates (limit {max_templates}): use fewer templates"
        )
    out = []
    for i, template in enumerate(templates):
        where = f"{source}, line {lines[i]}" if lines else f"{source}: item {i + 1}"
        out.append(check_template(template, where))
    return tuple(out)


def parse_templates_text(
    content: str, source: str, *, json_list: bool | None = None
) -> tuple[str, ...]:
    """Parse a template file's text: a JSON list, or one template per line.

    In the line format, blank lines and lines starting with ``#`` are skipped and surrounding
    spaces are removed.

    Args:
        content: the file's text.
        source: the file name for messages.
        json_list: force (``True``) or forbid (``False``) JSON; ``None`` decides from the content.
    """
    content = content.removeprefix("\ufeff")
    if json_list or (json_list is None and content.lstrip().startswith("[")):
        try:
            data = json.loads(content)
        except ValueError as exc:
            raise InvalidInputError(f"{source}: not valid JSON ({exc})") from None
        return validate_templates(data, source)
    items: list[str] = []
    lines: list[int] = []
    for number, raw in enumerate(content.split("\n"), start=1):
        text = raw.strip(" \t\r")
        if text and not text.startswith("#"):
            items.append(text)
            lines.append(number)
    if not items:
        raise InvalidInputError(f"{source}: no templates: write one template per line")
    return validate_templates(items, source, lines=lines)


def resolve_templates(name_or_path: str | Path, *, allow_files: bool = True) -> tuple[str, ...]:
    """Resolve ``--templates``: a named set, else a file (JSON list or one template per line).

    A known set name wins over a file of the same name.

    Args:
        name_or_path: a set name (:data:`TEMPLATE_SET_NAMES`) or a path.
        allow_files: ``False`` for remote callers, who may name sets but never server paths.

    Returns:
        The validated templates.

    Raises:
        InvalidInputError: unknown name, unreadable file, or a bad template (naming its line).
    """
    if isinstance(name_or_path, str) and name_or_path in _SETS:
        return template_set(name_or_path)
    names = ", ".join(TEMPLATE_SET_NAMES)
    if not allow_files:
        raise InvalidInputError(f"unknown template set {str(name_or_path)!r}: use one of {names}")
    path = Path(name_or_path)
    if not path.is_file():
        raise InvalidInputError(
            f"templates {str(name_or_path)!r} is neither a template set ({names}) nor a file"
        )
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read templates file {path}: {exc}") from None
    return parse_templates_text(
        content, str(path), json_list=True if path.suffix == ".json" else None
    )


def fill_template(template: str, text: str) -> str:
    """Fill a ``{}`` or ``{c}`` template with ``text`` (``template.format(text)`` semantics)."""
    return template.format(text, c=text)
