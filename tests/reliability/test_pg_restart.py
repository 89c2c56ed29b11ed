"""C3: PostgreSQL stopped (``stop -m immediate``) during registrations and queries.

The same ``Client.local`` and the same HTTP app (real ``LocalBackend``, uvicorn on loopback)
live through the outage:

- registrations in flight when the server dies (held on the label set's row lock by a third
  connection, so they are certainly mid-transaction) fail with ``StoreError``
  (``store_unavailable``) / HTTP 503 — no hang, no other exception;
- reads while it is down (list, show, embeddings, classify of a label set not yet loaded,
  ``/readyz``, ``refresh()``) fail the same way, fast; a label set already loaded keeps
  classifying from memory;
- after PostgreSQL is back, the same client and server recover without a restart
  (``pool_pre_ping``), register and classify again, nothing half-written is visible, and the
  checker is clean.

PostgreSQL is always restarted in a ``finally`` and waited for with ``pg_isready``. Other test
runs share the server, so each outage lasts a few seconds. The slow variant repeats outages at
random moments under a steady mixed load.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from zsindex import Client
from zsindex.config import ServingConfig, Settings
from zsindex.errors import StoreError, ZsindexError
from zsindex.store.check import check_store
from zsindex.store.repository import Store

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir(),
        reason="needs the machine's pg_ctlcluster to stop and start the local PostgreSQL",
    ),
]

MODEL = "zsindex-tiny"
DIM = 128
API_KEY = "c3-test-key-0123456789abcdef"
DOWN_DEADLINE_S = 20.0  # an operation during the outage must fail within this


def _pg_version() -> str:
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".")])
    return versions[-1]


def _pg_ctl(action: str, *extra: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", action, *extra],
        check=False,
        capture_output=True,
        timeout=120,
    )


def _pg_ready() -> bool:
    return (
        subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False, timeout=10
        ).returncode
        == 0
    )


def _start_and_wait(timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not _pg_ready():
        _pg_ctl("start")
        if time.monotonic() > deadline:
            raise RuntimeError("PostgreSQL did not come back")
        time.sleep(0.5)


@contextmanager
def pg_outage() -> Iterator[Callable[[], None]]:
    """``with pg_outage() as stop:`` — ``stop()`` kills PostgreSQL (immediate mode); leaving the
    block always starts it again and waits until it accepts connections."""
    stopped: list[float] = []

    def stop() -> None:
        stopped.append(time.monotonic())
        _pg_ctl("stop", "-m", "immediate")
        assert not _pg_ready(), "PostgreSQL did not stop"

    try:
        yield stop
    finally:
        _start_and_wait()
        if stopped:
            print(f"PostgreSQL was down for {time.monotonic() - stopped[0]:.1f} s")


def _unit(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _expect_store_error(fn: Callable[[], Any]) -> StoreError:
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        fn()
    assert time.monotonic() - start < DOWN_DEADLINE_S
    assert info.value.code in ("store_unavailable", "schema_out_of_date")
    assert info.value.http_status == 503
    assert "\n" not in info.value.message
    return info.value


class Worker(threading.Thread):
    """Runs ``fn`` once in a thread and keeps its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.elapsed = 0.0

    def run(self) -> None:
        start = time.monotonic()
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc
        self.elapsed = time.monotonic() - start


@pytest.fixture
def world(pg_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    from zsindex.local import LocalBackend
    from zsindex.service.app import create_app
    from zsindex.service.server import BackgroundServer

    settings = Settings(
        home=tmp_path / "home",
        database_url=pg_url,
        model=MODEL,
        pretrained=None,
        device="cpu",
        api_keys=(API_KEY,),
    )
    client = Client.local(settings=settings)
    base = {
        "loaded": client.import_labelset("loaded", _unit(5, 1), list("abcde"), model=MODEL),
        "cold": client.import_labelset("cold", _unit(4, 2), list("wxyz"), model=MODEL),
        "held": client.import_labelset("held", _unit(3, 3), list("pqr"), model=MODEL),
        "web": client.add_labelset("web", ["cat", "dog"], model=MODEL, templates=["{}"]),
    }
    client.classify(embeddings=_unit(1, 9), labelset="loaded")  # now in memory
    # The server preloads "loaded" only: "cold" stays unloaded, so reading it needs the store.
    served = replace(settings, serving=ServingConfig(preload=("loaded",)))
    app = create_app(served, LocalBackend(served), refresh_interval_s=0.5)
    server = BackgroundServer(app).start()
    http = httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    )
    r = http.post("/v1/classify", json={"labelset": "loaded", "embeddings": _unit(1, 9).tolist()})
    assert r.status_code == 200, r.text
    try:
        yield {"settings": settings, "client": client, "http": http, "base": base, "url": pg_url}
    finally:
        if not _pg_ready():  # never leave the shared server down
            _start_and_wait()
        http.close()
        server.stop()
        client.close()


def _hold_rows(url: str, names: list[str]) -> tuple[Any, Any, int]:
    """A third connection that locks the label sets' rows, so registrations of them block
    inside their write transaction (after they have started writing)."""
    engine = create_engine(url)
    conn = engine.connect()
    conn.begin()
    rows = conn.execute(
        text("SELECT id FROM labelsets WHERE name = ANY(:names) FOR UPDATE"), {"names": names}
    ).all()
    assert len(rows) == len(names)
    pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    return engine, conn, pid


def _wait_for_blocked(engine: Any, holder_pid: int, at_least: int, timeout: float = 60.0) -> None:
    """Wait until ``at_least`` sessions wait on the holder's locks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            blocked = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": holder_pid},
            ).scalar_one()
        if blocked >= at_least:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} registrations reached the row lock")


def _check_recovered(world: dict[str, Any], expect_versions: dict[str, int]) -> None:
    client: Client = world["client"]
    http: httpx.Client = world["http"]
    # The same client and server, without a restart.
    listed = {i.name: i.version for i in client.labelsets()}
    for name, version in expect_versions.items():
        assert listed[name] == version, (name, listed)
    assert client.classify(embeddings=_unit(1, 5), labelset="cold")[0].version == listed["cold"]
    info = client.import_labelset("held", _unit(6, 11), list("pqrstu"), model=MODEL)
    assert info.version == expect_versions["held"] + 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the refresh loop reconnects on its own
        if http.get("/readyz").status_code == 200:
            break
        time.sleep(0.2)
    assert http.get("/readyz").status_code == 200
    r = http.post("/v1/labelsets", json={"name": "web", "labels": ["cat", "dog", "bird"]})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == expect_versions["web"] + 1
    r = http.post("/v1/classify", json={"labelset": "held", "embeddings": _unit(2, 4).tolist()})
    assert r.status_code == 200, r.text
    assert {p["label"] for p in r.json()[0]["predictions"]} <= set("pqrstu")
    assert r.json()[0]["version"] == info.version
    store = Store(world["url"])
    try:
        report = check_store(store, strict=True)
        assert report.ok, report.problems
    finally:
        store.close()


def test_outage_during_registration_and_queries(world: dict[str, Any]) -> None:
    client: Client = world["client"]
    http: httpx.Client = world["http"]
    base = world["base"]
    lock_engine, lock_conn, holder = _hold_rows(world["url"], ["held", "web"])
    try:
        in_process = Worker(
            lambda: client.import_labelset(
                "held", _unit(3000, 7), [f"n{i}" for i in range(3000)], model=MODEL
            )
        )
        over_http = Worker(
            lambda: http.post("/v1/labelsets", json={"name": "web", "labels": ["cat", "cow"]})
        )
        in_process.start()
        over_http.start()
        _wait_for_blocked(lock_engine, holder, 2)
        with pg_outage() as stop:
            stop()
            in_process.join(DOWN_DEADLINE_S)
            over_http.join(DOWN_DEADLINE_S)
            assert not in_process.is_alive() and not over_http.is_alive(), "a registration hung"
            # The in-process registration: a clean StoreError.
            assert isinstance(in_process.error, StoreError), repr(in_process.error)
            assert in_process.error.code == "store_unavailable"
            # Over HTTP: 503 store_unavailable.
            r = over_http.result
            assert over_http.error is None, repr(over_http.error)
            assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text
            assert "Retry-After" in r.headers
            # Queries while it is down: the in-process client ...
            _expect_store_error(client.labelsets)
            _expect_store_error(lambda: client.labelset("cold"))
            _expect_store_error(lambda: client.embeddings("cold"))
            _expect_store_error(lambda: client.classify(embeddings=_unit(1, 3), labelset="cold"))
            _expect_store_error(
                lambda: client.import_labelset("new", _unit(2, 3), ["a", "b"], model=MODEL)
            )
            _expect_store_error(client.backend.refresh)  # type: ignore[attr-defined]
            # ... a label set already in memory still answers, with its version.
            [res] = client.classify(embeddings=_unit(1, 3), labelset="loaded")
            assert res.version == base["loaded"].version
            # ... and the service: 503 with the error shape, never 500, never a hang.
            for method, path, body in (
                ("GET", "/v1/labelsets", None),
                ("GET", "/v1/labelsets/cold", None),
                ("DELETE", "/v1/labelsets/cold", None),
                ("POST", "/v1/labelsets", {"name": "new", "labels": ["a"]}),
                ("POST", "/v1/classify", {"labelset": "cold", "embeddings": _unit(1, 3).tolist()}),
            ):
                start = time.monotonic()
                r = http.request(method, path, json=body)
                assert time.monotonic() - start < DOWN_DEADLINE_S
                assert r.status_code == 503, (method, path, r.status_code, r.text)
                assert r.json()["code"] == "store_unavailable", r.text
            assert http.get("/readyz").status_code == 503
            assert http.get("/healthz").status_code == 200
            r = http.post(
                "/v1/classify", json={"labelset": "loaded", "embeddings": _unit(1, 3).tolist()}
            )
            assert r.status_code in (200, 503), r.text
    finally:
        with suppress(Exception):
            lock_conn.close()
        lock_engine.dispose()
    # Nothing of the failed registrations is visible: both label sets kept their versions.
    _check_recovered(
        world,
        {n: base[n].version for n in ("loaded", "cold", "held", "web")},
    )


def _mixed_load(world: dict[str, Any], stop_at: float, results: Counter[str]) -> None:
    client: Client = world["client"]
    http: httpx.Client = world["http"]
    rng = random.Random(threading.get_ident())
    i = 0
    while time.monotonic() < stop_at:
        i += 1
        op = rng.randrange(4)
        try:
            if op == 0:
                client.labelsets()
            elif op == 1:
                client.import_labelset(
                    "churn", _unit(200, i), [f"c{j}" for j in range(200)], model=MODEL
                )
            elif op == 2:
                r = http.get("/v1/labelsets")
                results[f"http_{r.status_code}"] += 1
                assert r.status_code in (200, 503), r.text
                continue
            else:
                r = http.post("/v1/labelsets", json={"name": "web", "labels": [f"w{i % 3}", "dog"]})
                results[f"http_{r.status_code}"] += 1
                assert r.status_code in (201, 503), r.text
                continue
            results["ok"] += 1
        except StoreError:
            results["store_error"] += 1
        except ZsindexError as exc:
            results[f"other:{exc.code}"] += 1
        except Exception as exc:  # anything else fails the test
            results[f"crash:{type(exc).__name__}"] += 1


@pytest.mark.slow
def test_repeated_outages_under_load(world: dict[str, Any]) -> None:
    rng = random.Random(3)
    totals: Counter[str] = Counter()
    outages = 6
    for _ in range(outages):
        results: Counter[str] = Counter()
        stop_at = time.monotonic() + 3.0 + rng.uniform(2, 5)
        threads = [
            threading.Thread(target=_mixed_load, args=(world, stop_at, results), daemon=True)
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        with pg_outage() as stop:
            time.sleep(rng.uniform(0.2, 2.0))
            stop()
            time.sleep(rng.uniform(0.5, 2.0))
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a worker hung"
        assert not [k for k in results if k.startswith(("crash", "other"))], results
        totals.update(results)
        store = Store(world["url"])
        try:
            report = check_store(store, strict=True)
            assert report.ok, report.problems
        finally:
            store.close()
    print(f"C3 {outages} outages under load: {dict(totals)}")
    assert totals["store_error"] + totals["http_503"] > 0
    current = world["client"].labelset("churn")
    assert current.num_labels == 200
