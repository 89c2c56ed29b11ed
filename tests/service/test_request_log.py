"""``X-Request-ID`` on every answer and one JSON access-log line per request, over real uvicorn.

The lines are read the way ``zsindex serve`` prints them (:func:`configure_access_log` on a
stream), so what is checked is the text an operator's log shipper gets.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from svc_backends import DIM
from svc_helpers import API_KEY, OTHER_KEY, auth

from zsindex.service.limits import ServiceLimits
from zsindex.service.request_log import (
    MAX_REQUEST_ID_LENGTH,
    access_log,
    configure_access_log,
    current_request_id,
)

GENERATED = re.compile(r"[0-9a-f]{32}")


class AccessLines:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The first ``n`` lines, parsed (each line is written just after its answer)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.stream.getvalue().splitlines()
            if len(lines) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert len(lines) >= n, lines
        return [json.loads(line) for line in lines[:n]]

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def lines() -> Iterator[AccessLines]:
    saved = (list(access_log.handlers), access_log.level, access_log.propagate)
    stream = io.StringIO()
    configure_access_log(stream)
    yield AccessLines(stream)
    access_log.handlers[:] = saved[0]
    access_log.setLevel(saved[1])
    access_log.propagate = saved[2]


def test_one_json_line_per_request_with_its_request_id(live, lines: AccessLines) -> None:
    server = live()
    with httpx.Client(base_url=server.base_url) as http:
        r1 = http.post(
            "/v1/classify",
            json={"labelset": "colors", "embeddings": [[1.0] * DIM, [0.5] * DIM]},
            headers={"X-Request-ID": "client-id_1.2:3~x"},
        )
        r2 = http.get(f"/v1/labelsets/colors?api_key={API_KEY}&x=1", headers=auth(OTHER_KEY))
        r3 = http.get("/no/such/path")
    assert r1.status_code == 200, r1.text
    assert r1.headers["x-request-id"] == "client-id_1.2:3~x"  # the client's own, echoed
    assert r2.status_code == 401  # a key in the query string is refused
    assert GENERATED.fullmatch(r2.headers["x-request-id"])
    assert GENERATED.fullmatch(r3.headers["x-request-id"])
    assert r2.headers["x-request-id"] != r3.headers["x-request-id"]

    got = lines.wait_for(3)
    time.sleep(0.1)
    assert len(lines.text.splitlines()) == 3  # exactly one line each
    classify, show, missing = got
    assert set(classify) == {
        "ts",
        "request_id",
        "method",
        "path",
        "route",
        "status",
        "duration_ms",
        "client",
        "labelset",
        "images",
    }
    assert classify["request_id"] == "client-id_1.2:3~x"
    assert (classify["method"], classify["path"], classify["route"]) == (
        "POST",
        "/v1/classify",
        "/v1/classify",
    )
    assert (classify["status"], classify["labelset"], classify["images"]) == (200, "colors", 2)
    assert isinstance(classify["duration_ms"], float) and classify["duration_ms"] >= 0
    assert classify["client"] == "127.0.0.1"
    ts = dt.datetime.fromisoformat(classify["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - ts).total_seconds()) < 60

    assert show["request_id"] == r2.headers["x-request-id"]
    assert (show["path"], show["route"], show["status"]) == (
        "/v1/labelsets/colors",
        "/v1/labelsets/{name}",
        401,
    )
    assert "labelset" not in show and "images" not in show  # only classify fills these in
    assert (missing["route"], missing["status"]) == ("unmatched", 404)
    # No query string, no header reaches the log.
    assert API_KEY not in lines.text and OTHER_KEY not in lines.text
    assert "Bearer" not in lines.text and "api_key" not in lines.text


@pytest.mark.parametrize(
    "sent",
    [
        "x" * (MAX_REQUEST_ID_LENGTH + 1),
        "has space",
        'quote"d',
        "semi;colon",
        "",
        "ünïcode",
    ],
)
def test_unsafe_request_ids_are_replaced_never_echoed(live, lines: AccessLines, sent: str) -> None:
    server = live()
    with httpx.Client(base_url=server.base_url) as http:
        r = http.get("/healthz", headers={"X-Request-ID": sent.encode()})
    assert r.status_code == 200
    assert GENERATED.fullmatch(r.headers["x-request-id"]), r.headers["x-request-id"]
    (line,) = lines.wait_for(1)
    assert line["request_id"] == r.headers["x-request-id"]


def test_longest_allowed_request_id_is_kept(live, lines: AccessLines) -> None:
    server = live()
    sent = "A" * MAX_REQUEST_ID_LENGTH
    r = httpx.get(f"{server.base_url}/healthz", headers={"X-Request-ID": sent})
    assert r.headers["x-request-id"] == sent
    assert lines.wait_for(1)[0]["request_id"] == sent


def _raw_post(port: int, head: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_body_limit_413s_get_an_id_and_a_line(live, lines: AccessLines) -> None:
    server = live(limits=ServiceLimits(max_body_bytes=1000))
    # Declared too large: refused before any routing.
    r = httpx.post(
        f"{server.base_url}/v1/classify",
        content=b"x" * 5000,
        headers={"content-type": "application/json", "X-Request-ID": "big-1"},
    )
    assert r.status_code == 413 and r.headers["x-request-id"] == "big-1"
    # Chunked with no length: cut while streaming.
    head = (
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Request-ID: big-2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    chunk = b"y" * 800
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
    raw = _raw_post(server.port, head, body)
    assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
    assert b"\r\nx-request-id: big-2\r\n" in raw.lower()
    first, second = lines.wait_for(2)
    assert (first["request_id"], first["status"], first["route"]) == ("big-1", 413, "/v1/classify")
    assert (second["request_id"], second["status"], second["route"]) == (
        "big-2",
        413,
        "/v1/classify",
    )


def test_unhandled_error_500_carries_the_id(make_app, live, lines: AccessLines, caplog) -> None:
    app: FastAPI = make_app()
    seen: list[str | None] = []

    async def boom() -> None:
        seen.append(current_request_id())
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    server = live(app)
    caplog.set_level(logging.ERROR, logger="zsindex.service")
    r = httpx.get(f"{server.base_url}/boom", headers={"X-Request-ID": "bug-7"})
    assert r.status_code == 500
    assert r.json() == {"code": "internal_error", "message": "internal server error"}
    assert r.headers["x-request-id"] == "bug-7"
    assert seen == ["bug-7"]  # code serving the request can name it in its own logs
    (line,) = lines.wait_for(1)
    assert (line["request_id"], line["status"], line["route"]) == ("bug-7", 500, "/boom")
    # The error handler still logs the traceback, once.
    errors = [rec for rec in caplog.records if rec.name == "zsindex.service"]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_no_line_when_the_access_log_is_off(live) -> None:
    saved = access_log.level, access_log.propagate
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    access_log.addHandler(handler)
    access_log.setLevel(logging.WARNING)
    try:
        server = live()
        r = httpx.get(f"{server.base_url}/healthz")
        assert r.status_code == 200 and GENERATED.fullmatch(r.headers["x-request-id"])
        time.sleep(0.1)
        assert stream.getvalue() == ""
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(saved[0])
        access_log.propagate = saved[1]
