"""``/metrics``: every route under its own template, per-label-set classify metrics with bounded
label values, and the loaded-version / load-time / propagation-lag series fed by
``ServiceMetrics.record_load``."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from svc_backends import DIM
from svc_helpers import auth

from zsindex.service.metrics import UNKNOWN_LABELSET, ServiceMetrics


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by (sample name, its labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def routes_seen(text: str) -> set[str]:
    return {
        dict(labels)["route"]
        for name, labels in samples(text)
        if name == "zsindex_http_requests_total"
    }


def test_every_served_route_has_its_own_template(live) -> None:
    server = live()
    with httpx.Client(base_url=server.base_url) as http:
        assert http.get("/openapi.json").status_code == 200
        assert http.get("/docs").status_code == 200
        assert http.get("/v1/labelsets/colors").status_code == 200
        assert http.get("/v1/labelsets/nope").status_code == 404
        assert http.delete("/healthz").status_code == 405
        assert http.get("/no/such/thing").status_code == 404
        assert http.get("/v1/labelsets/colors/extra/parts").status_code == 404
        text = http.get("/metrics").text
    get = "zsindex_http_requests_total"
    assert value(text, get, method="GET", route="/openapi.json", status="200") == 1
    assert value(text, get, method="GET", route="/docs", status="200") == 1
    assert value(text, get, method="GET", route="/v1/labelsets/{name}", status="200") == 1
    assert value(text, get, method="GET", route="/v1/labelsets/{name}", status="404") == 1
    assert value(text, get, method="DELETE", route="/healthz", status="405") == 1
    assert value(text, get, method="GET", route="unmatched", status="404") == 2
    # Raw paths never become label values.
    assert routes_seen(text) <= {
        "/openapi.json",
        "/docs",
        "/v1/labelsets/{name}",
        "/healthz",
        "unmatched",
    }
    count = "zsindex_http_request_duration_seconds_count"
    assert value(text, count, method="GET", route="/openapi.json") == 1


def _classify(tc: TestClient, labelset: str, rows: int = 1) -> int:
    body = {"labelset": labelset, "embeddings": [[1.0] * DIM for _ in range(rows)]}
    return tc.post("/v1/classify", json=body).status_code


def test_classify_metrics_per_label_set(client: TestClient) -> None:
    assert _classify(client, "colors", rows=2) == 200
    assert _classify(client, "colors", rows=3) == 200
    assert client.post("/v1/classify", json={"labelset": "colors"}).status_code == 422
    bad_width = {"labelset": "colors", "embeddings": [[1.0] * (DIM + 1)]}
    assert client.post("/v1/classify", json=bad_width).status_code == 422
    assert client.post("/v1/classify", content=b"x", headers={"content-type": "text/plain"})
    for i in range(20):  # names that do not exist must not grow the series
        assert _classify(client, f"nope-{i}") == 404
    text = client.get("/metrics").text
    req = "zsindex_classify_requests_total"
    assert value(text, req, labelset="colors", outcome="ok") == 2
    # The width is checked after the name resolved: a real label set, its own outcome.
    assert value(text, req, labelset="colors", outcome="invalid_input") == 1
    assert value(text, req, labelset=UNKNOWN_LABELSET, outcome="not_found") == 20
    assert value(text, req, labelset=UNKNOWN_LABELSET, outcome="invalid_input") == 1
    assert value(text, req, labelset=UNKNOWN_LABELSET, outcome="unsupported_media_type") == 1
    assert value(text, "zsindex_classify_images_total", labelset="colors") == 2 + 3 + 1
    assert value(text, "zsindex_classify_duration_seconds_count", labelset="colors") == 3
    seen = {
        dict(labels)["labelset"]
        for name, labels in samples(text)
        if name.startswith("zsindex_classify_")
    }
    assert seen == {"colors", UNKNOWN_LABELSET}


def test_timeouts_and_overload_are_outcomes(make_app, backend_under_test) -> None:
    from zsindex.service.limits import ServiceLimits

    backend_under_test.encode_delay_s = 0.6
    with TestClient(make_app(limits=ServiceLimits(request_timeout_s=0.2))) as tc:
        from svc_helpers import png_bytes

        r = tc.post(
            "/v1/classify",
            data={"labelset": "colors"},
            files=[("images", ("a.png", png_bytes(), "image/png"))],
        )
        assert r.status_code == 503
        text = tc.get("/metrics", headers=auth()).text
    assert value(text, "zsindex_classify_requests_total", labelset="colors", outcome="timeout") == 1
    assert value(text, "zsindex_classify_images_total", labelset="colors") == 1


def test_record_load_and_forget_loaded() -> None:
    m = ServiceMetrics()
    m.record_load("colors", 3, 0.25, lag_seconds=1.5)
    m.record_load("shapes", 7, 2.0)  # no lag known: the lag histogram is not touched
    m.record_load("colors", 4, 0.5, lag_seconds=-0.2)  # a host clock ahead of the store's
    text = generate_latest(m.registry).decode()
    assert value(text, "zsindex_loaded_version", labelset="colors") == 4
    assert value(text, "zsindex_loaded_load_seconds", labelset="colors") == 0.5
    assert value(text, "zsindex_loaded_version", labelset="shapes") == 7
    assert value(text, "zsindex_labelset_load_seconds_count") == 3
    assert value(text, "zsindex_labelset_load_seconds_sum") == pytest.approx(2.75)
    assert value(text, "zsindex_propagation_lag_seconds_count") == 2
    assert value(text, "zsindex_propagation_lag_seconds_sum") == pytest.approx(1.5)
    assert value(text, "zsindex_propagation_lag_seconds_bucket", le="0.05") == 1
    m.forget_loaded("colors")
    m.forget_loaded("never-loaded")  # no error
    text = generate_latest(m.registry).decode()
    assert value(text, "zsindex_loaded_version", labelset="colors") is None
    assert value(text, "zsindex_loaded_load_seconds", labelset="colors") is None
    assert value(text, "zsindex_loaded_version", labelset="shapes") == 7
    assert value(text, "zsindex_labelset_load_seconds_count") == 3  # history stays


def test_ready_and_draining_gauges() -> None:
    m = ServiceMetrics()
    text = generate_latest(m.registry).decode()
    assert value(text, "zsindex_ready") == 0 and value(text, "zsindex_draining") == 0
    m.set_ready(True)
    m.set_draining(True)
    text = generate_latest(m.registry).decode()
    assert value(text, "zsindex_ready") == 1 and value(text, "zsindex_draining") == 1
    m.set_ready(False)
    assert value(generate_latest(m.registry).decode(), "zsindex_ready") == 0


def test_body_limit_413_is_counted_under_its_route(make_app) -> None:
    from zsindex.service.limits import ServiceLimits

    with TestClient(make_app(limits=ServiceLimits(max_body_bytes=1000))) as tc:
        r = tc.post("/v1/classify", content=b"x" * 5000, headers={"content-type": "text/plain"})
        assert r.status_code == 413
        text = tc.get("/metrics").text
    total = "zsindex_http_requests_total"
    assert value(text, total, method="POST", route="/v1/classify", status="413") == 1
