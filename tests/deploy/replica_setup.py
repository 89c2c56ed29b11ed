"""Set-up of the replica tests (tests/deploy/conftest.py belongs to the packaging tests): a real
HAProxy, required under ``make test``, the proxy config rendered for local replicas, and a
PostgreSQL schema that lives as long as a module's cluster."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PROXY_BIND, STATS_BIND = "bind :8000", "bind :8404"


def haproxy_binary() -> str | None:
    found = shutil.which("haproxy")
    if found is None and Path("/usr/sbin/haproxy").is_file():
        found = "/usr/sbin/haproxy"  # Debian installs it outside a normal user's PATH
    return found


def render_haproxy_cfg(text: str, proxy_port: int, stats_port: int, ports: Sequence[int]) -> str:
    """``deploy/haproxy.cfg`` for local replicas on ``ports`` (servers api1..apiN, as in compose).

    Raises ValueError when the file no longer has exactly one of each line replaced, so a changed
    config cannot silently stop being the one the tests run.
    """
    out: list[str] = []
    seen = {PROXY_BIND: 0, STATS_BIND: 0, "server-template": 0}
    for line in text.splitlines():
        stripped = line.split("#", 1)[0].strip()
        indent = line[: len(line) - len(line.lstrip())]
        if stripped == PROXY_BIND:
            seen[PROXY_BIND] += 1
            out.append(f"{indent}bind 127.0.0.1:{proxy_port}")
        elif stripped == STATS_BIND:
            seen[STATS_BIND] += 1
            out.append(f"{indent}bind 127.0.0.1:{stats_port}")
        elif stripped.startswith("server-template "):
            seen["server-template"] += 1
            # server-template <prefix> <count> <fqdn>:<port> [param value ...]
            words = stripped.split()
            prefix, params = words[1], words[4:]
            kept: list[str] = []
            skip = False
            for word in params:
                if skip:
                    skip = False
                elif word in ("resolvers", "init-addr"):  # DNS only: each takes one value
                    skip = True
                else:
                    kept.append(word)
            for i, port in enumerate(ports, start=1):
                out.append(f"{indent}server {prefix}{i} 127.0.0.1:{port} {' '.join(kept)}".rstrip())
        else:
            out.append(line)
    if any(count != 1 for count in seen.values()):
        raise ValueError(f"deploy/haproxy.cfg changed shape: replaced lines {seen}")
    return "\n".join(out) + "\n"


def require_haproxy() -> str:
    """Debian's haproxy, or a skip (a failure under ``ZSINDEX_REQUIRE_HAPROXY=1``)."""
    found = haproxy_binary()
    if found is None:
        reason = "haproxy is not installed (bash scripts/ensure_haproxy.sh)"
        if os.environ.get("ZSINDEX_REQUIRE_HAPROXY") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@contextmanager
def pg_schema(admin_engine: Any) -> Iterator[str]:
    """A fresh PostgreSQL schema's URL (as tests/conftest.py's ``pg_url``), dropped after."""
    from sqlalchemy import text

    schema = f"zt_{uuid.uuid4().hex[:12]}"
    with admin_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    base = admin_engine.url.render_as_string(hide_password=False)
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin_engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


DRAIN_S = 3.0  # > HAProxy's fall 2 x inter 400ms + a slow check on a busy machine
SHUTDOWN_S = 10.0


@contextmanager
def replica_cluster(admin_engine: Any, directory: Path) -> Iterator[Any]:
    """3 replicas behind HAProxy on a fresh PostgreSQL schema, with the tests' drain settings
    (the module-scoped ``cluster`` fixture of the fast and the slow replica tests)."""
    from deploy_cluster import Cluster

    require_haproxy()
    env = {"ZSINDEX_DRAIN_S": str(DRAIN_S), "ZSINDEX_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)}
    with pg_schema(admin_engine) as url, Cluster(url, directory, env=env) as cluster:
        yield cluster
