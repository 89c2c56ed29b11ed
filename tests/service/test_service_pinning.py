"""Version pinning and rollback over HTTP: ``labelset`` ``NAME@N`` in JSON and multipart,
``GET /v1/labelsets/NAME@N``, ``POST /v1/labelsets/NAME/rollback`` (a write: needs the key), and
two PostgreSQL replicas where a rollback through one is served by the other at once."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from PIL import Image
from starlette.testclient import TestClient
from svc_backends import RecordingBackend
from svc_helpers import API_KEY, auth, unit_rows, wait_ready

from zsindex import Client
from zsindex.config import Settings
from zsindex.local import LocalBackend
from zsindex.service.app import create_app
from zsindex.service.server import BackgroundServer

DIM = 128
V1 = ["a", "b", "c"]
V2 = ["a", "b", "c", "d"]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def two_versions(backend_under_test: RecordingBackend) -> RecordingBackend:
    admin = Client.from_backend(backend_under_test)
    admin.import_labelset("p", unit_rows(3, DIM, 1), V1, model="zsindex-tiny")
    admin.import_labelset("p", unit_rows(4, DIM, 2), V2, model="zsindex-tiny")
    return backend_under_test


def _labels(answer: dict[str, object]) -> set[str]:
    return {p["label"] for p in answer["predictions"]}  # type: ignore[attr-defined]


def test_classify_show_embeddings_and_tree_of_a_pinned_version(
    two_versions: RecordingBackend, client: TestClient
) -> None:
    r = client.post("/v1/classify", json={"labelset": "p@1", "k": 5, "embeddings": [[1.0] * DIM]})
    assert r.status_code == 200, r.text
    assert r.json()[0]["version"] == 1 and _labels(r.json()[0]) == set(V1)
    r = client.post(
        "/v1/classify", data={"labelset": "p@1", "k": "5"}, files={"images": ("x.png", _png())}
    )
    assert r.status_code == 200, r.text
    assert r.json()[0]["version"] == 1 and _labels(r.json()[0]) == set(V1)
    current = client.post("/v1/classify", json={"labelset": "p", "embeddings": [[1.0] * DIM]})
    assert current.json()[0]["version"] == 2
    for path in ("/v1/labelsets/p@1", "/v1/labelsets/p%401"):
        shown = client.get(path).json()
        assert (shown["version"], shown["num_labels"], shown["current"]) == (1, 3, False)
    assert client.get("/v1/labelsets/p@1/embeddings").json()["names"] == V1
    assert client.get("/v1/labelsets/p@1/tree").json()["names"] == V1


@pytest.mark.parametrize(
    ("labelset", "status", "code", "says"),
    [
        (
            "p@9",
            404,
            "not_found",
            "label set 'p' has no version 9 (see `zsindex labels history p`)",
        ),
        ("p@x", 422, "invalid_input", "after '@' give a version number from 1"),
        ("p@", 422, "invalid_input", "after '@' give a version number from 1"),
        ("nope@1", 404, "not_found", "label set 'nope' does not exist"),
    ],
)
def test_bad_pins_are_one_line_errors(
    two_versions: RecordingBackend,
    client: TestClient,
    labelset: str,
    status: int,
    code: str,
    says: str,
) -> None:
    answers = [
        client.post("/v1/classify", json={"labelset": labelset, "embeddings": [[1.0] * DIM]}),
        client.post(
            "/v1/classify", data={"labelset": labelset}, files={"images": ("x.png", _png())}
        ),
        client.get(f"/v1/labelsets/{labelset}"),
    ]
    for r in answers:
        assert r.status_code == status, r.text
        assert r.json()["code"] == code and says in r.json()["message"], r.json()


def test_rollback_over_http(two_versions: RecordingBackend, client: TestClient) -> None:
    path = "/v1/labelsets/p/rollback"
    assert client.post(path, json={"version": 1}).status_code == 401
    assert client.post(path, json={"version": 1}, headers=auth("wrong")).status_code == 401
    for body in ({"version": 0}, {"version": "1"}, {"version": 1.5}, {}, {"version": 1, "x": 1}):
        r = client.post(path, json=body, headers=auth())
        assert (r.status_code, r.json()["code"]) == (422, "invalid_input"), (body, r.text)
    r = client.post(path, content=b"version=1", headers={**auth(), "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.post(path, json={"version": 9}, headers=auth())
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    assert client.post("/v1/labelsets/nope/rollback", json={"version": 1}, headers=auth()).json()[
        "code"
    ] == ("not_found")
    r = client.post(path, json={"version": 1}, headers=auth())
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["version"], body["num_labels"], body["rollback_of"]) == (3, 3, 1)
    served = client.post(
        "/v1/classify", json={"labelset": "p", "k": 5, "embeddings": [[1.0] * DIM]}
    )
    assert served.json()[0]["version"] == 3 and _labels(served.json()[0]) == set(V1)
    history = client.get("/v1/labelsets/p/history").json()
    assert [(h["version"], h["current"], h["rollback_of"]) for h in history] == [
        (1, False, None),
        (2, False, None),
        (3, True, 1),
    ]
    assert all("source" not in h for h in history)  # a user's file path is never handed out
    again = client.post(path, json={"version": 1}, headers=auth()).json()
    assert (again["version"], again.get("unchanged")) == (3, True)


def _served(http: httpx.Client, labelset: str) -> tuple[int, int] | None:
    r = http.post("/v1/classify", json={"labelset": labelset, "embeddings": [[1.0] * DIM]})
    if r.status_code != 200:
        return None
    return int(r.json()[0]["version"]), r.status_code


def _wait_for(check: object, timeout: float = 5.0) -> None:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.005)


@pytest.fixture
def two_replicas(pg_url: str, tmp_path: Path) -> Iterator[list[BackgroundServer]]:
    settings = Settings(
        home=tmp_path / "writer",
        database_url=pg_url,
        model="zsindex-tiny",
        pretrained=None,
        device="cpu",
        api_keys=(API_KEY,),
    )
    with Client.local(settings=settings) as writer:
        writer.import_labelset("p", unit_rows(3, DIM, 1), V1, model="zsindex-tiny")
        writer.import_labelset("p", unit_rows(4, DIM, 2), V2, model="zsindex-tiny")
    servers = []
    for i in range(2):
        s = replace(settings, home=tmp_path / f"replica{i}")
        app = create_app(s, LocalBackend(s), refresh_interval_s=0)  # notifications only
        servers.append(BackgroundServer(app).start())
    try:
        for server in servers:
            with httpx.Client(base_url=server.base_url) as http:
                assert wait_ready(http.get).json()["detail"]["notifications"] == "listening"
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.mark.postgres
def test_a_rollback_through_one_replica_is_served_by_the_other(
    two_replicas: list[BackgroundServer],
) -> None:
    one, other = two_replicas
    with httpx.Client(base_url=one.base_url) as a, httpx.Client(base_url=other.base_url) as b:
        assert _served(b, "p") == (2, 200) and _served(b, "p@1") == (1, 200)
        r = a.post("/v1/labelsets/p/rollback", json={"version": 1}, headers=auth())
        assert r.status_code == 201 and r.json()["version"] == 3
        _wait_for(lambda: _served(b, "p") == (3, 200))  # polling is off: by NOTIFY
        answer = b.post("/v1/classify", json={"labelset": "p", "k": 5, "embeddings": [[1.0] * DIM]})
        assert _labels(answer.json()[0]) == set(V1)
        assert _served(b, "p@2") == (2, 200)  # the rolled-back-from version stays pinnable
        # Deleted through one replica: the other drops its pins too (no stale version).
        assert a.delete("/v1/labelsets/p", headers=auth()).status_code == 204
        _wait_for(lambda: _served(b, "p@1") is None)
        r = b.post("/v1/classify", json={"labelset": "p@1", "embeddings": [[1.0] * DIM]})
        assert r.status_code == 404
