"""S3: API keys — no key, wrong key, key in the query string → 401; constant-time; never logged."""

from __future__ import annotations

import hmac
import logging

import httpx
import pytest
from starlette.testclient import TestClient
from svc_backends import DIM
from svc_helpers import API_KEY, OTHER_KEY, auth, wait_ready

from zsindex.service.auth import KeyChecker

WRITE = ("POST", "/v1/labelsets", {"name": "pets", "labels": ["dog", "cat"]})


def _write(tc: TestClient, headers: dict[str, str] | None = None, params: dict | None = None):
    method, url, body = WRITE
    return tc.request(method, url, json=body, headers=headers or {}, params=params)


def test_write_without_key_is_401(client: TestClient) -> None:
    r = _write(client)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-key",
        f"Bearer {API_KEY}x",
        f"Bearer {API_KEY[:-1]}",
        f"Basic {API_KEY}",
        API_KEY,
        "Bearer ",
    ],
)
def test_write_with_wrong_key_is_401(client: TestClient, header: str) -> None:
    r = _write(client, headers={"Authorization": header})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert API_KEY not in r.text


@pytest.mark.parametrize("key", [API_KEY, OTHER_KEY])
def test_write_with_any_configured_key_works(client: TestClient, key: str) -> None:
    assert _write(client, headers=auth(key)).status_code == 201


@pytest.mark.parametrize(
    "params",
    [{"api_key": API_KEY}, {"token": API_KEY}, {"key": "whatever"}, {"q": API_KEY}],
)
def test_key_in_query_string_is_rejected_even_with_a_valid_header(
    client: TestClient, params: dict
) -> None:
    r = _write(client, headers=auth(), params=params)
    assert r.status_code == 401
    assert "query string" in r.json()["message"]
    r = client.get("/v1/labelsets", params=params)  # reads too
    assert r.status_code == 401
    assert client.get("/v1/labelsets").status_code == 200


def test_no_keys_configured_refuses_writes_and_says_how(make_app) -> None:
    with TestClient(make_app(api_keys=())) as tc:
        r = _write(tc, headers=auth())
        assert r.status_code == 401
        assert "ZSINDEX_API_KEYS" in r.json()["message"]
        assert tc.delete("/v1/labelsets/colors").status_code == 401
        assert tc.get("/v1/labelsets").status_code == 200  # reads stay open


def test_reads_need_a_key_when_configured(make_app) -> None:
    with TestClient(make_app(require_auth_for_reads=True)) as tc:
        for method, url in [
            ("GET", "/v1/labelsets"),
            ("GET", "/v1/labelsets/colors"),
            ("GET", "/metrics"),
        ]:
            assert tc.request(method, url).status_code == 401, url
            assert tc.request(method, url, headers=auth()).status_code == 200, url
        body = {"labelset": "colors", "embeddings": [[1.0] * DIM]}
        assert tc.post("/v1/classify", json=body).status_code == 401
        assert tc.post("/v1/classify", json=body, headers=auth()).status_code == 200
        assert tc.get("/healthz").status_code == 200
        assert wait_ready(tc.get).status_code == 200


def test_comparison_is_constant_time_over_all_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a) + len(b))
        return real(a, b)

    monkeypatch.setattr("zsindex.service.auth.hmac.compare_digest", counting)
    checker = KeyChecker(["k1", "a-much-longer-key-2", "k3"])
    assert checker.matches("k1")  # matches the first key, still compares all three
    assert len(calls) == 3
    calls.clear()
    assert not checker.matches("nope")
    assert len(calls) == 3
    assert set(calls) == {64}  # digests: every comparison is over equal-length inputs


def test_keys_never_reach_the_logs(live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = live()
    with httpx.Client(base_url=server.base_url) as http:
        http.post("/v1/labelsets", json=WRITE[2], headers=auth())
        http.post("/v1/labelsets", json=WRITE[2], headers=auth("wrong-" + API_KEY))
        http.get("/v1/labelsets", params={"api_key": API_KEY})
        http.get(f"/v1/labelsets?token={OTHER_KEY}")
        classified = http.post(
            "/v1/classify", json={"labelset": "colors", "embeddings": [[1.0] * DIM]}, headers=auth()
        )
        assert classified.status_code == 200, classified.text
    # Server-side records only (the test's own HTTP client logs the URLs it was told to send).
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in server_records)
    assert "/v1/labelsets" in text  # the access log did run
    assert API_KEY not in text and OTHER_KEY not in text
    assert "Bearer" not in text
