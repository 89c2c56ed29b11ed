"""A response leaves the server in one socket write: status line, headers and body together.

uvicorn writes a response's head and its body with separate ``transport.write`` calls, which are
separate ``send`` syscalls and TCP segments. A replica killed between the two leaves the proxy
holding a response it has already begun forwarding and cannot retry (the client sees "peer
closed connection without sending complete message body"); killed before one combined write,
the proxy sees an empty response and retries it on another replica (deploy/haproxy.cfg).

:class:`CoalescingTransport` holds a response head (a write that starts with ``HTTP/`` and
ends with the blank line) and sends it in one write with whatever is written next, the body,
which Starlette writes in the same step through the app's pure-ASGI middlewares. Nothing else
waits: a head with no body after it (HEAD, 204, a stream's first chunk late) goes out at the end
of that loop turn (``call_soon``) or before a close, and every other write goes out at once, so
a response is never held behind other work on the loop. :func:`coalescing_protocol` is
uvicorn's own HTTP protocol (httptools when installed, else h11) with its transport wrapped so.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """Wraps an asyncio transport: a response head leaves in one write with the next write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        data = bytes(data)
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/") and data.endswith(b"\r\n\r\n"):
            self._head = data  # sent with the body, or at the end of this loop turn
            self._loop.call_soon(self.flush)
            return
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send a held head now (a no-op once the transport is closing)."""
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._head or b"")

    def __getattr__(self, name: str) -> Any:
        # Everything else (get_extra_info, pause/resume_reading, is_closing, set_protocol, …)
        # is the real transport's.
        return getattr(self._transport, name)


class _Coalescing:
    """Mixin for a uvicorn HTTP protocol: its transport is a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        wrapped = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)  # type: ignore[misc]


def coalescing_protocol() -> type[asyncio.Protocol]:
    """uvicorn's ``http="auto"`` protocol class, with one write per response."""
    base: type[asyncio.Protocol]
    try:
        import httptools  # noqa: F401  # what uvicorn's "auto" prefers
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    return type(f"Coalescing{base.__name__}", (_Coalescing, base), {})
