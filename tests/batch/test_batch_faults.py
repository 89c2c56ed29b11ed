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


def test_killed_local_job_resumes_exactly_once(
    archive: Archive, store: Settings, tmp_path: Path, read_predictions: Any
) -> None:
    inputs = [str(archive.folder), *map(str, archive.shards)]
    total_parts = -(-(archive.images + 28) // 2)
    reference = tmp_path / "reference"
    assert _job(store, inputs, reference).wait(timeout=300) == 3  # hostile files: exit 3
    kills = 0
    out = tmp_path / "out"
    for _ in range(3):  # kill the job three times at different points, then let it finish
        proc = _job(store, inputs, out)
        start = _committed(out)
        deadline = time.monotonic() + 120
        while _committed(out) < start + 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the job committed nothing for 120 s"
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        assert _committed(out) < total_parts or proc.returncode == 3
    assert kills >= 2, "the job finished before it could be killed"
    final = _job(store, inputs, out)
    assert final.wait(timeout=300) == 3, final.stderr.read() if final.stderr else ""
    rows = read_predictions(out)
    keys = [(r["labelset"], r["input_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * (archive.images + 28)
    assert rows == read_predictions(reference)
    import pyarrow.dataset as ds

    emb = ds.dataset(out / "embeddings", format="parquet").to_table()
    assert sorted(emb.column("input_index").to_pylist()) == list(range(archive.images + 28))
    assert not [p for p in out.rglob(".*.tmp")], "a temporary part was left visible"
