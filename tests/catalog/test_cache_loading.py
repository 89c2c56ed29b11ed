"""C2: the on-disk index cache is verified before use and rebuilt from SQL when bad."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from zsindex import Client
from zsindex.catalog.loading import cache_dir
from zsindex.config import Settings


def _client(home: Path) -> Client:
    return Client.local(database_url=f"sqlite:///{home / 'db.sqlite3'}", home=home, device="cpu")


def _answers(c: Client, name: str, q: np.ndarray) -> list[tuple[str, float]]:
    [r] = c.classify(embeddings=q, labelset=name, k=3)
    return [(p.label, round(p.probability, 6)) for p in r.predictions]


@pytest.fixture
def seeded(tmp_path: Path, random_model: str) -> tuple[Path, np.ndarray, list[tuple[str, float]]]:
    home = tmp_path / "home"
    c = _client(home)
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((50, 64)).astype(np.float32)
    c.import_labelset("s", emb, [f"l{i}" for i in range(50)], model=random_model)
    q = emb[7] / np.linalg.norm(emb[7])
    expected = _answers(c, "s", q)
    assert expected[0][0] == "l7"
    c.close()
    files = list(cache_dir(Settings(home=home)).glob("*.zsic"))  # (+ its hidden stamp)
    assert len(files) == 1, files  # the first load wrote the cache
    return home, q, expected


def _cache_file(home: Path) -> Path:
    [f] = [p for p in cache_dir(Settings(home=home)).glob("*.zsic") if p.is_file()]
    return f


def test_cache_is_used_and_gives_the_same_answers(seeded: tuple) -> None:
    home, q, expected = seeded
    before = _cache_file(home).stat().st_mtime_ns
    c = _client(home)
    assert _answers(c, "s", q) == expected
    assert _cache_file(home).stat().st_mtime_ns == before  # read, not rewritten


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "empty"])
def test_corrupt_cache_is_rebuilt(seeded: tuple, damage: str) -> None:
    home, q, expected = seeded
    path = _cache_file(home)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "bitflip":
        data[4096 + 17] ^= 0x10  # inside the matrix section (sections are 4 KiB aligned)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    c = _client(home)
    assert _answers(c, "s", q) == expected
    assert _cache_file(home).read_bytes() != bytes(data)  # rebuilt from SQL


def test_another_versions_cache_swapped_in_is_not_trusted(seeded: tuple, random_model: str) -> None:
    home, q, _ = seeded
    old = _cache_file(home)
    saved = old.read_bytes()
    c = _client(home)
    rng = np.random.default_rng(9)
    other = rng.standard_normal((50, 64)).astype(np.float32)
    c.import_labelset("s", other, [f"x{i}" for i in range(50)], model=random_model)
    new_answers = _answers(c, "s", q)
    assert all(label.startswith("x") for label, _ in new_answers)
    c.close()
    # Overwrite the new version's cache file with the old version's bytes.
    new_files = [p for p in cache_dir(Settings(home=home)).iterdir() if p.name != old.name]
    for f in new_files:
        shutil.copyfile(old, f) if f.is_file() else None
    old.write_bytes(saved)
    c = _client(home)
    assert _answers(c, "s", q) == new_answers  # never the old version's labels
