"""The wheel is the source tree: every package, module and data file, nothing else, from either
the Docker build context or the sdist, plus the CLI entry point and the label-set plugins.

The wheel is compared with the build context it was built from (a snapshot: other work may add
files to the checkout meanwhile), and every file of the checkout's trees must pass .dockerignore.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import zipfile
from pathlib import Path

from deploy_support import Dists
from dockerfile_model import ROOT, ignore_rules

# Source trees and where they land in the wheel (migrations/ ships as zsindex.migrations).
TREES = {"zsindex": "zsindex", "migrations": "zsindex/migrations"}


def _source_files(root: Path) -> dict[str, Path]:
    """Wheel path -> source file for every file the two trees hold (byte code aside)."""
    files: dict[str, Path] = {}
    for tree, target in TREES.items():
        for path in (root / tree).rglob("*"):
            relative = path.relative_to(root / tree)
            if path.is_file() and "__pycache__" not in relative.parts and not _built(path.name):
                files[f"{target}/{relative.as_posix()}"] = path
    return files


def _built(name: str) -> bool:
    """Byte code, and a compiled extension built in place (the wheel compiles its own)."""
    return name.endswith((".pyc", ".so"))


KERNEL = re.compile(r"zsindex/index/_f16scan\.cpython-\d+[^/]*\.so")
"""The one compiled file a wheel holds beyond the tree: the fp16 scan kernel built from
zsindex/index/_f16scan.c (this machine has the C compiler the builder stage has)."""


def _payload(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.startswith("zsindex-")}


def test_the_build_context_keeps_every_file_of_the_package_trees() -> None:
    rules = ignore_rules()
    dropped = [n for n, p in _source_files(ROOT).items() if not rules.keeps(p.relative_to(ROOT))]
    assert not dropped, f".dockerignore keeps these out of the image's build context: {dropped}"


def test_every_package_module_and_data_file_ships_and_nothing_else(dists: Dists) -> None:
    source = _source_files(dists.context)
    payload = _payload(dists.wheel)
    missing = sorted(set(source) - set(payload))
    assert not missing, f"in the source tree but not in the wheel: {missing}"
    kernels = sorted(n for n in payload if KERNEL.fullmatch(n))
    assert len(kernels) == 1, f"the wheel must hold one compiled fp16 scan kernel, has {kernels}"
    extra = sorted(set(payload) - set(source) - set(kernels))
    assert not extra, f"in the wheel but not in the source tree (stale build output?): {extra}"
    packages = {p.parent for p in source.values() if p.name == "__init__.py"}
    assert {dists.context / "zsindex" / "service", dists.context / "migrations" / "versions"} <= (
        packages
    )
    changed = [n for n, p in source.items() if payload[n] != p.read_bytes()]
    assert not changed, f"wheel files differ from the tree: {changed}"


def test_the_wheel_built_from_the_sdist_is_the_same_wheel(dists: Dists) -> None:
    def digests(wheel: Path) -> dict[str, str]:
        return {n: hashlib.sha256(b).hexdigest() for n, b in _payload(wheel).items()}

    assert digests(dists.wheel_from_sdist) == digests(dists.wheel)
    with tarfile.open(dists.sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        assert needed in names, f"the sdist lacks {needed}"


def test_wheel_ships_migrations_model_and_static_page(dists: Dists) -> None:
    names = set(_payload(dists.wheel))
    assert "zsindex/migrations/env.py" in names
    assert "zsindex/migrations/script.py.mako" in names
    assert any(n.startswith("zsindex/migrations/versions/0001_") for n in names)
    for f in ("open_clip_config.json", "open_clip_model.safetensors", "README.md"):
        assert f"zsindex/models/zsindex-tiny/{f}" in names
    assert "zsindex/service/static/index.html" in names
    assert "zsindex/py.typed" in names


def test_wheel_declares_cli_and_plugins(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as zf:
        [ep] = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(ep).decode()
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
