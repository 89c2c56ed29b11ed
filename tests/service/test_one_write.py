"""A response leaves the real uvicorn server in one socket write (zsindex/service/one_write.py).

The server runs on loopback with the protocol class zsindex serves with; a recording layer just
under it counts the writes that reach the real socket transport.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from zsindex.service.limits import BodySizeLimitMiddleware
from zsindex.service.one_write import coalescing_protocol
from zsindex.service.server import BackgroundServer


class _Recorded:
    """The real transport, with every write's size noted (per connection)."""

    def __init__(self, transport: asyncio.Transport, writes: list[int]) -> None:
        self._transport, self.writes = transport, writes

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _recording(base: type[asyncio.Protocol], log: list[list[int]]) -> type[asyncio.Protocol]:
    class Recording(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:
            log.append([])
            super().connection_made(_Recorded(transport, log[-1]))

    return Recording


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=1 << 20)  # a pure-ASGI layer

    @app.post("/v1/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return {"labels": ["circle"] * 20, "echo": body}

    return app


def _serve(protocol: type[asyncio.Protocol], requests: int) -> tuple[list[list[int]], list[Any]]:
    log: list[list[int]] = []
    with BackgroundServer(_app(), http=_recording(protocol, log)) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:  # one keep-alive conn.
            answers = [http.post("/v1/echo", json={"i": i}).json() for i in range(requests)]
        # A closing response (the drain path's `Connection: close`) is flushed before the close.
        with socket.create_connection((server.host, server.port), timeout=10) as raw:
            raw.sendall(b"GET /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := raw.recv(65536):
                data += chunk
        answers.append(data)
    return log, answers


def test_every_response_leaves_in_one_write_and_arrives_whole() -> None:
    log, answers = _serve(coalescing_protocol(), requests=5)
    assert [a["echo"] for a in answers[:5]] == [{"i": i} for i in range(5)]
    closing = answers[5]
    assert closing.startswith(b"HTTP/1.1 404") and closing.endswith(b'{"detail":"Not Found"}')
    keep_alive, closed = log[0], log[-1]
    assert len(keep_alive) == 5, keep_alive  # five responses, five writes
    assert len(closed) == 1 and closed[0] == len(closing)


def test_uvicorn_alone_writes_head_and_body_separately() -> None:
    # The control: without the coalescing transport each response takes several writes, the
    # window in which a killed replica leaves a head without its body.
    log, _ = _serve(H11Protocol, requests=3)
    assert len(log[0]) >= 2 * 3, log[0]
