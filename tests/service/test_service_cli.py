"""``zsindex serve``: registered on the CLI, serves on loopback with the CLI's settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner
from svc_helpers import API_KEY, needs_local

from zsindex.service.server import free_port


def test_serve_help() -> None:
    from zsindex.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "--host" in result.output and "--port" in result.output
    assert "127.0.0.1" in result.output


@needs_local
def test_serve_runs_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(
        ZSINDEX_HOME=str(tmp_path / "home"),
        ZSINDEX_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        ZSINDEX_API_KEYS=API_KEY,
        ZSINDEX_DEVICE="cpu",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from zsindex.cli.main import main; main()",
            "serve",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, ready and ready.text
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{base}/v1/labelsets").json() == []
        r = httpx.post(f"{base}/v1/labelsets", json={"name": "x", "labels": ["a"]})
        assert r.status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    text = out.decode(errors="replace")
    assert f"serving on http://127.0.0.1:{port}" in text
    assert API_KEY not in text
