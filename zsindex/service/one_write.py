"""A response leaves the server in one socket write: status line, headers and body together.

uvicorn writes a response's head and its body with separate ``transport.write`` calls, which are
separate ``send`` syscalls and TCP segments. A replica killed between the two leaves the proxy
holding a response it has already begun forwarding and cannot retry (the client sees "peer
closed connection without sending complete message body"); killed before one combined write,
the proxy sees an empty response and retries it on another replica (deploy/haproxy.cfg).

:class:`CoalescingTransport` holds every write made during one turn of the event loop and sends
them as one at the end of that turn (``call_soon``), before a close. Starlette's responses send
their start and body messages in the same turn through the app's pure-ASGI middlewares, so a
buffered JSON response goes out whole. :func:`coalescing_protocol` is uvicorn's own HTTP
protocol (httptools when installed, else h11) with its transport wrapped this way.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """Wraps an asyncio transport: writes of one loop turn leave in one ``write``."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what this turn wrote, as one write (a no-op once the transport is closing)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

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
