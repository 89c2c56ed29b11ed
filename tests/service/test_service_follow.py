"""A replica follows the store: preload before ready, NOTIFY on PostgreSQL, warm swaps.

Two real apps (uvicorn on loopback, real ``LocalBackend``) share one PostgreSQL schema with
polling turned off, so only notifications can carry a change from one to the other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from svc_helpers import API_KEY, auth, unit_rows, wait_ready

from zsindex import Client
from zsindex.config import Settings
from zsindex.local import LocalBackend
from zsindex.service.app import create_app
from zsindex.service.server import BackgroundServer
from zsindex.settings_types import ServingConfig

DIM = 128
LAG_COUNT = "zsindex_propagation_lag_seconds_count"


def _settings(url: str, home: Path, **serving: object) -> Settings:
    return Settings(
        home=home,
        database_url=url,
        model="zsindex-tiny",
        pretrained=None,
        device="cpu",
        api_keys=(API_KEY,),
        serving=ServingConfig(**serving),  # type: ignore[arg-type]
    )


def _import(settings: Settings, name: str, labels: list[str], seed: int) -> int:
    with Client.local(settings=settings) as client:
        rows = unit_rows(len(labels), DIM, seed)
        return int(client.import_labelset(name, rows, labels, model="zsindex-tiny").version)


def _served_version(http: httpx.Client, name: str) -> int | None:
    r = http.post("/v1/classify", json={"labelset": name, "embeddings": [[1.0] * DIM]})
    return int(r.json()[0]["version"]) if r.status_code == 200 else None


def _wait_for(check: object, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture
def two_replicas(pg_url: str, tmp_path: Path) -> Iterator[tuple[Settings, list[BackgroundServer]]]:
    settings = _settings(pg_url, tmp_path / "writer")
    _import(settings, "shared", ["a", "b", "c"], seed=1)
    servers = []
    for i in range(2):
        s = replace(settings, home=tmp_path / f"replica{i}")
        app = create_app(s, LocalBackend(s), refresh_interval_s=0)  # notifications only
        servers.append(BackgroundServer(app).start())
    try:
        for server in servers:
            with httpx.Client(base_url=server.base_url) as http:
                detail = wait_ready(http.get).json()["detail"]
                assert detail["notifications"] == "listening"
                assert set(detail["loaded"]) == {"shared"}  # preloaded: all by default
        yield settings, servers
    finally:
        for server in servers:
            server.stop()


@pytest.mark.postgres
def test_a_write_through_one_replica_is_served_by_the_other_at_once(
    two_replicas: tuple[Settings, list[BackgroundServer]],
) -> None:
    _, (one, other) = two_replicas
    with httpx.Client(base_url=one.base_url) as a, httpx.Client(base_url=other.base_url) as b:
        before = _served_version(b, "shared")
        assert before is not None
        lags = []
        for i in range(5):
            labels = [f"x{i}", f"y{i}"]
            r = a.post(
                "/v1/labelsets",
                json={"name": "shared", "labels": labels, "model": "zsindex-tiny"},
                headers=auth(),
            )
            assert r.status_code in (200, 201), r.text
            new = int(r.json()["version"])
            lags.append(_wait_for(lambda n=new: _served_version(b, "shared") == n, timeout=5))
            # Warm: the other replica answers from the new version's own labels.
            r = b.post("/v1/classify", json={"labelset": "shared", "embeddings": [[1.0] * DIM]})
            assert {p["label"] for p in r.json()[0]["predictions"]} == set(labels)
        # A new label set appears on the other replica preloaded, and a delete removes it.
        a.post(
            "/v1/labelsets",
            json={"name": "fresh", "labels": ["p", "q"], "model": "zsindex-tiny"},
            headers=auth(),
        ).raise_for_status()
        _wait_for(lambda: "fresh" in b.get("/readyz").json()["detail"]["loaded"], timeout=5)
        assert a.delete("/v1/labelsets/fresh", headers=auth()).status_code in (200, 204)
        _wait_for(lambda: "fresh" not in b.get("/readyz").json()["detail"]["loaded"], timeout=5)
        assert (
            b.post(
                "/v1/classify", json={"labelset": "fresh", "embeddings": [[1.0] * DIM]}
            ).status_code
            == 404
        )
        # The other replica's metrics say what it serves and how long versions took to arrive.
        metrics = b.get("/metrics").text
        served = _served_version(b, "shared")
        assert f'zsindex_loaded_version{{labelset="shared"}} {float(served or 0)}' in metrics
        assert 'zsindex_loaded_version{labelset="fresh"}' not in metrics  # deleted: dropped
        count = [line for line in metrics.splitlines() if line.startswith(LAG_COUNT)]
        assert count and float(count[0].split()[-1]) >= 6, count  # 1 preload + 5 swaps
        assert "zsindex_ready 1.0" in metrics
    print(f"notify propagation over 5 writes: max {max(lags) * 1000:.0f} ms")
    assert max(lags) < 2.0  # polling is off: without a notification it would never arrive


@pytest.mark.postgres
def test_stray_duplicate_and_unknown_notifications_change_nothing(
    two_replicas: tuple[Settings, list[BackgroundServer]], pg_url: str
) -> None:
    from sqlalchemy import create_engine

    from zsindex.store.notify import notify_change

    _, (_, other) = two_replicas
    with httpx.Client(base_url=other.base_url) as b:
        version = _served_version(b, "shared")
        engine = create_engine(pg_url)
        with engine.begin() as conn:
            for name in ("shared", "shared", "no-such-set", "x" * 300):
                notify_change(conn, name)
        engine.dispose()
        time.sleep(0.5)
        detail = b.get("/readyz").json()["detail"]
        assert set(detail["loaded"]) == {"shared"} and detail["loaded"]["shared"]["version"] == (
            version
        )
        assert _served_version(b, "shared") == version


@pytest.mark.postgres
def test_preload_names_only_those_and_reports_missing(pg_url: str, tmp_path: Path) -> None:
    settings = _settings(pg_url, tmp_path / "w", preload=("one", "nowhere"))
    _import(settings, "one", ["a", "b"], seed=1)
    _import(settings, "two", ["c", "d"], seed=2)
    app = create_app(settings, LocalBackend(settings), refresh_interval_s=0)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.base_url) as http:
        detail = wait_ready(http.get).json()["detail"]
        assert set(detail["loaded"]) == {"one"}
        assert detail["missing"] == ["nowhere"]
        # Not preloaded is still served: it loads on first use.
        assert _served_version(http, "two") == 1
        # A change to a set that is not preloaded and not loaded is not loaded eagerly.
        _import(settings, "three", ["e", "f"], seed=3)
        time.sleep(0.5)
        assert "three" not in http.get("/readyz").json()["detail"]["loaded"]


def test_sqlite_follows_by_polling(tmp_path: Path) -> None:
    settings = _settings(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "home")
    first = _import(settings, "polled", ["a", "b"], seed=1)
    app = create_app(settings, LocalBackend(settings), refresh_interval_s=0.1)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.base_url) as http:
        assert wait_ready(http.get).json()["detail"]["notifications"] == "off"
        assert _served_version(http, "polled") == first
        second = _import(settings, "polled", ["c", "d"], seed=2)
        _wait_for(lambda: _served_version(http, "polled") == second, timeout=5)
