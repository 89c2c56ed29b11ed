"""Helpers of the batch tests: settings over a real store, registering built-in label sets."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsindex.config import Settings

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "hostile"
HOSTILE = (
    "bomb_png_30000x30000_real.png",  # image_too_large, from the header
    "empty.png",
    "elf.bin",  # unsupported_media_type
    "flipped_jpeg_no_sos.jpg",  # bad_image
)


@dataclass(frozen=True)
class Archive:
    root: Path
    folder: Path
    csv_list: Path
    parquet_list: Path
    shards: list[Path]
    images: int
    """Images in the folder (hostile ones included)."""


def make_settings(home: Path, url: str | None = None) -> Settings:
    return Settings(
        home=home,
        database_url=url,
        device="cpu",
        model="zsindex-tiny",
        pretrained=None,
    )


def register(settings: Settings, *names: str) -> None:
    from zsindex.client import Client
    from zsindex.local import LocalBackend

    with Client.from_backend(LocalBackend(settings)) as client:
        for name in names:
            client.add_labelset(name, plugin=name)


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


TOL = 1e-6


def classify_json(zs: Any, *args: str) -> dict[str, dict[str, Any]]:
    result = zs("classify", *args, "--json")
    assert result.code in (0, 3), result.err
    return {r["image"]: r for r in result.json()}


def assert_same(rows: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    """Each batch row equals classify's result for that image (labels exactly, numbers to
    1e-6, the same error code)."""
    assert {r["source"] for r in rows} == set(expected)
    for row in rows:
        want = expected[row["source"]]
        assert row["version"] == want["version"]
        if "rejected" in want:
            assert row["rejected"] == want["rejected"]
        if "error" in want:
            assert row["error"]["code"] == want["error_code"]
            assert row["labels"] == []
            continue
        assert row["error"] is None
        assert row["labels"] == [p["label"] for p in want["predictions"]]
        for got, p in zip(row["probabilities"], want["predictions"], strict=True):
            assert abs(got - p["probability"]) <= TOL
        for got, p in zip(row["scores"], want["predictions"], strict=True):
            assert abs(got - p["score"]) <= TOL
        if "path" in want:
            assert [s["label"] for s in row["path"]] == [s["label"] for s in want["path"]]
            for got, s in zip(row["path"], want["path"], strict=True):
                assert abs(got["probability"] - s["probability"]) <= TOL
