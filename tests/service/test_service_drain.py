"""``zsindex serve`` as a process: ready only when warm, drained on SIGTERM, clear start errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from svc_helpers import API_KEY, jpeg_bytes

from zsindex import Client
from zsindex.config import Settings
from zsindex.service.server import free_port

DRAIN_S = 2.0


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(
        ZSINDEX_HOME=str(tmp_path / "home"),
        ZSINDEX_DATABASE_URL=f"sqlite:///{tmp_path / 'drain.sqlite3'}",
        ZSINDEX_API_KEYS=API_KEY,
        ZSINDEX_DEVICE="cpu",
        ZSINDEX_MODEL="zsindex-tiny",
        ZSINDEX_DRAIN_S=str(DRAIN_S),
        ZSINDEX_SHUTDOWN_TIMEOUT_S="20",
    )
    env.update(extra)
    return env


def _serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from zsindex.cli.main import main; main()", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = _env(tmp_path)
    settings = Settings(
        home=tmp_path / "home",
        database_url=env["ZSINDEX_DATABASE_URL"],
        model="zsindex-tiny",
        pretrained=None,
        device="cpu",
    )
    with Client.local(settings=settings) as client:
        client.add_labelset("shapes", ["circle", "square", "triangle"], templates=["{}"])
    port = free_port()
    proc = _serve(env, "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        codes = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(f"{base}/readyz", timeout=2)
                codes.append(r.json().get("code", "ready"))
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        assert codes and codes[-1] == "ready", codes
        # Anything before ready was "not_ready" (loading), never another answer.
        assert set(codes[:-1]) <= {"not_ready"}, codes
        loaded = httpx.get(f"{base}/readyz").json()["detail"]["loaded"]
        assert set(loaded) == {"shapes"}
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)


def test_sigterm_drains_then_finishes_in_flight_and_exits_0(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base = served
    images = [
        ("images", (f"{i}.jpg", jpeg_bytes(size=(1024, 768)), "image/jpeg")) for i in range(48)
    ]
    slow: dict[str, object] = {}

    def in_flight() -> None:
        r = httpx.post(f"{base}/v1/classify", data={"labelset": "shapes"}, files=images, timeout=60)
        slow["status"], slow["n"] = r.status_code, len(r.json())

    thread = threading.Thread(target=in_flight)
    thread.start()
    time.sleep(0.2)  # the request is being served
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # /readyz turns 503 at once, saying why.
    r = httpx.get(f"{base}/readyz", timeout=5)
    assert r.status_code == 503 and r.json()["code"] == "draining", r.text
    assert time.monotonic() - signalled < 1.0
    # During the drain new requests are still answered (the balancer may not know yet).
    quick = {"labelset": "shapes", "embeddings": [[1.0] * 128]}
    during = httpx.post(f"{base}/v1/classify", json=quick, timeout=10)
    assert during.status_code == 200
    assert during.headers["connection"] == "close"  # no keep-alive reuse of a draining replica
    assert time.monotonic() - signalled < DRAIN_S
    # After the drain, new connections are refused; the request in flight still completes.
    refused_at = None
    while time.monotonic() - signalled < DRAIN_S + 25:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
        except httpx.ConnectError:
            refused_at = time.monotonic() - signalled
            break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    assert refused_at is not None and refused_at >= DRAIN_S - 0.1, refused_at
    thread.join(60)
    assert slow == {"status": 200, "n": 48}
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - signalled < DRAIN_S + 20  # the shutdown bound


def test_a_second_sigterm_stops_at_once(served: tuple[subprocess.Popen[str], str]) -> None:
    proc, _ = served
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert time.monotonic() - signalled < DRAIN_S  # did not wait for the rest of the drain
    assert proc.returncode == 0


def test_busy_port_and_bad_host_are_one_line_errors(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out, _ = _serve(_env(tmp_path), "--port", str(port)).communicate(timeout=60)
        proc_lines = [line for line in out.splitlines() if line.strip()]
    assert proc_lines == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; choose another "
        "--port or stop what holds it"
    ], out
    bad = _serve(_env(tmp_path), "--host", "no-such-host.invalid", "--port", "8000")
    out, _ = bad.communicate(timeout=60)
    assert bad.returncode == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "no-such-host.invalid:8000" in lines[0], out
    assert "does not resolve" in lines[0] and "serving on" not in out
