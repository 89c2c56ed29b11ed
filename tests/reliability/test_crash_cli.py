"""C1: SIGKILL the CLI at random points while it registers label sets; nothing half-written.

Each round starts ``zsindex labels import`` of a large-enough matrix in a subprocess, kills it
with SIGKILL after a random delay, then checks the store: invariants hold, the label set is
either at its previous version or at a complete new one, and a registration the process
acknowledged (printed) before dying is present. The fast tier runs a few rounds per backend;
``make test-slow`` goes on until 200 SIGKILLs per backend have landed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zsindex.store.check import check_store
from zsindex.store.repository import Store

ROWS = 60_000
DIM = 64
SOAK_KILLS = 200  # per backend, as trusted stores publish for their crash tests


def _env(db_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(ZSINDEX_DATABASE_URL=db_url, ZSINDEX_HOME=str(home))
    return env


def _zsindex(*args: str) -> list[str]:
    return [sys.executable, "-c", "from zsindex.cli.main import main; main()", *args]


def _kill_rounds(
    db_url: str, home: Path, model: str, tmp: Path, rounds: int, kills: int = 0
) -> dict[str, int]:
    """``rounds`` rounds, or more until ``kills`` SIGKILLs landed (at most twice as many)."""
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    emb_path = tmp / "emb.npy"
    np.save(emb_path, matrix)
    names = tmp / "names.txt"
    names.write_text("\n".join(f"label {i}" for i in range(ROWS)) + "\n")
    env = _env(db_url, home)
    base = subprocess.run(
        _zsindex(
            "labels",
            "import",
            "crash",
            "--embeddings",
            str(emb_path),
            "--names",
            str(names),
            "--model",
            model,
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert base.returncode == 0, base.stderr
    store = Store(db_url)
    stats = {"kills": 0, "completed": 0, "acknowledged": 0}
    clock = random.Random(1)
    # Calibrate: how long a whole registration takes, so kills land anywhere inside it. The
    # fastest of two runs: a first run that pays for a cold page cache would stretch the sleep
    # window past most registrations and leave too few kills.
    timings = []
    for attempt in range(2):
        start = time.monotonic()
        subprocess.run(
            _zsindex(
                "labels",
                "import",
                f"calib{attempt}",
                "--embeddings",
                str(emb_path),
                "--names",
                str(names),
                "--model",
                model,
            ),
            env=env,
            capture_output=True,
            timeout=300,
            check=True,
        )
        timings.append(time.monotonic() - start)
    duration = min(timings)
    print(f"C1 calibration: {[round(t, 2) for t in timings]} s")
    done = 0
    while done < rounds or (stats["kills"] < kills and done < 2 * kills):
        done += 1
        before = store.current("crash").version
        proc = subprocess.Popen(
            _zsindex(
                "labels",
                "import",
                "crash",
                "--embeddings",
                str(emb_path),
                "--names",
                str(names),
                "--model",
                model,
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        try:
            proc.wait(timeout=clock.uniform(0.2, duration * 1.1))
            # Done before the kill: registrations run faster than calibrated (a quieter
            # machine), so later kills aim inside the shorter run.
            duration = min(duration, time.monotonic() - started)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        acknowledged = "imported crash version" in err
        if proc.returncode == -signal.SIGKILL:
            stats["kills"] += 1
        else:
            stats["completed"] += 1
        stats["acknowledged"] += acknowledged
        report = check_store(store)
        assert report.ok, report.problems
        after = store.current("crash")
        assert after.version in (before, before + 1)
        if acknowledged:
            assert after.version == before + 1
        assert after.num_labels == ROWS
        assert len(store.load_labels(after.version_id)) == ROWS
        assert store.load_embeddings(after.version_id).shape == (ROWS, DIM)
    store.close()
    return stats


@pytest.mark.parametrize("rounds", [4])
def test_sigkill_during_cli_registration(
    db_url: str, tmp_path: Path, random_model: str, rounds: int
) -> None:
    stats = _kill_rounds(db_url, tmp_path / "home", random_model, tmp_path, rounds)
    print(f"C1 CLI {db_url.split(':')[0]}: {stats}")
    assert stats["kills"] + stats["completed"] == rounds


@pytest.mark.slow
def test_sigkill_during_cli_registration_soak(
    db_url: str, tmp_path: Path, random_model: str
) -> None:
    stats = _kill_rounds(db_url, tmp_path / "home", random_model, tmp_path, 0, kills=SOAK_KILLS)
    print(f"C1 CLI {db_url.split(':')[0]}: {stats}")
    assert stats["kills"] >= SOAK_KILLS
