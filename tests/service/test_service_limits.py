"""S2 body/multipart limits and L2 overload: 413 after at most cap + one chunk; fast 503s."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from svc_backends import DIM, RecordingBackend
from svc_helpers import auth, png_bytes

from zsindex.service.batching import BatchingConfig
from zsindex.service.limits import DRAIN_BYTES, ServiceLimits

CAP = 8192
CHUNK = 1000


def _padded_json(size: int) -> bytes:
    """A valid classify JSON body of exactly ``size`` bytes (padded with spaces)."""
    body = json.dumps({"labelset": "colors", "embeddings": [[1.0] * DIM]}).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


@pytest.fixture
def capped(make_app) -> Iterator[TestClient]:
    with TestClient(make_app(limits=ServiceLimits(max_body_bytes=CAP))) as tc:
        yield tc


def test_body_at_cap_is_accepted_and_cap_plus_one_refused(capped: TestClient) -> None:
    headers = {"content-type": "application/json"}
    r = capped.post("/v1/classify", content=_padded_json(CAP), headers=headers)
    assert r.status_code == 200, r.text
    r = capped.post("/v1/classify", content=_padded_json(CAP + 1), headers=headers)
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"


def test_chunked_body_without_length_is_cut(capped: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield _padded_json(CAP + 5000)

    r = capped.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


# -- at the ASGI level: count what the app actually reads ----------------------------------------


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


def _drive(app: Any, path: str, headers: list[tuple[bytes, bytes]], chunk: bytes, limit: int):
    """Feed ``chunk`` repeatedly (up to ``limit`` bytes, chunked: no length); return
    (status, body, bytes handed to the app)."""
    consumed = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal consumed
        if consumed >= limit:
            return {"type": "http.request", "body": b"", "more_body": False}
        consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(_scope(path, headers), receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), consumed


@pytest.mark.parametrize(
    ("path", "content_type", "headers"),
    [
        ("/v1/classify", b"application/json", []),
        ("/v1/classify", b"multipart/form-data; boundary=xyz", []),
        (
            "/v1/labelsets",
            b"application/json",
            [(b"authorization", b"Bearer zs-test-key-7f3a9c0e1d2b4a68")],
        ),
    ],
)
def test_app_reads_at_most_cap_plus_one_chunk(make_app, path, content_type, headers) -> None:
    app = make_app(limits=ServiceLimits(max_body_bytes=CAP))
    if content_type.startswith(b"multipart"):
        first = b'--xyz\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\n'
        chunk = first + b"\x00" * (CHUNK - len(first))
    else:
        chunk = b" " * CHUNK
    status, body, consumed = _drive(
        app, path, [(b"content-type", content_type), *headers], chunk, limit=100 * CAP
    )
    assert status == 413 and body["code"] == "payload_too_large"
    assert consumed <= CAP + CHUNK


def test_declared_length_far_over_cap_is_refused_before_reading(make_app) -> None:
    app = make_app(limits=ServiceLimits(max_body_bytes=CAP))
    declared = DRAIN_BYTES + 1  # beyond what the server will swallow to answer politely
    headers = [(b"content-type", b"application/json"), (b"content-length", str(declared).encode())]
    status, body, consumed = _drive(app, "/v1/classify", headers, b" " * CHUNK, limit=10 * CAP)
    assert status == 413 and body["code"] == "payload_too_large" and consumed == 0


def test_declared_length_a_little_over_cap_is_drained_then_refused(make_app) -> None:
    """A moderately oversized upload is read and discarded (never kept) so the client, which is
    still sending, reliably reads the 413 instead of a reset connection."""
    app = make_app(limits=ServiceLimits(max_body_bytes=CAP))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(CAP + 1).encode())]
    status, body, consumed = _drive(app, "/v1/classify", headers, b" " * CHUNK, limit=10 * CAP)
    assert status == 413 and body["code"] == "payload_too_large"
    assert consumed <= CAP + CHUNK


def test_live_server_cuts_an_endless_chunked_upload(live) -> None:
    server = live(limits=ServiceLimits(max_body_bytes=CAP))
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        response = b""
        sock.settimeout(0.05)
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in response and time.monotonic() < deadline:
            if sent < 200 * CAP:
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (CHUNK, b" " * CHUNK))
                    sent += CHUNK
                except OSError:
                    sent = 200 * CAP  # server closed the connection: read what it said
            try:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
            except TimeoutError:
                continue
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < 200 * CAP  # it did not wait for the whole upload


def test_too_many_images_and_parts(make_app) -> None:
    limits = ServiceLimits(max_images_per_request=4)
    with TestClient(make_app(limits=limits)) as tc:
        files = [("images", (f"{i}.png", png_bytes(), "image/png")) for i in range(4)]
        r = tc.post("/v1/classify", data={"labelset": "colors"}, files=files)
        assert r.status_code == 200 and len(r.json()) == 4
        files.append(("images", ("5.png", png_bytes(), "image/png")))
        r = tc.post("/v1/classify", data={"labelset": "colors"}, files=files)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        fields = {f"f{i}": "x" for i in range(200)}
        r = tc.post("/v1/classify", data={"labelset": "colors", **fields}, files=files[:1])
        assert r.status_code == 413
        images = [base64.b64encode(png_bytes()).decode()] * 5
        r = tc.post("/v1/classify", json={"labelset": "colors", "images": images})
        assert r.status_code == 413


def test_multipart_without_images_or_with_string_images_is_422(client: TestClient) -> None:
    r = client.post("/v1/classify", data={"labelset": "colors"}, files=[("other", ("a", b"x"))])
    assert r.status_code == 422
    r = client.post(
        "/v1/classify", data={"labelset": "colors", "images": "a.png"}, files=[("x", ("a", b"x"))]
    )
    assert r.status_code == 422


# -- L2: overload ---------------------------------------------------------------------------------


def _post_image(http: httpx.Client) -> tuple[int, float]:
    body = {"labelset": "colors", "images": [base64.b64encode(png_bytes()).decode()]}
    start = time.perf_counter()
    r = http.post("/v1/classify", json=body)
    return r.status_code, time.perf_counter() - start


def test_overload_is_refused_fast_and_recovers(live, backend_under_test: RecordingBackend) -> None:
    backend_under_test.encode_delay_s = 0.6  # then the real forward
    server = live(
        limits=ServiceLimits(max_concurrency=2),
        batching=BatchingConfig(enabled=False),
    )
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    n = 8
    clients = [httpx.Client(base_url=server.base_url, timeout=30) for _ in range(n)]
    barrier = threading.Barrier(n)

    def worker(http: httpx.Client) -> None:
        barrier.wait()
        out = _post_image(http)
        with lock:
            results.append(out)

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(code for code, _ in results)
    assert codes.count(200) >= 2 and codes.count(503) >= 4, codes
    assert set(codes) <= {200, 503}
    fast = [elapsed for code, elapsed in results if code == 503]
    assert max(fast) < 0.5, fast  # refused without waiting for the model
    # Recovers at once when the load is gone.
    backend_under_test.encode_delay_s = 0.0
    assert _post_image(clients[0])[0] == 200
    for c in clients:
        c.close()


def test_request_timeout_is_503(make_app, backend_under_test: RecordingBackend) -> None:
    backend_under_test.encode_delay_s = 1.0
    with TestClient(make_app(limits=ServiceLimits(request_timeout_s=0.2))) as tc:
        start = time.perf_counter()
        r = tc.post(
            "/v1/classify",
            data={"labelset": "colors"},
            files=[("images", ("a.png", png_bytes(), "image/png"))],
        )
        assert r.status_code == 503 and r.json()["code"] == "overloaded"
        assert "timed out" in r.json()["message"]
        assert time.perf_counter() - start < 0.9
        text = tc.get("/metrics", headers=auth()).text
        assert 'zsindex_rejected_total{reason="timeout"} 1.0' in text


def test_client_gone_mid_upload_is_not_a_server_error(make_app, caplog) -> None:
    app = make_app()
    sent: list[dict[str, Any]] = []
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b'{"labelset": "col', "more_body": True}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json")]
    asyncio.run(app(_scope("/v1/classify", headers), receive, send))
    assert all(m.get("status", 0) < 500 for m in sent if m["type"] == "http.response.start")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
