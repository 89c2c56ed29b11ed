"""The start-up commands of docker-compose.yml's ``api`` service, against the local PostgreSQL.

Docker cannot run here, so this runs exactly what the compose file runs
(``zsindex db upgrade && zsindex serve --host … --port …``) with the compose environment
pointed at a fresh PostgreSQL schema, and checks the service answers.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_compose_api_command_starts_the_service(pg_url: str, tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api = compose["services"]["api"]
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert "healthcheck" in compose["services"]["db"]
    [shell, flag, script] = api["command"]
    assert (shell, flag) == ("sh", "-c")
    port = _free_port()
    # The compose command, bound to loopback on a free port instead of 0.0.0.0:8000.
    script = script.replace("--host 0.0.0.0", "--host 127.0.0.1").replace(
        "--port 8000", f"--port {port}"
    )
    assert re.fullmatch(
        r"zsindex db upgrade && zsindex serve --host 127\.0\.0\.1 --port \d+", script
    ), script
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        ZSINDEX_DATABASE_URL=pg_url,
        ZSINDEX_HOME=str(tmp_path / "data"),
        ZSINDEX_MODEL="zsindex-tiny",
        ZSINDEX_API_KEYS="compose-test-key",
        ZSINDEX_DEVICE="cpu",
    )
    # Its own process group: `sh -c "a && b"` runs `zsindex serve` as a child, which
    # terminating the shell alone would leave running.
    proc = subprocess.Popen(
        ["sh", "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, shlex.quote(script)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/labelsets", timeout=5)
        assert listed.status_code == 200 and listed.json() == []
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        _wait_until_group_exits(proc.pid)


def _wait_until_group_exits(group: int, timeout: float = 30.0) -> None:
    """Wait for every process of ``group`` (the server under the shell) to exit, or kill it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
    raise AssertionError(f"the service did not stop within {timeout:.0f} s of SIGTERM")
