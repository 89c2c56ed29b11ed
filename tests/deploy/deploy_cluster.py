"""A local zsindex cluster: N ``zsindex serve`` replicas on loopback ports sharing one PostgreSQL
schema, behind a real HAProxy rendered from ``deploy/haproxy.cfg``.

The proxy config is the one docker-compose.yml mounts; ``render_haproxy_cfg`` (replica_setup.py)
changes only the two ``bind`` ports and turns the ``server-template`` (Docker DNS) into one
``server`` line per local replica, keeping every other setting (checks, retries). Replicas are
separate processes in sessions of their own, so SIGTERM / SIGKILL hit exactly one of them, and
:meth:`Cluster.close` kills every process group it started, whatever happened.

Importable by the tests beside it and by ``benchmarks/bench_propagation.py``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
from replica_setup import haproxy_binary, render_haproxy_cfg

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
API_KEY = "zs-deploy-key-5b1e7c9a3d2f4e60"
MODEL = "zsindex-tiny"
DIM = 128  # zsindex-tiny's embedding width
START_TIMEOUT_S = 90.0  # a replica imports the service stack; the 2-core VM is shared


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def unit_rows(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def import_body(names: Sequence[str], rows: np.ndarray) -> dict[str, Any]:
    """``PUT /v1/labelsets/{name}/embeddings``: a version without text encoding (fast)."""
    data = np.ascontiguousarray(rows, dtype="<f4").tobytes()
    return {
        "names": list(names),
        "model": MODEL,
        "shape": list(rows.shape),
        "data": base64.b64encode(data).decode("ascii"),
    }


@dataclass
class Replica:
    index: int  # 0-based; HAProxy calls it api{index + 1}
    port: int
    home: Path
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    started_at: float = 0.0
    groups: list[int] = field(default_factory=list)  # every process group ever started

    @property
    def name(self) -> str:
        return f"api{self.index + 1}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Cluster:
    """``with Cluster(pg_url, tmp_path) as c:`` — replicas started, ready, and UP in HAProxy."""

    def __init__(
        self,
        database_url: str,
        root: Path,
        replicas: int = 3,
        env: Mapping[str, str] | None = None,
        replica_env: Mapping[int, Mapping[str, str]] | None = None,
        wait_ready: Sequence[int] | None = None,
    ) -> None:
        self.database_url = database_url
        self.root = root
        self.n = replicas
        self.extra_env = dict(env or {})
        self.replica_env = {i: dict(e) for i, e in (replica_env or {}).items()}
        self.wait_ready_at_start = list(range(replicas)) if wait_ready is None else list(wait_ready)
        self.replicas: list[Replica] = []
        self.proxy: subprocess.Popen[bytes] | None = None
        self.proxy_port = self.stats_port = 0
        self.url = ""  # the proxy's, once started
        self.proxy_log = root / "haproxy.log"

    # -- life cycle -----------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            ZSINDEX_DATABASE_URL=self.database_url,
            ZSINDEX_API_KEYS=API_KEY,
            ZSINDEX_MODEL=MODEL,
            ZSINDEX_DEVICE="cpu",
            ZSINDEX_TORCH_THREADS="1",  # 3 replicas on 2 shared cores
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        zsindex = str(Path(sys.executable).parent / "zsindex")
        # As compose's one-shot `migrate` service: the schema at head before any replica starts.
        upgrade = subprocess.run(
            [zsindex, "db", "upgrade"],
            env={**self._base_env(), "ZSINDEX_HOME": str(self.root / "migrate")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upgrade.returncode == 0, upgrade.stderr
        for i in range(self.n):
            env = {**self._base_env(), "ZSINDEX_HOME": str(self.root / f"home{i}")}
            env.update(self.replica_env.get(i, {}))
            self.replicas.append(
                Replica(i, free_port(), self.root / f"home{i}", self.root / f"api{i + 1}.log", env)
            )
        for replica in self.replicas:
            self.start_replica(replica.index)
        for i in self.wait_ready_at_start:
            self.wait_ready(i)
        self.start_proxy()
        for i in self.wait_ready_at_start:
            self.wait_proxy_state(i, "UP")

    def start_proxy(self) -> None:
        binary = haproxy_binary()
        assert binary is not None, "haproxy is not installed (bash scripts/ensure_haproxy.sh)"
        self.proxy_port, self.stats_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.proxy_port}"
        cfg = render_haproxy_cfg(
            HAPROXY_CFG.read_text(),
            self.proxy_port,
            self.stats_port,
            [r.port for r in self.replicas],
        )
        path = self.root / "haproxy.cfg"
        path.write_text(cfg)
        check = subprocess.run([binary, "-c", "-q", "-f", str(path)], capture_output=True)
        assert check.returncode == 0, check.stderr.decode()
        log = self.proxy_log.open("ab")
        # -db: foreground, no daemon (the test owns the process).
        self.proxy = subprocess.Popen(
            [binary, "-db", "-f", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            assert self.proxy.poll() is None, self.proxy_log.read_text()[-2000:]
            try:
                self.server_states()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def start_replica(self, i: int) -> None:
        replica = self.replicas[i]
        assert replica.proc is None or replica.proc.poll() is not None, f"{replica.name} runs"
        if replica.log is not None:
            replica.log.close()
        replica.log = replica.log_path.open("ab")
        replica.log.write(f"--- start at {time.time():.3f}\n".encode())
        replica.log.flush()
        replica.proc = subprocess.Popen(
            ["zsindex", "serve", "--host", "127.0.0.1", "--port", str(replica.port)],
            env=replica.env,
            stdout=replica.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        replica.groups.append(replica.proc.pid)
        replica.started_at = time.monotonic()

    def close(self) -> None:
        """Kill every process group this cluster started (replicas first, then the proxy)."""
        for replica in self.replicas:
            for group in replica.groups:
                _kill_group(group)
            if replica.proc is not None:
                replica.proc.wait(10)
            if replica.log is not None:
                replica.log.close()
            # pytest shows this with a failure; tmp dirs are soon rotated away on a shared host.
            text = replica.log_path.read_text(errors="replace") if replica.log else ""
            if "Traceback" in text:
                print(f"--- {replica.name} logged a traceback:\n{text[-4000:]}")
        if self.proxy is not None:
            _kill_group(self.proxy.pid)
            self.proxy.wait(10)

    # -- faults ---------------------------------------------------------------------------------

    def proc(self, i: int) -> subprocess.Popen[bytes]:
        proc = self.replicas[i].proc
        assert proc is not None, f"replica {i} never started"
        return proc

    def sigterm(self, i: int) -> None:
        """SIGTERM to the server process alone, as Docker sends it to PID 1."""
        self.proc(i).send_signal(signal.SIGTERM)

    def sigkill(self, i: int) -> None:
        _kill_group(self.proc(i).pid)
        self.proc(i).wait(10)

    def wait_exit(self, i: int, timeout: float) -> int:
        try:
            return self.proc(i).wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.replicas[i].name} still running {timeout:.0f} s after SIGTERM\n"
                + self.log_tail(i)
            ) from None

    def restart(self, i: int, exit_timeout: float = 60.0) -> tuple[int, float, int]:
        """SIGTERM replica ``i``, wait for its exit, start it again (:meth:`start_and_watch`).

        Returns (exit code, seconds from SIGTERM to exit, answers seen while it was loading).
        """
        sent = time.monotonic()
        self.sigterm(i)
        code = self.wait_exit(i, exit_timeout)
        took = time.monotonic() - sent
        return code, took, self.start_and_watch(i)

    def start_and_watch(self, i: int, timeout: float = START_TIMEOUT_S) -> int:
        """Start replica ``i`` and watch it load: while its /readyz is not 200 it must have had
        no classify request (its own count) and HAProxy must not have it UP. Returns once HAProxy
        has it UP, with the number of not-ready answers seen (0: no loading window observed).
        """
        self.start_replica(i)
        name, deadline, loading = self.replicas[i].name, time.monotonic() + timeout, 0
        while True:
            assert self.proc(i).poll() is None, f"{name} exited\n{self.log_tail(i)}"
            # Observed first, then /readyz: a replica never goes from ready back to loading, so
            # a not_ready answer after them says they were taken while it was loading.
            status = self.server_states()[name]["status"]
            try:
                served = self.requests_seen(i, "/v1/classify")
                r = self.readyz(i)
            except httpx.HTTPError:  # not listening yet, or too busy to answer in time
                served, r = -1, None
            if r is not None and r.status_code == 200:
                break
            if r is not None:
                assert r.json()["code"] == "not_ready", r.text
                assert served == 0, f"{name} got {served} classify requests while loading"
                assert not status.startswith("UP"), f"{name} is {status} while loading"
                loading += 1
            assert time.monotonic() < deadline, f"{name} not ready\n{self.log_tail(i)}"
            time.sleep(0.05)
        self.wait_proxy_state(i, "UP")
        return loading

    # -- observation ----------------------------------------------------------------------------

    def readyz(self, i: int, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(f"{self.replicas[i].url}/readyz", timeout=timeout)

    def wait_ready(self, i: int, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc(i).poll() is None, (
                f"{self.replicas[i].name} exited\n{self.log_tail(i)}"
            )
            try:
                r = self.readyz(i)
                if r.status_code == 200:
                    return dict(r.json())
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.replicas[i].name} not ready\n{self.log_tail(i)}")
            time.sleep(0.1)

    def server_states(self) -> dict[str, dict[str, str]]:
        """HAProxy's stats per server of backend ``api``: status, stot, wretr, wredis, hrsp_5xx."""
        r = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5)
        r.raise_for_status()
        lines = r.text.splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "api" and row.get("svname") not in ("FRONTEND", "BACKEND"):
                out[row["svname"]] = row
        return out

    def wait_proxy_state(self, i: int, state: str, timeout: float = 30.0) -> float:
        """Wait until HAProxy reports replica ``i`` exactly ``state`` (UP, DOWN); seconds taken."""
        name, start = self.replicas[i].name, time.monotonic()
        while True:
            status = self.server_states()[name]["status"]
            if status == state:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{name} is {status!r} in HAProxy, not {state!r}")
            time.sleep(0.05)

    def requests_seen(self, i: int, route: str) -> int:
        """How many requests replica ``i`` itself counted on ``route`` (its /metrics)."""
        text = httpx.get(f"{self.replicas[i].url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("zsindex_http_requests_total{") and f'route="{route}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def log_tail(self, i: int, chars: int = 3000) -> str:
        return self.replicas[i].log_path.read_text(errors="replace")[-chars:]


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(group, signal.SIGKILL)
