"""Error translation at the HTTP edge: every error answer is ``{"code", "message"}``.

- :class:`~zsindex.errors.ZsindexError` → its ``http_status`` and ``code``.
- Request validation (FastAPI or pydantic) → ``422 invalid_input``, the message naming the field.
- Starlette's HTTP errors → a stable code by status (``404 not_found``,
  ``405 method_not_allowed``, …).
- Anything else → ``500 internal_error`` with a generic message (the traceback is logged, never
  sent).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from zsindex.errors import ZsindexError

log = logging.getLogger("zsindex.service")

CODES_BY_STATUS: dict[int, str] = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "overloaded",
    500: "internal_error",
    503: "overloaded",
    504: "timeout",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def _loc(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    return ".".join(parts)


_VALUE_ERROR_PREFIX = "Value error, "


def describe_validation_errors(errors: Sequence[Any], limit: int = 3) -> str:
    """A short, one-line description of pydantic/FastAPI validation errors.

    Our own validators' messages are full sentences: they go out without pydantic's
    ``Value error, `` prefix, and without a location when they concern the whole request.
    """
    parts = []
    for err in list(errors)[:limit]:
        loc = _loc(err.get("loc", ()))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            msg = "the body is not valid JSON"
        if err.get("type") == "value_error":
            msg = msg.removeprefix(_VALUE_ERROR_PREFIX)
            parts.append(f"{loc}: {msg}" if loc else msg)
        else:
            parts.append(f"{loc or 'request'}: {msg}")
    more = len(errors) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts) or "invalid request"


def zsindex_error_response(exc: ZsindexError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    if exc.http_status == 503:
        headers = {"Retry-After": "1"}
    return error_response(exc.http_status, exc.code, exc.message, headers)


async def _zsindex_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ZsindexError)
    if exc.http_status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, exc.code, exc.message)
    return zsindex_error_response(exc)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError | ValidationError) else []
    return error_response(422, "invalid_input", describe_validation_errors(errors))


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = CODES_BY_STATUS.get(status, "http_error" if status < 500 else "internal_error")
    if status == 404:
        message = f"no such resource: {request.method} {request.url.path}"
        if exc.detail and exc.detail != "Not Found":
            message = str(exc.detail)
    elif status == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    if status == 400:
        status = 422  # every malformed-request answer is 422 invalid_input
    return error_response(status, code, message, dict(exc.headers) if exc.headers else None)


async def _disconnect_handler(request: Request, exc: Exception) -> JSONResponse:
    log.debug("%s %s: client disconnected", request.method, request.url.path)
    return error_response(400, "client_disconnected", "the client went away mid-request")


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the ``{"code", "message"}`` shape."""
    app.add_exception_handler(ZsindexError, _zsindex_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(ClientDisconnect, _disconnect_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
