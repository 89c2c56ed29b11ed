"""The wheel carries what an installed zsindex needs: migrations, the tiny model, entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    [path] = out.glob("zsindex-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_migrations_and_model(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "zsindex/migrations/env.py" in names
    assert "zsindex/migrations/script.py.mako" in names
    assert any(n.startswith("zsindex/migrations/versions/0001_") for n in names)
    for f in ("open_clip_config.json", "open_clip_model.safetensors", "README.md"):
        assert f"zsindex/models/zsindex-tiny/{f}" in names


def test_wheel_declares_cli_and_plugins(wheel: zipfile.ZipFile) -> None:
    [ep] = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(ep).decode()
    assert "zsindex = zsindex.cli.main:main" in text
    for plugin in (
        "imagenet1k",
        "imagenet1k-simple",
        "cifar10",
        "cifar100",
        "shapes",
        "colors",
        "shape-tree",
    ):
        assert f"{plugin} = " in text
