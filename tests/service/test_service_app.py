"""The app over the real backend: routes, shapes, errors, metrics, readiness, the web page."""

from __future__ import annotations

import base64
import time
from dataclasses import replace

import numpy as np
import pytest
from starlette.testclient import TestClient
from svc_backends import DIM, UNREACHABLE_STORE
from svc_helpers import auth, jpeg_bytes, png_bytes, wait_ready

from zsindex.config import Settings
from zsindex.local import LocalBackend
from zsindex.service.limits import ServiceLimits


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = wait_ready(client.get)
    assert ready.json()["status"] == "ready"
    # Ready means warm: the stored label set is loaded, at its current version.
    detail = ready.json()["detail"]
    assert detail["warm"] is True and detail["notifications"] == "off"  # SQLite: polling
    assert (
        detail["loaded"]["colors"]["version"]
        == client.get("/v1/labelsets/colors").json()["version"]
    )


def test_readyz_503_when_store_down(make_app, settings: Settings) -> None:
    # A real store that cannot be reached (nothing listens on port 1), not a flag.
    down = LocalBackend(replace(settings, database_url=UNREACHABLE_STORE))
    try:
        with TestClient(make_app(backend=down)) as tc:
            start = time.perf_counter()
            r = tc.get("/readyz")
            elapsed = time.perf_counter() - start
            assert tc.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        down.close()
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable" and body["code"] == "store_unavailable"
    assert "unreachable" in body["message"] and "StoreError" in body["message"]
    assert elapsed < 3.0, elapsed  # connection refused is answered fast, not after a timeout


def test_openapi_lists_the_public_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/classify", "post"),
        ("/v1/labelsets", "get"),
        ("/v1/labelsets", "post"),
        ("/v1/labelsets/{name}", "get"),
        ("/v1/labelsets/{name}", "delete"),
        ("/v1/labelsets/{name}/embeddings", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
    body = paths["/v1/classify"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "ClassifyJsonRequest" in spec["components"]["schemas"]


def test_classify_multipart_shape(client: TestClient) -> None:
    files = [
        ("images", ("red.png", png_bytes((250, 0, 0)), "image/png")),
        ("images", ("blue.jpg", jpeg_bytes(), "image/jpeg")),
    ]
    r = client.post("/v1/classify", data={"labelset": "colors", "k": "2"}, files=files)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [o["image"] for o in out] == ["red.png", "blue.jpg"]
    for o in out:
        assert o["labelset"] == "colors" and o["version"] == 1
        assert len(o["predictions"]) == 2
        assert set(o["predictions"][0]) == {"label", "probability", "score"}
        assert "path" not in o
    # The real tiny model sees the colours.
    assert [o["predictions"][0]["label"] for o in out] == ["red", "blue"]


def test_classify_json_base64_and_embeddings(client: TestClient) -> None:
    images = [base64.b64encode(png_bytes()).decode(), base64.b64encode(jpeg_bytes()).decode()]
    r = client.post("/v1/classify", json={"labelset": "colors", "k": 1, "images": images})
    assert r.status_code == 200, r.text
    assert [o["image"] for o in r.json()] == ["0", "1"]
    assert [o["predictions"][0]["label"] for o in r.json()] == ["red", "blue"]
    rows = np.eye(DIM, dtype=np.float32)[:3].tolist()
    r = client.post("/v1/classify", json={"labelset": "colors", "embeddings": rows})
    assert r.status_code == 200, r.text
    assert len(r.json()) == 3 and len(r.json()[0]["predictions"]) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"labelset": "colors"},
        {"labelset": "colors", "images": ["aGk="], "embeddings": [[1.0]]},
        {"labelset": "colors", "k": 0, "embeddings": [[1.0]]},
        {"labelset": "colors", "embeddings": [[1.0, 2.0], [1.0]]},
        {"labelset": "colors", "images": ["***"]},
        {"labelset": "colors", "mode": "sideways", "embeddings": [[1.0]]},
        {"labelset": "colors", "embeddings": [[1.0]], "extra": 1},
    ],
)
def test_classify_invalid_json_is_422(client: TestClient, body: dict) -> None:
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_input"
    assert isinstance(r.json()["message"], str)


def test_classify_unknown_labelset_is_404(client: TestClient) -> None:
    r = client.post("/v1/classify", json={"labelset": "nope", "embeddings": [[1.0] * DIM]})
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def test_classify_wrong_content_type_is_415(client: TestClient) -> None:
    r = client.post(
        "/v1/classify", content=b"labelset=colors", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415
    assert r.json()["code"] == "unsupported_media_type"


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.put("/v1/classify")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_labelset_crud_shapes(client: TestClient) -> None:
    listed = client.get("/v1/labelsets").json()
    assert listed[0]["name"] == "colors"
    assert {"name", "version", "num_labels", "model"} <= set(listed[0])
    r = client.post(
        "/v1/labelsets", json={"name": "pets", "labels": ["dog", "cat"]}, headers=auth()
    )
    assert r.status_code == 201, r.text
    shown = client.get("/v1/labelsets/pets").json()
    assert shown["version"] == 1 and shown["num_labels"] == 2
    assert {"templates", "digest", "depth"} <= set(shown)
    r = client.post(
        "/v1/labelsets", json={"name": "pets", "labels": ["dog", "cat", "cow"]}, headers=auth()
    )
    assert r.json()["version"] == 2
    history = client.get("/v1/labelsets/pets/history").json()
    assert [h["version"] for h in history] == [1, 2]
    emb = client.get("/v1/labelsets/pets/embeddings").json()
    assert emb["names"] == ["dog", "cat", "cow"] and emb["shape"] == [3, DIM]
    matrix = np.frombuffer(base64.b64decode(emb["data"]), dtype="<f4").reshape(3, DIM)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert client.delete("/v1/labelsets/pets", headers=auth()).status_code == 204
    r = client.get("/v1/labelsets/pets")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert client.delete("/v1/labelsets/pets", headers=auth()).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x"},
        {"name": "x", "labels": ["a"], "plugin": "shapes"},
        {"name": "x", "content": "a\nb"},
        {"name": "x", "labels": "a,b"},
    ],
)
def test_labelset_create_needs_one_source(client: TestClient, body: dict) -> None:
    r = client.post("/v1/labelsets", json=body, headers=auth())
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"


def test_metrics_exposes_service_metrics(client: TestClient) -> None:
    client.post("/v1/classify", json={"labelset": "colors", "embeddings": [[1.0] * DIM]})
    client.get("/nope")
    text = client.get("/metrics").text
    assert (
        'zsindex_http_requests_total{method="POST",route="/v1/classify",status="200"} 1.0' in text
    )
    assert 'route="unmatched",status="404"' in text
    assert "zsindex_http_request_duration_seconds_bucket" in text
    assert "zsindex_batch_images_bucket" in text
    assert "zsindex_batch_queue_depth" in text
    assert 'zsindex_labelset_labels{labelset="colors"} 3.0' in text


def test_two_apps_in_one_process_have_separate_metrics(make_app) -> None:
    with TestClient(make_app()) as a, TestClient(make_app()) as b:
        a.get("/healthz")
        text_b = b.get("/metrics").text
    assert 'route="/healthz"' not in text_b


def test_web_page_is_served(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "/v1/classify" in r.text and "/v1/labelsets" in r.text


def test_results_are_version_consistent_after_reregistration(client: TestClient) -> None:
    client.post(
        "/v1/labelsets", json={"name": "colors", "labels": ["cyan", "magenta"]}, headers=auth()
    )
    body = {"labelset": "colors", "embeddings": [[1.0] * DIM]}
    out = client.post("/v1/classify", json=body).json()
    assert out[0]["version"] == 2
    assert {p["label"] for p in out[0]["predictions"]} == {"cyan", "magenta"}


def test_app_takes_limits_batching_and_refresh_from_settings(
    settings: Settings, backend_under_test: LocalBackend
) -> None:
    from zsindex.service.app import create_app
    from zsindex.service.batching import BatchingConfig

    configured = replace(
        settings,
        limits=ServiceLimits(max_concurrency=3, max_body_bytes=1000),
        batching=BatchingConfig(max_batch_images=7, max_wait_s=0.01),
        refresh_interval_s=0.5,
    )
    state = create_app(configured, backend_under_test).state.zs
    assert state.limits == configured.limits and state.limiter.limit == 3
    assert state.batcher.config == configured.batching
    assert state.refresh_interval_s == 0.5
    # Explicit arguments still win; a bool switches batching with the other settings kept.
    state = create_app(
        configured, backend_under_test, limits=ServiceLimits(), batching=False, refresh_interval_s=0
    ).state.zs
    assert state.limits == ServiceLimits() and state.refresh_interval_s == 0
    assert state.batcher.config == replace(configured.batching, enabled=False)
