"""Verified stamps: a cache file verified in this boot and not written since is loaded without
recomputing its payload checksums; anything that touches the file, or a reboot, checks again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from zsindex.index import IndexCache, build_index
from zsindex.index import cache_format as fmt


@pytest.fixture
def matrix(make_clustered) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(make_clustered(2000, 16, 10, seed=3))


@pytest.fixture
def crc_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes checksummed by section verification."""
    calls: list[int] = []
    real = fmt.crc_chunks

    def counting(buf: memoryview) -> list[int]:
        calls.append(len(buf))
        return real(buf)

    monkeypatch.setattr(fmt, "crc_chunks", counting)
    return calls


def _store(tmp_path: Path, matrix: np.ndarray) -> tuple[IndexCache, Path]:
    cache = IndexCache(tmp_path / "cache")
    path = cache.store("d", "exact", build_index(matrix), extra={"names": ["a"] * len(matrix)})
    return cache, path


def test_written_file_loads_without_recomputing_checksums(
    tmp_path: Path, matrix: np.ndarray, crc_calls: list[int]
) -> None:
    cache, path = _store(tmp_path, matrix)
    assert fmt.stamp_path(path).exists()
    crc_calls.clear()
    loaded = cache.load("d", "exact")
    assert loaded is not None and crc_calls == []
    np.testing.assert_array_equal(loaded.index.matrix, matrix)  # type: ignore[attr-defined]


def test_without_a_stamp_the_first_load_verifies_and_stamps(
    tmp_path: Path, matrix: np.ndarray, crc_calls: list[int]
) -> None:
    cache, path = _store(tmp_path, matrix)
    fmt.stamp_path(path).unlink()
    crc_calls.clear()
    assert cache.load("d", "exact") is not None
    assert sum(crc_calls) >= matrix.nbytes  # every payload byte checked
    assert fmt.stamp_path(path).exists()
    crc_calls.clear()
    assert cache.load("d", "exact") is not None and crc_calls == []


def test_a_bit_flip_with_the_mtime_put_back_is_still_caught(
    tmp_path: Path, matrix: np.ndarray
) -> None:
    cache, path = _store(tmp_path, matrix)
    before = path.stat()
    with open(path, "r+b") as fh:  # same size, same inode
        fh.seek(fmt.ALIGN * 2 + 5)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime still moves
    assert cache.load("d", "exact") is None  # verified, rejected, removed
    assert not path.exists() and not fmt.stamp_path(path).exists()


def test_another_boot_verifies_again(
    tmp_path: Path, matrix: np.ndarray, crc_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, _ = _store(tmp_path, matrix)
    monkeypatch.setattr(fmt, "_boot_id", lambda: "another-boot")
    crc_calls.clear()
    assert cache.load("d", "exact") is not None
    assert sum(crc_calls) >= matrix.nbytes


def test_no_boot_id_means_always_verify(
    tmp_path: Path, matrix: np.ndarray, crc_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fmt, "_boot_id", lambda: "")
    cache, _ = _store(tmp_path, matrix)
    for _ in range(2):
        crc_calls.clear()
        assert cache.load("d", "exact") is not None
        assert sum(crc_calls) >= matrix.nbytes


def test_verify_ignores_stamps(tmp_path: Path, matrix: np.ndarray) -> None:
    """What a stamp does not cover: bytes changed behind the file system's back (here forged by
    re-stamping after a flip). ``load`` trusts the stamp; ``verify`` (db check --strict) does
    not."""
    cache, path = _store(tmp_path, matrix)
    with open(path, "r+b") as fh:
        fh.seek(fmt.ALIGN * 2 + 5)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    fmt.write_stamp(path, path.stat())  # the forgery
    assert cache.load("d", "exact") is not None
    problem = cache.verify(path)
    assert problem is not None and "checksum" in problem


def test_remove_and_prune_drop_the_stamp(tmp_path: Path, matrix: np.ndarray) -> None:
    cache, path = _store(tmp_path, matrix)
    assert cache.remove("d", "exact")
    assert not fmt.stamp_path(path).exists()
    cache, path = _store(tmp_path, matrix)
    assert cache.prune(set()) == [path]
    assert not fmt.stamp_path(path).exists()
