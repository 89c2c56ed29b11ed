"""Label-set references: ``NAME`` (the current version) or ``NAME@N`` (version N, pinned).

A label-set name never contains ``@`` (:func:`zsindex.labels.validate.validate_labelset_name`
allows only ``a-z 0-9 . _ -``), so the first ``@`` always starts the version: ``shapes@3`` is
version 3 of ``shapes``. What follows it must be a whole number from 1, else the reference is an
:class:`~zsindex.errors.InvalidInputError`; the name part is looked up as any name is (an unknown
one is not found).
"""

from __future__ import annotations

from zsindex.errors import InvalidInputError
from zsindex.labels._text import short


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``(name, version)`` of a label-set reference; ``version`` is ``None`` for the current one.

    Raises:
        InvalidInputError: ``@`` not followed by a version number (``shapes@``, ``shapes@x``,
            ``shapes@0``, ``shapes@-1``).
    """
    if not isinstance(ref, str) or "@" not in ref:
        return ref, None
    name, _, tail = ref.partition("@")
    if not (tail.isascii() and tail.isdigit()) or int(tail) < 1:
        raise InvalidInputError(
            f"invalid label set {short(ref)}: after '@' give a version number from 1 "
            f"(e.g. {name or 'shapes'}@3; see `zsindex labels history {name or 'NAME'}`)"
        )
    return name, int(tail)


def check_version_number(number: object) -> int:
    """``number`` if it is a version number (an int from 1), else one line naming the field."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise InvalidInputError(f"version must be a whole number from 1, got {number!r}")
    return number


def pinned_key(name: str, version: int) -> str:
    """The canonical spelling of version ``version`` of ``name`` (``shapes@3``)."""
    return f"{name}@{version}"


__all__ = ["check_version_number", "parse_ref", "pinned_key"]
