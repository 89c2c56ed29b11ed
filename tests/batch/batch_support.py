"""Helpers of the batch tests: settings over a real store, registering built-in label sets."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

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
