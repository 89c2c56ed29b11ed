"""Request ids and the one-JSON-line-per-request access log.

Every answer carries ``X-Request-ID``: the client's own when it sent a sane token (at most
:data:`MAX_REQUEST_ID_LENGTH` characters of ``A-Z a-z 0-9 . _ ~ : -``), else a new uuid4 hex.
The access log (logger ``zsindex.service.access``, level INFO) gets one JSON object per request::

    {"ts": "2026-12-02T08:30:01.123456Z", "request_id": "...", "method": "POST",
     "path": "/v1/classify", "route": "/v1/classify", "status": 200, "duration_ms": 3.1,
     "client": "127.0.0.1", "labelset": "colors", "images": 2}

The path never has its query string (a key sent by mistake in a URL must never reach a log);
headers and bodies are never logged. ``labelset``/``images`` appear when a route filled them in
through :func:`request_note`.

:class:`~zsindex.service.metrics.MetricsMiddleware` (the outermost middleware, so body-limit
413s included) calls :func:`begin` and :func:`finish`; ``zsindex serve`` calls
:func:`configure_access_log` to print the lines.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
import uuid
from dataclasses import dataclass
from typing import IO, Any

from starlette.types import Scope

__all__ = [
    "MAX_REQUEST_ID_LENGTH",
    "RequestNote",
    "begin",
    "configure_access_log",
    "current_request_id",
    "end",
    "finish",
    "request_id_from",
    "request_note",
]

access_log = logging.getLogger("zsindex.service.access")

MAX_REQUEST_ID_LENGTH = 128
MAX_LOGGED_PATH = 512
"""Longer paths are cut in the log line (a log line stays bounded whatever the client sends)."""

_SANE_ID = re.compile(rb"[A-Za-z0-9._~:-]{1,%d}" % MAX_REQUEST_ID_LENGTH)
HEADER = b"x-request-id"


@dataclass
class RequestNote:
    """What a route tells the access log and the metrics about the request it served."""

    request_id: str = ""
    labelset: str | None = None
    """The label set the request asked for (as sent; possibly unknown)."""
    labelset_known: bool = False
    """True once the label set was resolved (so the name is a real one: bounded metric labels)."""
    images: int | None = None
    """Inputs classified: images, or embedding rows."""


_note: contextvars.ContextVar[RequestNote | None] = contextvars.ContextVar(
    "zsindex_request_note", default=None
)


def request_note() -> RequestNote:
    """The current request's note (a throwaway one outside a request)."""
    note = _note.get()
    return note if note is not None else RequestNote()


def current_request_id() -> str | None:
    """The id of the request being served in this context, if any."""
    note = _note.get()
    return note.request_id if note is not None else None


def request_id_from(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new uuid4 hex."""
    for key, value in scope.get("headers", ()):
        if key == HEADER:
            if _SANE_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break  # only the first one counts; a bad one is replaced, never echoed
    return uuid.uuid4().hex


def begin(scope: Scope) -> tuple[RequestNote, contextvars.Token[RequestNote | None]]:
    """Start a request: a note with its id, current in this context until :func:`end`."""
    note = RequestNote(request_id=request_id_from(scope))
    return note, _note.set(note)


def end(token: contextvars.Token[RequestNote | None]) -> None:
    _note.reset(token)


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    if client:
        return str(client[0])
    return None


def access_line(scope: Scope, note: RequestNote, route: str, status: int, seconds: float) -> str:
    """The JSON access-log line of one request."""
    path = str(scope.get("path", ""))
    if len(path) > MAX_LOGGED_PATH:
        path = path[:MAX_LOGGED_PATH] + "..."
    record: dict[str, Any] = {
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "request_id": note.request_id,
        "method": str(scope.get("method", "")),
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000.0, 3),
        "client": _client(scope),
    }
    if note.labelset is not None:
        record["labelset"] = note.labelset
    if note.images is not None:
        record["images"] = note.images
    # ensure_ascii: control characters and anything odd in a path stay escaped on one line.
    return json.dumps(record, separators=(",", ":"))


def finish(scope: Scope, note: RequestNote, route: str, status: int, seconds: float) -> None:
    """Write the request's access-log line (only built when INFO is on for the logger)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(access_line(scope, note, route, status, seconds))


class _MessageOnly(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


_HANDLER_MARK = "_zsindex_access_handler"


def configure_access_log(stream: IO[str] | None = None) -> logging.Handler:
    """Print each access-log line as it is (one JSON object per line) on ``stream`` (stderr).

    Sets the access logger to INFO and stops it propagating (the root logger's
    ``LEVEL name: message`` format would wrap the JSON). Calling it again replaces the handler.

    Returns:
        The installed handler.
    """
    for old in [h for h in access_log.handlers if getattr(h, _HANDLER_MARK, False)]:
        access_log.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_MessageOnly())
    setattr(handler, _HANDLER_MARK, True)
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    return handler
