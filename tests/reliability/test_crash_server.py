"""C1 (server): SIGKILL ``zsindex serve`` at random points while it registers label sets.

Each round starts ``zsindex serve`` (a subprocess on 127.0.0.1 and a free port, with
``ZSINDEX_API_KEYS``), streams ``POST /v1/labelsets`` registrations of one name — each a
different 600–1000-label subset of a vocabulary whose text embeddings are already in the store's
cache, so a fresh server registers without loading the model — and SIGKILLs the server after a
random delay (sometimes before it is even ready). The next server start then checks:

- the invariant checker is clean (``check_store(strict=True)``; ``zsindex db check --strict`` at
  the end);
- every acknowledged (HTTP 201) registration is present and complete: its version exists, is
  ready, and holds exactly the labels sent, with one embedding row each;
- the current version is the last acknowledged one, or the one in flight when the server died
  (then complete too) — never a half-written one; versions are contiguous;
- the restarted server serves the current version (classify answers name it and only its labels).

Runs on SQLite and PostgreSQL. Fast tier: 3 kills per backend; ``slow``: 200 per backend.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from zsindex import Client
from zsindex.service.server import free_port
from zsindex.store.check import check_store
from zsindex.store.repository import Store

MODEL = "zsindex-tiny"
API_KEY = "c1-server-key-0123456789abcdef"
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]
SOAK_KILLS = 200  # per backend, as trusted stores publish for their crash tests
VOCAB = [f"object {i} of kind {i % 17}" for i in range(1000)]
NAME = "crash"


@dataclass
class Round:
    sent: list[tuple[str, ...]] = field(default_factory=list)  # payloads, in order
    acked: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)  # (version, payload)
    in_flight: tuple[str, ...] | None = None
    killed_before_ready: bool = False
    errors: list[str] = field(default_factory=list)


def _env(db_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(
        ZSINDEX_DATABASE_URL=db_url,
        ZSINDEX_HOME=str(home),
        ZSINDEX_API_KEYS=API_KEY,
        ZSINDEX_DEVICE="cpu",
        ZSINDEX_MODEL=MODEL,
    )
    return env


class Server:
    """``zsindex serve`` in a subprocess."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from zsindex.cli.main import main; main()",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited with {self.proc.returncode}"
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not become ready")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()


def _writer(base_url: str, rnd: Round, rng: random.Random, stop: threading.Event) -> None:
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120
    ) as http:
        while not stop.is_set():
            payload = tuple(rng.sample(VOCAB, rng.randint(600, 1000)))
            rnd.sent.append(payload)
            rnd.in_flight = payload
            try:
                r = http.post(
                    "/v1/labelsets",
                    json={"name": NAME, "labels": list(payload), "templates": TEMPLATES},
                )
            except httpx.HTTPError:
                return  # the server died: this one is unacknowledged
            rnd.in_flight = None
            if r.status_code != 201:
                rnd.errors.append(f"{r.status_code} {r.text[:200]}")
                return
            rnd.acked.append((int(r.json()["version"]), payload))


def _check(db_url: str, base_url: str, acked: list[tuple[int, tuple[str, ...]]], rnd: Round) -> str:
    """The state after a kill (the next server is up)."""
    store = Store(db_url)
    try:
        report = check_store(store, strict=True)
        assert report.ok, report.problems
        for version, payload in acked:
            record = store.version(NAME, version)
            assert record.status == "ready" and record.num_labels == len(payload)
            assert tuple(store.load_labels(record.version_id).names) == payload, version
            assert store.load_embeddings(record.version_id).shape == (len(payload), 128)
        history = store.history(NAME)
        numbers = [v.version for v in history]
        assert numbers == list(range(1, len(numbers) + 1)), numbers
        current = store.current(NAME)
        assert current.version == numbers[-1]
        last_acked = max(v for v, _ in acked)
        labels = tuple(store.load_labels(current.version_id).names)
        if current.version == last_acked:
            outcome = "last acknowledged"
        else:
            # Committed, but the answer never arrived: it must be the request in flight.
            assert current.version == last_acked + 1, (current.version, last_acked)
            assert rnd.in_flight is not None and labels == rnd.in_flight
            outcome = "in-flight committed"
    finally:
        store.close()
    # The restarted server serves that version, and only its labels.
    query = np.random.default_rng(len(acked)).standard_normal((1, 128)).astype(np.float32)
    r = httpx.post(
        f"{base_url}/v1/classify",
        json={"labelset": NAME, "k": 5, "embeddings": query.tolist()},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    [result] = r.json()
    assert result["version"] == current.version
    assert {p["label"] for p in result["predictions"]} <= set(labels)
    return outcome


def _kill_rounds(db_url: str, tmp_path: Path, rounds: int, seed: int) -> dict[str, Any]:
    home = tmp_path / "home"
    env = _env(db_url, home)
    log = tmp_path / "server.log"
    # Fill the store's text-embedding cache for the whole vocabulary (and register version 1).
    with Client.local(database_url=db_url, home=home, device="cpu") as c:
        first = tuple(VOCAB[:800])
        info = c.add_labelset(NAME, list(first), templates=TEMPLATES, model=MODEL)
        c.add_labelset("vocab", VOCAB, templates=TEMPLATES, model=MODEL)
    acked: list[tuple[int, tuple[str, ...]]] = [(info.version, first)]
    rng = random.Random(seed)
    stats = {"kills": 0, "killed_before_ready": 0, "acknowledged": 0, "in_flight_lost": 0}
    stats["in_flight_committed"] = 0
    server = Server(env, log)
    try:
        for _ in range(rounds):
            rnd = Round()
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0.0, 1.5))  # somewhere in start-up
                rnd.killed_before_ready = True
            else:
                server.wait_ready()
                stop = threading.Event()
                writer = threading.Thread(
                    target=_writer, args=(server.base_url, rnd, rng, stop), daemon=True
                )
                writer.start()
                time.sleep(rng.uniform(0.05, 2.5))
                stop.set()
            server.kill()
            stats["kills"] += 1
            stats["killed_before_ready"] += rnd.killed_before_ready
            if not rnd.killed_before_ready:
                writer.join(60)
                assert not writer.is_alive(), "the writer hung after the kill"
            assert not rnd.errors, rnd.errors
            acked.extend(rnd.acked)
            stats["acknowledged"] += len(rnd.acked)
            server = Server(env, log)
            server.wait_ready()
            outcome = _check(db_url, server.base_url, acked, rnd)
            if outcome == "in-flight committed":
                stats["in_flight_committed"] += 1
                acked.append((acked[-1][0] + 1, rnd.in_flight or ()))
            elif rnd.in_flight is not None:
                stats["in_flight_lost"] += 1
    finally:
        server.kill()
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "from zsindex.cli.main import main; main()",
            "db",
            "check",
            "--strict",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert API_KEY not in text
    return stats


def test_sigkill_server_during_registration(db_url: str, tmp_path: Path) -> None:
    stats = _kill_rounds(db_url, tmp_path, rounds=3, seed=11)
    print(f"C1 server {db_url.split(':')[0]}: {stats}")
    assert stats["kills"] == 3


@pytest.mark.slow
def test_sigkill_server_during_registration_soak(db_url: str, tmp_path: Path) -> None:
    stats = _kill_rounds(db_url, tmp_path, rounds=SOAK_KILLS, seed=5)
    print(f"C1 server {db_url.split(':')[0]}: {stats}")
    assert stats["kills"] == SOAK_KILLS
    assert stats["acknowledged"] > 0
