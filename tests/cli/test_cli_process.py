"""The CLI as its own process: exit codes and output survive the fast exit (no module teardown)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

ENTRY = "from zsindex.cli.main import main; main()"  # what the console script runs


def _zsindex(
    home: Path, *args: str, stdout: IO[Any] | int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZSINDEX_HOME": str(home), "ZSINDEX_DEVICE": "cpu"}
    env["ZSINDEX_MODEL"] = "zsindex-tiny"
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )


def test_exit_codes_and_output_of_a_real_process(tmp_path: Path) -> None:
    ok = _zsindex(tmp_path, "labels", "add", "pets", "--labels", "dog,cat", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["num_labels"] == 2
    listed = _zsindex(tmp_path, "labels", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["name"] == "pets"
    # The store was closed cleanly: SQLite checkpointed and removed its write-ahead log.
    assert not (tmp_path / "zsindex.sqlite3-wal").exists()
    user_error = _zsindex(tmp_path, "labels", "show", "nope")
    assert user_error.returncode == 1 and user_error.stderr.startswith("error: ")
    assert _zsindex(tmp_path, "labels", "add", "x").returncode == 2  # usage error


def test_output_that_cannot_be_written_is_an_error(tmp_path: Path) -> None:
    assert _zsindex(tmp_path, "labels", "add", "pets", "--labels", "dog").returncode == 0
    with open("/dev/full", "w") as full:  # every write fails with ENOSPC
        run = _zsindex(tmp_path, "labels", "list", "--json", stdout=full)
    assert run.returncode != 0
    assert "No space left on device" in run.stderr


def test_strict_truncation_fails_cleanly_with_the_worker_running(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("dog\n" + "very " * 90 + "long\n")
    args = ["labels", "add", "long", "--file", str(labels), "--templates", "photo", "--strict"]
    run = _zsindex(tmp_path, *args)
    assert run.returncode == 1
    assert run.stderr.startswith("error: 1 prompt(s) exceed the model's context")
    assert "Traceback" not in run.stderr
    listed = _zsindex(tmp_path, "labels", "list", "--json")
    assert json.loads(listed.stdout) == []  # nothing written
