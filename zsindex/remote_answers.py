"""The answers of a ``zsindex serve``, read back for :class:`zsindex.remote.HttpBackend`.

Results and label-set records are checked for shape (a malformed answer is a
:class:`~zsindex.errors.TransportError`, never a half-read result), and error answers
``{"code", "message"}`` become the :mod:`zsindex.errors` class their code names.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import httpx
import numpy as np

from zsindex.errors import (
    ERRORS_BY_CODE,
    AuthError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    TransportError,
    UnsupportedImageFormatError,
    ZsindexError,
)
from zsindex.results import ClassificationResult, LabelSetInfo, LabelTree


class VersionChanged(Exception):
    """A request of a split call was answered from another version than the call's first."""


def same_version(seen: list[int], version: int) -> None:
    """Record the call's label-set version, or signal that it changed mid-call."""
    if not seen:
        seen.append(version)
    elif seen[0] != version:
        raise VersionChanged


def _unexpected(what: str, exc: BaseException | None = None) -> TransportError:
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return TransportError(f"unexpected answer from the server: {what}{detail}")


def parse_info(data: Any) -> LabelSetInfo:
    try:
        return LabelSetInfo.from_dict(data)
    except (TypeError, KeyError, AttributeError) as exc:
        raise _unexpected("not a label set", exc) from None


def parse_infos(data: Any) -> list[LabelSetInfo]:
    if not isinstance(data, list):
        raise _unexpected("not a list of label sets")
    return [parse_info(d) for d in data]


def parse_tree(data: Any) -> LabelTree:
    try:
        return LabelTree.from_dict(data)
    except (TypeError, KeyError, ValueError) as exc:
        raise _unexpected("not a label tree", exc) from None


def parse_embeddings(data: Any) -> tuple[list[str], np.ndarray]:
    """``(names, float32 [rows, cols])`` of ``GET /v1/labelsets/{name}/embeddings``."""
    try:
        names = data["names"]
        rows, cols = (int(x) for x in data["shape"])
        dtype = {"float32": "<f4", "float16": "<f2"}[data.get("dtype", "float32")]
        raw = base64.b64decode(data["data"], validate=True)
        matrix = np.frombuffer(raw, dtype=dtype).reshape(rows, cols).astype(np.float32)
    except (TypeError, KeyError, ValueError, binascii.Error) as exc:
        raise _unexpected("not an embedding matrix", exc) from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _unexpected("names are not a list of strings")
    if len(names) != rows:
        raise _unexpected(f"{len(names)} names for {rows} rows")
    return names, matrix


def error_result(
    labelset: str, version: int, name: str, error: ZsindexError
) -> ClassificationResult:
    """The result of an image the client could not send (``on_error="report"``)."""
    return ClassificationResult(
        image=name,
        labelset=labelset,
        version=version,
        predictions=[],
        error=error.message,
        error_code=error.code,
    )


def parse_results(data: Any, expected: int) -> list[ClassificationResult]:
    """One classify answer: exactly ``expected`` results, all of one label-set version."""
    if not isinstance(data, list) or len(data) != expected:
        count = len(data) if isinstance(data, list) else "no"
        raise _unexpected(f"{count} results for {expected} inputs")
    try:
        results = [ClassificationResult.from_dict(d) for d in data]
    except (TypeError, KeyError, ValueError) as exc:
        raise _unexpected("not classification results", exc) from None
    if len({r.version for r in results}) > 1:
        raise _unexpected("results of more than one label-set version")
    return results


_BY_STATUS: dict[int, type[ZsindexError]] = {
    401: AuthError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    415: UnsupportedImageFormatError,
    422: InvalidInputError,
    429: OverloadedError,
    502: TransportError,
    503: OverloadedError,
    504: TransportError,
}

_PYDANTIC_PREFIX = re.compile(r"(^|; )(?:request: )?Value error, ")


def clean_message(message: str) -> str:
    """A server message without pydantic's ``request: Value error, `` prefixes."""
    return _PYDANTIC_PREFIX.sub(r"\1", message).replace(": Value error, ", ": ")


def error_from_response(response: httpx.Response) -> ZsindexError:
    """The :mod:`zsindex.errors` instance an error answer stands for (by code, else status)."""
    request = response.request
    message = f"HTTP {response.status_code} from {request.method} {request.url.path}"
    code: str | None = None
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("code"), str):
            code = data["code"]
        if isinstance(data.get("message"), str):
            message = clean_message(data["message"])
    cls = ERRORS_BY_CODE.get(code) if code else None
    if cls is None:
        cls = _BY_STATUS.get(response.status_code, ZsindexError)
    return cls(message)
