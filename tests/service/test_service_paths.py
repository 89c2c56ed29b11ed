"""S4: the server never opens a path or fetches a URL named by a client.

A Python audit hook watches every ``open`` in the process (the server runs in a thread of this
process) for the marker files the requests name; a loopback HTTP listener watches for fetches.
"""

from __future__ import annotations

import base64
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from svc_helpers import auth, png_bytes

_WATCHED: set[str] = set()
_OPENED: list[str] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _WATCHED and args and isinstance(args[0], str | bytes | Path):
        path = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        if any(w in path for w in _WATCHED):
            _OPENED.append(path)


sys.addaudithook(_hook)


@pytest.fixture
def marker(tmp_path: Path):
    path = tmp_path / "secret-marker.png"
    path.write_bytes(png_bytes())
    _WATCHED.add(path.name)
    _OPENED.clear()
    yield path
    _WATCHED.discard(path.name)


@pytest.fixture
def listener():
    """A loopback TCP listener that records any connection (a server-side fetch)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    hits: list[int] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                hits.append(1)
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/image.png", hits
    stop.set()
    thread.join(2)
    sock.close()


def test_audit_hook_sees_opens(marker: Path) -> None:
    marker.read_bytes()
    assert _OPENED  # the watcher itself works


def test_labelset_fields_naming_paths_or_urls_are_rejected(live, marker: Path, listener) -> None:
    url, hits = listener
    server = live()
    bad_bodies = [
        {"name": "x", "labels": ["a"], "pretrained": str(marker)},
        {"name": "x", "labels": ["a"], "pretrained": url},
        {"name": "x", "labels": ["a"], "pretrained": f"file://{marker}"},
        {"name": "x", "labels": ["a"], "model": f"local-dir:{marker.parent}"},
        {"name": "x", "labels": ["a"], "model": "hf-hub:org/repo"},
        {"name": "x", "labels": ["a"], "model": str(marker)},
        {"name": "x", "labels": ["a"], "templates": str(marker)},
        {"name": "x", "labels": ["a"], "templates": "../templates.txt"},
        {"name": "x", "plugin": str(marker)},
        {"name": "x", "plugin": "pkg.module:attr"},
        {"name": "x", "file": str(marker)},
        {"name": "x", "path": str(marker)},
        {"name": "x", "url": url},
        {"name": "x", "labels_file": str(marker)},
    ]
    with httpx.Client(base_url=server.base_url, headers=auth()) as http:
        for body in bad_bodies:
            r = http.post("/v1/labelsets", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["code"] == "invalid_input"
        body = {"names": ["a"], "model": str(marker), "shape": [1, 8], "data": "AAAA"}
        r = http.put("/v1/labelsets/x/embeddings", json=body)
        assert r.status_code == 422
    assert _OPENED == [] and hits == []


def test_classify_never_opens_named_paths_or_urls(live, marker: Path, listener) -> None:
    url, hits = listener
    server = live()
    with httpx.Client(base_url=server.base_url) as http:
        for value in [str(marker), f"file://{marker}", url, "~/secret-marker.png"]:
            r = http.post("/v1/classify", json={"labelset": "colors", "images": [value]})
            assert r.status_code == 422, (value, r.text)
            assert (
                "never opens paths or URLs" in r.json()["message"]
                or "base64" in r.json()["message"]
            )
            r = http.post(
                "/v1/classify",
                data={"labelset": "colors", "images": value},
                files=[("unused", ("u", b"u"))],
            )
            assert r.status_code == 422, (value, r.text)
        for field in ("path", "url", "image_path"):
            r = http.post("/v1/classify", json={"labelset": "colors", field: str(marker)})
            assert r.status_code == 422
        # A filename that names the marker is only echoed back, never opened.
        r = http.post(
            "/v1/classify",
            data={"labelset": "colors"},
            files=[("images", (str(marker), png_bytes((1, 2, 3)), "image/png"))],
        )
        assert r.status_code == 200, r.text
        assert r.json()[0]["image"] == str(marker)
    assert _OPENED == [] and hits == []


def test_base64_of_a_path_is_not_an_image(client, marker: Path) -> None:
    encoded = base64.b64encode(str(marker).encode()).decode()
    r = client.post("/v1/classify", json={"labelset": "colors", "images": [encoded]})
    # The decoded bytes are text, not an allowed image format: reported in the image's result.
    assert r.status_code == 200 and r.json()[0]["error_code"] == "unsupported_media_type"
    body = {"labelset": "colors", "images": [encoded], "on_error": "raise"}
    assert client.post("/v1/classify", json=body).status_code == 415
    assert _OPENED == []
