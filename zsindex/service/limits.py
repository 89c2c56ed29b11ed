"""Service limits and the two guards that enforce them at the ASGI edge.

- :class:`ServiceLimits` — request-size, image-count, pixel, concurrency and timeout limits
  (defined in :mod:`zsindex.settings_types`, read from ``ZSINDEX_*`` by
  :meth:`zsindex.config.Settings.from_env` into ``Settings.limits``; re-exported here).
- :class:`BodySizeLimitMiddleware` — counts the bytes of the request body *as they are received*
  (no trust in ``Content-Length``), so a chunked upload with no length is cut after at most
  ``max_body_bytes`` plus one chunk and answered ``413 payload_too_large``.
- :class:`ConcurrencyLimiter` — a non-blocking in-flight counter: a request over the limit is
  refused at once with ``503 overloaded`` instead of waiting in an unbounded queue.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zsindex.errors import OverloadedError, PayloadTooLargeError
from zsindex.settings_types import MIB, ServiceLimits

__all__ = [
    "DRAIN_BYTES",
    "MIB",
    "BodySizeLimitMiddleware",
    "BodyTooLarge",
    "ConcurrencyLimiter",
    "ServiceLimits",
    "error_body",
]


# -- request body size ------------------------------------------------------------------------


DRAIN_BYTES = 1 << 20
"""Oversized bodies up to this size (or the cap, if larger) are read and discarded before the
413, so the uploading client reliably gets the answer."""


class BodyTooLarge(PayloadTooLargeError):
    """Raised from ``receive`` once the body passed the limit (caught by the middleware)."""


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


class BodySizeLimitMiddleware:
    """Cap request bodies at ``max_body_bytes``, counting bytes as they arrive.

    A declared ``Content-Length`` over the cap is refused before any byte is read. Otherwise
    the wrapped ``receive`` counts each body chunk; the chunk that crosses the cap makes it raise
    :class:`BodyTooLarge`, and from then on whatever the application tries to answer is replaced
    by ``413 {"code": "payload_too_large", ...}`` (if nothing was sent yet). The application
    therefore reads at most the cap plus one chunk.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _message(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes (ZSINDEX_MAX_BODY_BYTES)"

    async def _send_413(self, send: Send) -> None:
        body = error_body("payload_too_large", self._message())
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _drain(self, receive: Receive, budget: int) -> None:
        """Read and discard up to ``budget`` more body bytes (never kept in memory).

        A client still uploading when the server answers and closes sees a broken connection
        instead of the 413; swallowing a moderately oversized rest lets it read the answer.
        Bodies larger than that are cut off (the connection closes).
        """
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain_budget = max(self.max_body_bytes, DRAIN_BYTES)
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_body_bytes:
                    if declared <= drain_budget:
                        await self._drain(receive, declared)
                    await self._send_413(send)
                    return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(self._message())
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise BodyTooLarge(self._message())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # Whatever the application answers after the cap, the client gets the 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._send_413(send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                started = True
                await self._drain(receive, drain_budget)
                await self._send_413(send)
        except Exception:
            if exceeded and not started:
                started = True
                await self._send_413(send)
                return
            raise
        if exceeded and not started:
            await self._send_413(send)


# -- concurrency ------------------------------------------------------------------------------


class ConcurrencyLimiter:
    """A non-blocking limit on in-flight work (used from the event loop thread only).

    :meth:`acquire` raises :class:`OverloadedError` at once when the limit is reached; there is
    no queue, so the excess is answered quickly and memory stays bounded.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.in_flight = 0

    def acquire(self) -> None:
        if self.in_flight >= self.limit:
            raise OverloadedError(
                f"the service is at its limit of {self.limit} concurrent classify requests "
                "(ZSINDEX_MAX_CONCURRENCY); retry shortly"
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
