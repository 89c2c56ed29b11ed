"""The on-disk cache: round trips, and every kind of bad file detected before use."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from zsindex.index import ExactIndex, IndexCache, build_index
from zsindex.index.ann import AnnIndex
from zsindex.index.cache import ALIGN, MAGIC


@pytest.fixture
def matrix(make_clustered) -> np.ndarray:
    return make_clustered(3000, 16, 20, seed=7)


@pytest.fixture
def cache(tmp_path: Path) -> IndexCache:
    return IndexCache(tmp_path / "cache")


NAMES = [f"label {i} ü" for i in range(3000)]


def _same_answers(a, b, queries) -> None:
    ra, rb = a.search(queries, 5, logit_scale=100.0), b.search(queries, 5, logit_scale=100.0)
    np.testing.assert_array_equal(ra.ids, rb.ids)
    np.testing.assert_array_equal(ra.probabilities, rb.probabilities)


@pytest.mark.parametrize("use_mmap", [True, False])
def test_round_trip_exact(cache, matrix, use_mmap: bool) -> None:
    cache.mmap = use_mmap
    index = build_index(matrix)
    extra = {"names": NAMES, "parents": np.arange(3000, dtype=np.int32) - 1, "empty": []}
    path = cache.store("v1digest", "exact", index, extra=extra, meta={"version": 7})
    assert path.exists() and path.stat().st_size % ALIGN == 0
    loaded = cache.load("v1digest", "exact")
    assert loaded is not None
    assert loaded.digest == "v1digest" and loaded.spec == "exact"
    assert loaded.meta == {"version": 7}
    assert loaded.extra["names"] == NAMES and loaded.extra["empty"] == []
    np.testing.assert_array_equal(loaded.extra["parents"], extra["parents"])
    assert isinstance(loaded.index, ExactIndex)
    assert not loaded.index.matrix.flags.writeable
    np.testing.assert_array_equal(loaded.index.matrix, matrix)
    _same_answers(index, loaded.index, matrix[:4])
    assert loaded.manifest["count"] == 3000 and loaded.manifest["dim"] == 16
    assert loaded.manifest["dtype"] == "float32"


def test_round_trip_fp16_and_ann(cache, matrix) -> None:
    low = ExactIndex(matrix.astype(np.float16), keep_fp32=False)
    cache.store("d16", "exact", low)
    back = cache.load("d16", "exact")
    assert back is not None and back.index.matrix.dtype == np.float16
    _same_answers(low, back.index, matrix[:3])
    ann = build_index(matrix, "ivf16,sq8,nprobe=4")
    assert isinstance(ann, AnnIndex) and not ann.uses_exact
    cache.store("d", "ivf:nlist=16,nprobe=4,sq8", ann)
    loaded = cache.load("d", "ivf16,sq8,nprobe=4")
    assert loaded is not None and isinstance(loaded.index, AnnIndex)
    assert loaded.index.search_param == 4 and loaded.index.backend == "faiss-ivf"
    _same_answers(ann, loaded.index, matrix[:6])
    # A tuned index that fell back to exact stores no faiss payload.
    ann.faiss_index, ann.search_param = None, None
    cache.store("d", "ivf16,sq8,nprobe=4", ann)
    again = cache.load("d", "ivf16,sq8,nprobe=4")
    assert again is not None and again.index.uses_exact
    assert "faiss" not in again.manifest["sections"]


def test_missing_is_a_miss(cache, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="zsindex.index.cache"):
        assert cache.load("nothing", "exact") is None
    assert "no file" in caplog.text


def _stored(cache: IndexCache, matrix: np.ndarray, digest: str = "v1") -> Path:
    return cache.store(digest, "exact", build_index(matrix), extra={"names": NAMES})


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x10]))


def _header_len(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:24], "little")


@pytest.mark.parametrize(
    "damage",
    [
        "truncate-payload",
        "truncate-header",
        "truncate-to-zero",
        "flip-payload-first",
        "flip-payload-last",
        "flip-names",
        "flip-header",
        "bad-magic",
        "manifest-not-json",
        "extend",
    ],
)
def test_corrupt_file_detected_and_removed(cache, matrix, caplog, damage: str) -> None:
    path = _stored(cache, matrix)
    size = path.stat().st_size
    hlen = _header_len(path)
    payload = -(-(32 + hlen) // ALIGN) * ALIGN
    if damage == "truncate-payload":
        os.truncate(path, size - 5000)
    elif damage == "truncate-header":
        os.truncate(path, 40)
    elif damage == "truncate-to-zero":
        os.truncate(path, 0)
    elif damage == "flip-payload-first":
        _flip(path, payload)
    elif damage == "flip-payload-last":
        _flip(path, payload + matrix.nbytes - 1)
    elif damage == "flip-names":
        _flip(path, size - ALIGN - 10 if size - ALIGN - 10 > payload + matrix.nbytes else size - 1)
    elif damage == "flip-header":
        _flip(path, 32 + hlen // 2)
    elif damage == "bad-magic":
        _flip(path, 0)
    elif damage == "manifest-not-json":
        # Rewrite the header with garbage and a matching crc: still rejected.
        import zlib

        data = bytearray(path.read_bytes())
        garbage = b"x" * hlen
        data[32 : 32 + hlen] = garbage
        data[24:28] = zlib.crc32(garbage).to_bytes(4, "little")
        path.write_bytes(bytes(data))
    elif damage == "extend":
        with open(path, "ab") as fh:
            fh.write(b"\0" * 10)
    with caplog.at_level(logging.WARNING, logger="zsindex.index.cache"):
        assert cache.load("v1", "exact") is None
    assert "rejected" in caplog.text
    assert not path.exists()  # bad files are removed; the caller rebuilds
    assert cache.verify(path) == "missing"


def test_flip_in_names_payload(cache, matrix) -> None:
    path = _stored(cache, matrix)
    manifest = json.loads(path.read_bytes()[32 : 32 + _header_len(path)])
    names = manifest["sections"]["extra.names"]
    start = -(-(32 + _header_len(path)) // ALIGN) * ALIGN + names["offset"]
    _flip(path, start + names["nbytes"] // 2)
    assert "checksum" in (cache.verify(path) or "")
    assert cache.load("v1", "exact") is None


def test_other_versions_file_swapped_in(cache, matrix) -> None:
    old = _stored(cache, matrix, digest="old")
    new_path = cache.path_for("new", "exact")
    shutil.copyfile(old, new_path)
    assert cache.load("new", "exact") is None  # manifest names digest "old": stale
    assert not new_path.exists()
    assert cache.load("old", "exact") is not None


def test_stale_spec(cache, matrix) -> None:
    path = _stored(cache, matrix)
    target = cache.path_for("v1", "ivf64")
    path.rename(target)
    assert cache.load("v1", "ivf64") is None


def test_payload_swapped_between_files(cache, matrix, make_clustered) -> None:
    """Same header, another matrix's payload: chunk checksums catch it."""
    a = _stored(cache, matrix, digest="a")
    b = _stored(cache, make_clustered(3000, 16, 20, seed=8), digest="b")
    head = 32 + _header_len(a)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    start = -(-head // ALIGN) * ALIGN
    a.write_bytes(
        data_a[:start] + data_b[start : start + matrix.nbytes] + data_a[start + matrix.nbytes :]
    )
    assert cache.load("a", "exact") is None


def test_faiss_never_sees_a_bad_file(cache, matrix, monkeypatch) -> None:
    import faiss

    ann = build_index(matrix, "ivf16,nprobe=2")
    path = cache.store("d", "ivf16,nprobe=2", ann)
    manifest = json.loads(path.read_bytes()[32 : 32 + _header_len(path)])
    sec = manifest["sections"]["faiss"]
    start = -(-(32 + _header_len(path)) // ALIGN) * ALIGN + sec["offset"]
    _flip(path, start + 100)
    calls: list[int] = []
    monkeypatch.setattr(faiss, "deserialize_index", lambda *a: calls.append(1))
    assert cache.load("d", "ivf16,nprobe=2") is None
    assert calls == []


def test_leftover_temp_files_ignored_and_cleaned(cache, matrix) -> None:
    cache.directory.mkdir(parents=True)
    final = cache.path_for("v1", "exact")
    dead = cache.directory / f".{final.name}.999999999.abcd1234.tmp"
    dead.write_bytes(MAGIC + b"partial")
    live = cache.directory / f".{final.name}.{os.getpid()}.abcd1234.tmp"
    live.write_bytes(MAGIC + b"in progress")
    assert cache.load("v1", "exact") is None
    assert cache.cleanup() == 1
    assert not dead.exists() and live.exists()  # a live writer's temp file is left alone
    _stored(cache, matrix)
    assert cache.load("v1", "exact") is not None


def test_killed_mid_write(cache, matrix, tmp_path: Path) -> None:
    """SIGKILL a writer mid-store: the entry is absent or complete, never half-trusted."""
    script = textwrap.dedent(
        f"""
        import numpy as np, sys
        from zsindex.index import IndexCache, ExactIndex
        m = np.random.default_rng(0).standard_normal((400_000, 64)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        index = ExactIndex(m, check_finite=False)
        print("ready", flush=True)
        while True:
            IndexCache({str(cache.directory)!r}).store("big", "exact", index)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(0.4)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    loaded = cache.load("big", "exact")
    assert loaded is None or loaded.index.count == 400_000
    cache.cleanup()
    assert not list(cache.directory.glob("*.tmp"))
    assert all(problem is None for problem in cache.verify_all().values())


def test_verify_all(cache, matrix) -> None:
    good = _stored(cache, matrix, digest="good")
    bad = _stored(cache, matrix, digest="bad")
    os.truncate(bad, 100)
    report = cache.verify_all()
    assert report[good] is None
    assert report[bad] is not None


def test_store_rejects_mismatched_spec_and_bad_extra(cache, matrix) -> None:
    from zsindex.errors import InvalidInputError

    index = build_index(matrix)
    with pytest.raises(InvalidInputError):
        cache.store("d", "ivf64", index)
    with pytest.raises(InvalidInputError):
        cache.store("d", "exact", index, extra={"names": ["a\x00b"]})
    with pytest.raises(InvalidInputError):
        cache.store("d", "exact", index, extra={"x": [1, 2]})
    assert not list(cache.directory.glob("*"))


def test_remove_and_prune(cache, matrix) -> None:
    keep = _stored(cache, matrix, digest="keep")
    drop = _stored(cache, matrix, digest="drop")
    junk = cache.directory / f"junk{keep.suffix}"
    junk.write_bytes(b"not a cache")
    assert set(cache.prune({"keep"})) == {drop, junk}
    assert keep.exists()
    assert cache.remove("keep", "exact") and not keep.exists()
    assert not cache.remove("keep", "exact")
