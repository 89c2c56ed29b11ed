"""Low-level text checks shared by the label, template and name validators."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

# C0/C1 control characters (tab, newline and carriage return included), DEL, the Unicode line and
# paragraph separators, and lone surrogates (which cannot be stored as UTF-8).
BAD_CHARS_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
BAD_CHARS_BUT_NUL_RE = re.compile("[\x01-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# An empty or whitespace-only item of a NUL-joined string padded with NUL at both ends.
BLANK_ITEM_RE = re.compile(r"\x00\s*\x00")


def bad_char(text: str) -> str | None:
    """Return a description of the first forbidden character in ``text``, or ``None``."""
    match = BAD_CHARS_RE.search(text)
    if match is None:
        return None
    char = match.group()
    return f"control character U+{ord(char):04X} at position {match.start() + 1}"


def label_key(name: str) -> str:
    """The identity of a label for duplicate checks: NFC, case-folded, whitespace collapsed."""
    if not name.isascii():
        name = unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())
    else:
        name = name.lower()
    return " ".join(name.split())


_SEP = "\x00"
# Whitespace other than the plain space that is not already a forbidden control character.
_OTHER_SPACE_RE = re.compile("[\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]")


def label_keys(names: Sequence[str]) -> list[str]:
    """:func:`label_key` of every name, computed over one joined string (fast for 1M names).

    The names must already be free of control characters (the validator checks them first).
    """
    joined = _SEP.join(names)
    ascii_only = joined.isascii()
    if ascii_only:
        folded = joined.lower()
    else:
        folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", joined).casefold())
    keys = folded.split(_SEP)
    needs_collapse = (
        "  " in folded
        or " \x00" in folded
        or "\x00 " in folded
        or folded.startswith(" ")
        or folded.endswith(" ")
        or (not ascii_only and _OTHER_SPACE_RE.search(folded) is not None)
    )
    if needs_collapse:
        keys = [" ".join(k.split()) for k in keys]
    return keys


def short(text: str, limit: int = 60) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters, for one-line error messages."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"… ({len(text)} characters)"
