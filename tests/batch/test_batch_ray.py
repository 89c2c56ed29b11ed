"""The Ray engine on a real local Ray cluster (``num_cpus=2``): its output equals the local
engine's (and so ``zsindex classify --json``'s) for folders, CSV and Parquet lists and tar
shards, and a SIGKILLed actor is restarted by Ray with every input still exactly once (B1)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_support import TOL, Archive, assert_same, classify_json

from zsindex.batch import RayOptions, run
from zsindex.config import Settings

ACTOR_TITLE = b"ClassifyActor"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _inputs(archive: Archive) -> list[str]:
    return [
        str(archive.folder),
        str(archive.csv_list),
        str(archive.parquet_list),
        *map(str, archive.shards),
    ]


def _assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for key in ("source", "input_index", "labelset", "version", "labels", "error"):
            assert a[key] == b[key], key
        for key in ("probabilities", "scores"):
            assert all(abs(x - y) <= TOL for x, y in zip(a[key], b[key], strict=True))
        assert (a["path"] is None) == (b["path"] is None)
        if a["path"] is not None:
            assert [s["label"] for s in a["path"]] == [s["label"] for s in b["path"]]


def test_ray_equals_local_and_classify_json(
    ray_cluster: None,
    archive: Archive,
    cli_env: Settings,
    zs: Any,
    tmp_path: Path,
    read_predictions: Any,
) -> None:
    store = cli_env
    labels = ["shapes", "colors:k=3", "shape-tree:mode=beam"]
    local = tmp_path / "local"
    run(_inputs(archive), labels, local, settings=store, part_size=16, save_embeddings=True)
    on_ray = tmp_path / "ray"
    summary = run(
        _inputs(archive),
        labels,
        on_ray,
        engine="ray",
        settings=store,
        part_size=16,
        save_embeddings=True,
        ray=RayOptions(workers=2, num_cpus_per_worker=0.75, batch_size=8),
    )
    assert summary.engine == "ray" and summary.parts_skipped == 0
    ray_rows = read_predictions(on_ray)
    _assert_rows_equal(ray_rows, read_predictions(local))
    folder = str(archive.folder)
    in_folder = [r for r in ray_rows if r["input_index"] < archive.images]
    for name, extra in (
        ("shapes", ()),
        ("colors", ("-k", "3")),
        ("shape-tree", ("--mode", "beam")),
    ):
        assert_same(
            [r for r in in_folder if r["labelset"] == name],
            classify_json(zs, folder, "--labels", name, *extra),
        )
    import numpy as np
    import pyarrow.dataset as ds

    def embeddings(out: Path) -> list[dict[str, Any]]:
        table = ds.dataset(out / "embeddings", format="parquet").to_table()
        return sorted(table.to_pylist(), key=lambda r: r["input_index"])

    a, b = embeddings(on_ray), embeddings(local)
    assert [r["source"] for r in a] == [r["source"] for r in b]
    assert [r["fingerprint"] for r in a] == [r["fingerprint"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert (x["embedding"] is None) == (y["embedding"] is None)
        if x["embedding"] is not None:
            assert np.abs(np.array(x["embedding"]) - np.array(y["embedding"])).max() <= TOL


def _actor_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if ACTOR_TITLE in fh.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _run_with_kills(
    archive: Archive, store: Settings, tmp_path: Path, read_predictions: Any, kills: int
) -> int:
    """One Ray job; an actor SIGKILLed each time another part commits, up to ``kills``
    times. Returns the kills that landed; checks every input exactly once."""
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_actors_mid_job() -> None:
        deadline = time.monotonic() + 300
        seen = 0
        while time.monotonic() < deadline and len(killed) < kills:
            committed = len(list((out / "predictions").glob("part-*.parquet")))
            pids = [p for p in _actor_pids() if p not in killed]
            if committed > seen and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                seen = committed
            time.sleep(0.02)

    killer = threading.Thread(target=kill_actors_mid_job, daemon=True)
    killer.start()
    summary = run(
        _inputs(archive),
        ["shapes"],
        out,
        engine="ray",
        settings=store,
        part_size=4,
        ray=RayOptions(workers=2, num_cpus_per_worker=0.75, batch_size=2),
    )
    killer.join(timeout=5)
    assert summary.parts_skipped == 0
    rows = read_predictions(out)
    n = len(summary.labelsets) * summary.images
    assert sorted(r["input_index"] for r in rows) == list(range(n))
    reference = tmp_path / "reference"
    run(_inputs(archive), ["shapes"], reference, settings=store, part_size=4)
    _assert_rows_equal(rows, read_predictions(reference))
    return len(killed)


def test_killed_ray_actor_is_retried_exactly_once(
    ray_cluster: None, archive: Archive, store: Settings, tmp_path: Path, read_predictions: Any
) -> None:
    assert _run_with_kills(archive, store, tmp_path, read_predictions, kills=1) == 1


@pytest.mark.slow
def test_ray_actor_kill_soak(
    ray_cluster: None, archive: Archive, store: Settings, tmp_path: Path, read_predictions: Any
) -> None:
    """B1 soak on Ray: up to SOAK_RAY_KILLS (default 8) actor kills in one job."""
    kills = int(os.environ.get("SOAK_RAY_KILLS", "8"))
    landed = _run_with_kills(archive, store, tmp_path, read_predictions, kills=kills)
    print(f"batch ray soak: {landed} actor kills landed in one job")
    assert landed >= 2
