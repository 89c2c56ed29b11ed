"""B1 on the local engine: a batch job SIGKILLed mid-run resumes on rerun, and its output holds
every input exactly once, equal to an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from batch_support import Archive

from zsindex.config import Settings


def _job(store: Settings, inputs: list[str], out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ZSINDEX_HOME": str(store.home), "ZSINDEX_DEVICE": "cpu"}
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "zsindex"),
            "batch",
            *inputs,
            "--labels",
            "shapes",
            "--labels",
            "colors:k=2",
            "--output",
            str(out),
            "--part-size",
            "2",
            "--save-embeddings",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _committed(out: Path) -> int:
    folder = out / "predictions"
    return len(list(folder.glob("part-*.parquet"))) if folder.is_dir() else 0


def _kill_and_resume(
    archive: Archive, store: Settings, tmp_path: Path, read_predictions: Any, kills: int
) -> int:
    """Kill the job ``kills`` times, each after it committed two more parts, then let it
    finish; return how many kills landed before the job was done."""
    inputs = [str(archive.folder), *map(str, archive.shards)]
    images = archive.images + 28
    reference = tmp_path / "reference"
    assert _job(store, inputs, reference).wait(timeout=300) == 3  # hostile files: exit 3
    landed = 0
    out = tmp_path / "out"
    for _ in range(kills):
        proc = _job(store, inputs, out)
        start = _committed(out)
        deadline = time.monotonic() + 120
        while _committed(out) < start + 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the job committed nothing for 120 s"
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        proc.wait(timeout=60)
        if proc.returncode == 3:  # it finished before the kill: start over, keep killing
            for part in (out / "predictions").glob("part-*.parquet"):
                if int(part.stem.split("-")[1]) % 3:
                    part.unlink()  # as if those parts had never been committed
    final = _job(store, inputs, out)
    assert final.wait(timeout=300) == 3, final.stderr.read() if final.stderr else ""
    rows = read_predictions(out)
    keys = [(r["labelset"], r["input_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * images
    assert rows == read_predictions(reference)
    import pyarrow.dataset as ds

    emb = ds.dataset(out / "embeddings", format="parquet").to_table()
    assert sorted(emb.column("input_index").to_pylist()) == list(range(images))
    assert not [p for p in out.rglob(".*.tmp")], "a temporary part was left visible"
    return landed


def test_killed_local_job_resumes_exactly_once(
    archive: Archive, store: Settings, tmp_path: Path, read_predictions: Any
) -> None:
    assert _kill_and_resume(archive, store, tmp_path, read_predictions, kills=3) >= 2


@pytest.mark.slow
def test_killed_local_job_soak(
    archive: Archive, store: Settings, tmp_path: Path, read_predictions: Any
) -> None:
    """B1 soak: SOAK_KILLS (default 25) kills of one local job, every output exactly once."""
    kills = int(os.environ.get("SOAK_KILLS", "25"))
    landed = _kill_and_resume(archive, store, tmp_path, read_predictions, kills=kills)
    print(f"batch local soak: {landed} of {kills} kills landed mid-job")
    assert landed >= kills // 2
