"""Images given as text: RFC 2397 ``data:`` URLs with a base64 image payload.

``Client.classify`` (both backends) and the JSON ``images`` of ``POST /v1/classify`` accept
``data:image/png;base64,iVBOR...`` as the image's bytes, the form browsers and ``FileReader``
produce. Only base64 image payloads are taken: the format is still read from the bytes' magic
numbers, as for every other image.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from zsindex.errors import InvalidInputError

_EXAMPLE = "data:image/png;base64,..."


def is_data_url(value: object) -> bool:
    """Whether ``value`` is a string in the ``data:`` scheme (case-insensitive, RFC 2397)."""
    return isinstance(value, str) and value[:5].lower() == "data:"


def decode_data_url(value: str, name: str) -> bytes:
    """The image bytes of a ``data:[image/TYPE][;params];base64,PAYLOAD`` URL.

    Raises:
        InvalidInputError: not base64, not an image media type, or an empty or invalid payload
            (the message starts with ``name``).
    """
    header, comma, payload = value[5:].partition(",")
    if not comma:
        raise InvalidInputError(f"{name}: a data URL needs a ',' before its payload ({_EXAMPLE})")
    params = [p.strip().lower() for p in header.split(";")]
    if params[-1] != "base64":
        raise InvalidInputError(
            f"{name}: a data URL must carry the image base64-encoded (';base64,', {_EXAMPLE})"
        )
    media = params[0] if "/" in params[0] else ""
    if media and not (media.startswith("image/") or media == "application/octet-stream"):
        raise InvalidInputError(f"{name}: a data URL of type {media} is not an image ({_EXAMPLE})")
    # RFC 2397 payloads may be percent-encoded ('+' and '/' as %2B, %2F) and wrapped.
    compact = "".join(unquote(payload).split())
    if not compact:
        raise InvalidInputError(f"{name}: the data URL holds no image bytes")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{name}: the data URL's payload is not valid base64") from None


__all__ = ["decode_data_url", "is_data_url"]
