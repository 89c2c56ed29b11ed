"""docker-compose.yml and deploy/haproxy.cfg: the structure of the deployment, and its start-up
commands run for real against the local PostgreSQL.

Docker cannot run here, so this checks what compose would do: ``db`` with a healthcheck, the
one-shot ``migrate`` before any replica, 3 ``api`` replicas on the image's own CMD with a stop
grace period longer than their drain, and ``proxy`` (HAProxy) mounting the one proxy config that
finds the replicas through Docker's DNS. The proxy config is checked by Debian's haproxy
(``haproxy -c``), and the migrate command followed by the Dockerfile's CMD, pointed at a fresh
PostgreSQL schema on loopback, serves a ready service. tests/deploy/ runs that config in front
of 3 local replicas.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROXY_CFG_IN_IMAGE = "/usr/local/etc/haproxy/haproxy.cfg"


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "m" else 1)


def _default(env: dict[str, str], key: str) -> str:
    """The value compose gives ``key`` when the host leaves it unset (``${KEY:-default}``)."""
    value = env[key]
    match = re.fullmatch(r"\$\{(\w+):-(.*)\}", value)
    return match[2] if match else value


def _pinned(image: str, name: str) -> None:
    repo, _, tag = image.partition(":")
    assert repo == name, image
    assert re.fullmatch(r"\d+(\.\d+)+", tag), f"{image}: pin a version, not {tag or 'latest'!r}"


def test_compose_services_and_their_order() -> None:
    services = _compose()["services"]
    assert set(services) == {"db", "migrate", "api", "proxy"}
    db, migrate, api, proxy = (services[k] for k in ("db", "migrate", "api", "proxy"))

    _pinned(db["image"], "postgres")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])

    assert migrate["command"] == ["zsindex", "db", "upgrade"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"

    assert "command" not in api and "entrypoint" not in api  # the image's CMD
    assert api["deploy"]["replicas"] == 3
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "ports" not in api  # only the proxy is published
    # The image's HEALTHCHECK (GET /readyz) is the one health check: compose does not repeat it.
    assert "healthcheck" not in api
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile
    env = api["environment"]
    assert env == migrate["environment"]
    assert env["ZSINDEX_DATABASE_URL"].startswith("postgresql+psycopg://")
    bound = float(_default(env, "ZSINDEX_DRAIN_S")) + float(
        _default(env, "ZSINDEX_SHUTDOWN_TIMEOUT_S")
    )
    assert _seconds(api["stop_grace_period"]) > bound
    config_text = (ROOT / "zsindex" / "config.py").read_text()
    for key in env:  # a misspelt setting would be silently ignored
        assert f'"{key}"' in config_text, f"{key} is not read by zsindex/config.py"

    _pinned(proxy["image"], "haproxy")
    assert f"./deploy/haproxy.cfg:{PROXY_CFG_IN_IMAGE}:ro" in proxy["volumes"]
    assert "127.0.0.1:8000:8000" in proxy["ports"]


def test_proxy_config_finds_every_replica_through_docker_dns() -> None:
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    replicas = _compose()["services"]["api"]["deploy"]["replicas"]
    [template] = re.findall(r"^\s*server-template (.+)$", cfg, flags=re.M)
    prefix, count, address, *params = template.split()
    assert (prefix, int(count), address) == ("api", replicas, "api:8000")
    assert params[params.index("resolvers") + 1] == "docker"
    assert re.search(r"^resolvers docker\n\s+nameserver \w+ 127\.0\.0\.11:53$", cfg, flags=re.M)
    assert re.search(r"^\s*http-check send meth GET uri /readyz$", cfg, flags=re.M)
    assert re.search(r"^\s*bind :8000$", cfg, flags=re.M)


def test_proxy_config_is_valid_haproxy() -> None:
    haproxy = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None
    )
    if haproxy is None:
        if os.environ.get("ZSINDEX_REQUIRE_HAPROXY") == "1":
            pytest.fail("haproxy is not installed (bash scripts/ensure_haproxy.sh)")
        pytest.skip("haproxy is not installed (bash scripts/ensure_haproxy.sh)")
    check = subprocess.run(
        [haproxy, "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def _dockerfile_cmd() -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    [cmd] = [line for line in lines if line.startswith("CMD ")]
    value = json.loads(cmd[4:])  # exec form: the server is PID 1 and gets SIGTERM itself
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), cmd
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.postgres
def test_migrate_then_image_cmd_serves_a_ready_service(pg_url: str, tmp_path: Path) -> None:
    services = _compose()["services"]
    cmd = _dockerfile_cmd()
    assert cmd == ["zsindex", "serve", "--host", "0.0.0.0", "--port", "8000"]
    port = _free_port()
    cmd[cmd.index("--host") + 1] = "127.0.0.1"  # loopback and a free port instead
    cmd[cmd.index("--port") + 1] = str(port)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        ZSINDEX_DATABASE_URL=pg_url,
        ZSINDEX_HOME=str(tmp_path / "data"),
        ZSINDEX_MODEL="zsindex-tiny",
        ZSINDEX_API_KEYS="compose-test-key",
        ZSINDEX_DEVICE="cpu",
        ZSINDEX_DRAIN_S="0.5",  # nothing routes to it: no need to wait the default 5 s
    )
    migrate = subprocess.run(
        services["migrate"]["command"], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
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
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/labelsets", timeout=5)
        assert listed.status_code == 200 and listed.json() == []
        # Docker stops a container with SIGTERM to PID 1: the server exits cleanly by itself.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
