"""The cache file format: layout constants, manifest reading, checked sections, extras."""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsindex.errors import CacheError, InvalidInputError
from zsindex.index.kernels import thread_pool

FORMAT_VERSION = 1
MAGIC = b"ZSINDEXCACHE v1\n"
SUFFIX = ".zsic"
ALIGN = 4096
CRC_CHUNK = 64 << 20
PREFIX = struct.Struct("<16sQII")
MAX_HEADER = 64 << 20

Extra = np.ndarray | Sequence[str]


def crc_chunks(buf: memoryview) -> list[int]:
    """crc32 of every ``CRC_CHUNK`` bytes of ``buf``, computed on every core."""
    starts = range(0, len(buf), CRC_CHUNK)
    return list(thread_pool().map(lambda a: zlib.crc32(buf[a : a + CRC_CHUNK]), starts))


def as_bytes_view(arr: np.ndarray) -> memoryview:
    """A flat byte view of ``arr`` (C order)."""
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return memoryview(flat)  # type: ignore[arg-type]  # a contiguous numpy array supports the buffer protocol


def encode_extra(name: str, value: Extra) -> tuple[np.ndarray, str]:
    """Encode a side payload: numeric arrays as is, lists of str as NUL-joined UTF-8."""
    if isinstance(value, np.ndarray) and value.dtype.kind not in "OUS":
        return np.ascontiguousarray(value), "array"
    items = value.tolist() if isinstance(value, np.ndarray) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise InvalidInputError(f"extra {name!r} must be a numeric array or a list of str")
    if any("\x00" in item for item in items):
        raise InvalidInputError(f"extra {name!r} contains a NUL character")
    blob = "\x00".join(items).encode("utf-8")
    return np.frombuffer(blob, dtype=np.uint8), f"strings:{len(items)}"


def decode_extra(arr: np.ndarray, kind: str) -> np.ndarray | list[str]:
    """Inverse of :func:`encode_extra`."""
    if kind == "array":
        return arr
    count = int(kind.split(":", 1)[1])
    if count == 0:
        return []
    items = arr.tobytes().decode("utf-8").split("\x00")
    if len(items) != count:
        raise CacheError(f"string payload holds {len(items)} items, manifest says {count}")
    return items


def slug(text: str, limit: int) -> str:
    """A file-name-safe prefix of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.=]+", "_", text)[:limit].strip("_") or "x"


def read_manifest(fh: Any, size: int) -> tuple[dict[str, Any], int]:
    """Read and check the manifest; return it and where the sections start."""
    prefix = fh.read(PREFIX.size)
    if len(prefix) != PREFIX.size:
        raise CacheError("truncated before the manifest")
    magic, hlen, hcrc, _ = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise CacheError("not a zsindex cache file (bad magic)")
    if hlen > min(MAX_HEADER, size - PREFIX.size):
        raise CacheError("manifest length out of range (truncated?)")
    header = fh.read(hlen)
    if len(header) != hlen or zlib.crc32(header) != hcrc:
        raise CacheError("manifest checksum mismatch")
    try:
        manifest = json.loads(header)
    except ValueError as exc:
        raise CacheError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise CacheError("unknown manifest format")
    if not isinstance(manifest.get("sections"), dict):
        raise CacheError("manifest has no sections")
    return manifest, -(-(PREFIX.size + hlen) // ALIGN) * ALIGN


def section(
    view: memoryview, data_start: int, name: str, sec: dict[str, Any], *, verify: bool = True
) -> np.ndarray:
    try:
        start = data_start + int(sec["offset"])
        nbytes = int(sec["nbytes"])
        dtype = np.dtype(sec["dtype"])
        shape = tuple(int(d) for d in sec["shape"])
        crcs = [int(c) for c in sec["crc32"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheError(f"section {name!r} is malformed: {exc}") from exc
    if start < data_start or nbytes < 0 or start + nbytes > len(view):
        raise CacheError(f"section {name!r} lies outside the file")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != nbytes:
        raise CacheError(f"section {name!r}: shape/dtype do not match its length")
    part = view[start : start + nbytes]
    if verify and crc_chunks(part) != crcs:
        raise CacheError(f"section {name!r}: checksum mismatch (corrupt payload)")
    arr = np.frombuffer(part, dtype=dtype) if nbytes else np.empty(0, dtype=dtype)
    arr.flags.writeable = False
    return arr.reshape(shape)


def unlink_if_same(path: Path, seen: dict[str, int]) -> None:
    """Remove ``path`` unless a writer replaced it since we opened it (then it is a new file)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return
    if not seen or (stat.st_dev, stat.st_ino) == (seen.get("dev"), seen.get("ino")):
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- verified stamps -------------------------------------------------------------------------
# A file whose every checksum was verified (or whose bytes were written from checksummed memory)
# gets a sidecar stamp: its inode, size, mtime and ctime (ns) and the boot it was verified in.
# Any write, truncation, rename-over or ``touch`` changes ctime, and a reboot changes the boot
# id, so a matching stamp means "these bytes were verified in this boot and not written since".


def stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def file_stamp(stat: os.stat_result) -> dict[str, Any]:
    boot = _boot_id()
    return {
        "dev": stat.st_dev,
        "ino": stat.st_ino,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "boot": boot or None,  # no boot id (not Linux): never matches, always verify
    }


def stamp_matches(path: Path, stat: os.stat_result) -> bool:
    """Whether ``path`` (as ``stat`` finds it) was verified in this boot and not changed since."""
    try:
        stamp = json.loads(stamp_path(path).read_text())
    except (OSError, ValueError):
        return False
    now = file_stamp(stat)
    return bool(now["boot"]) and stamp == now


def write_stamp(path: Path, stat: os.stat_result) -> None:
    """Record ``path`` as verified (best effort: a missing stamp only costs a full check)."""
    target = stamp_path(path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(file_stamp(stat)))
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)


def remove_stamp(path: Path) -> None:
    stamp_path(path).unlink(missing_ok=True)
