"""Fixtures of the batch tests: a real store with the tiny model's label sets, and one small
archive in every input layout (a folder, a CSV list, a Parquet list, WebDataset tar shards),
with hostile files among the images."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from batch_support import CORPUS, HOSTILE, Archive, make_settings, register, write_shard

from zsindex.config import Settings


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """24 rendered JPEG/PNG images + 4 hostile files, laid out four ways."""
    from zsindex.demo.render import write_image_folder

    root = tmp_path_factory.mktemp("archive")
    folder = root / "images"
    write_image_folder(folder, "combo", 1, 72, 7, fmt="jpeg")
    rendered = sorted(p for p in folder.rglob("*") if p.is_file())[:24]
    for extra in sorted(p for p in folder.rglob("*") if p.is_file())[24:]:
        extra.unlink()
    for name in HOSTILE:
        shutil.copy(CORPUS / name, folder / name)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with open(root / "list.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path"])
        for i, p in enumerate(files):
            writer.writerow([i, str(p.relative_to(root))])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": [str(p) for p in files[:10]]}), root / "list.parquet")
    shards = []
    for s in range(2):
        members: list[tuple[str, bytes]] = []
        for i, p in enumerate(rendered[s * 12 : (s + 1) * 12]):
            key = f"{s:05d}{i:04d}"
            members.append((f"{key}.jpg", p.read_bytes()))
            members.append((f"{key}.json", json.dumps({"key": key}).encode()))
            members.append((f"{key}.txt", b"a caption"))
        members.append(("0000bad1.jpg", (CORPUS / "flipped_jpeg_no_sos.jpg").read_bytes()))
        members.append(("0000bad2.png", (CORPUS / HOSTILE[0]).read_bytes()))
        shard = root / f"shard-{s:05d}.tar"
        write_shard(shard, members)
        shards.append(shard)
    return Archive(
        root=root,
        folder=folder,
        csv_list=root / "list.csv",
        parquet_list=root / "list.parquet",
        shards=shards,
        images=len(files),
    )


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A SQLite store with shapes, colors and shape-tree (tiny model), shared by the module's
    read-only tests."""
    home = tmp_path_factory.mktemp("batch-home")
    settings = make_settings(home)
    register(settings, "shapes", "colors", "shape-tree")
    return settings


@pytest.fixture
def read_predictions() -> Callable[[Path], list[dict[str, object]]]:
    import pyarrow.dataset as ds

    def read(output: Path) -> list[dict[str, object]]:
        table = ds.dataset(output / "predictions", format="parquet").to_table()
        return sorted(table.to_pylist(), key=lambda r: (r["labelset"], r["input_index"]))

    return read


@pytest.fixture
def cli_env(store: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("ZSINDEX_") and key != "ZSINDEX_REQUIRE_POSTGRES":
            monkeypatch.delenv(key)
    monkeypatch.setenv("ZSINDEX_HOME", str(store.home))
    monkeypatch.setenv("ZSINDEX_DEVICE", "cpu")
    return store
