"""Read a ``.safetensors`` file straight into fresh torch tensors, once.

``safetensors.torch.load_file`` hands out tensors backed by a memory map of the file: building a
model from them either keeps the map (the weights twice in memory while they are copied: 1.7 GB
peak for a 600 MB ViT-B-32) or keeps tensors at the file's byte offsets, which are not 64-byte
aligned (some CPU kernels then take other code paths and the last bit of a result moves). Here
every tensor is its own aligned allocation, filled with ``readinto`` from the file: one copy, no
map. The format is the documented one (an 8-byte little-endian header length, a JSON header of
``dtype``, ``shape`` and ``data_offsets``, then the bytes); anything unexpected gives ``None``
and the caller reads the file with the ``safetensors`` package, which reports what is wrong.

This module imports torch.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["read_aligned"]

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100_000_000  # as the safetensors package


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _entry(meta: Any, data_size: int) -> tuple[torch.dtype, list[int], int, int] | None:
    if not isinstance(meta, dict):
        return None
    dtype = _DTYPES.get(meta.get("dtype"))  # type: ignore[arg-type]  # any JSON value; unknown gives None
    shape, offsets = meta.get("shape"), meta.get("data_offsets")
    if dtype is None or not isinstance(shape, list) or not isinstance(offsets, list):
        return None
    if not all(map(_count, shape)) or len(offsets) != 2 or not all(map(_count, offsets)):
        return None
    begin, end = offsets
    itemsize = torch.empty((), dtype=dtype).element_size()
    if not 0 <= begin <= end <= data_size or end - begin != math.prod(shape) * itemsize:
        return None
    return dtype, shape, begin, end


def read_aligned(path: str | Path) -> dict[str, torch.Tensor] | None:
    """Every tensor of the file, each in a contiguous allocation of its own (CPU), or ``None``
    where the file is not a well-formed safetensors file this reader understands."""
    if sys.byteorder != "little":  # the format is little-endian; torch tensors are native
        return None
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                return None
            n = int.from_bytes(head, "little")
            if not 0 < n <= min(_MAX_HEADER, size - 8):
                return None
            header = json.loads(fh.read(n))
            if not isinstance(header, dict):
                return None
            base, out = 8 + n, {}
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                entry = _entry(meta, size - base)
                if entry is None:
                    return None
                dtype, shape, begin, end = entry
                tensor = torch.empty(shape, dtype=dtype)
                if end > begin:
                    buffer = memoryview(tensor.view(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]  # numpy arrays are buffers
                    fh.seek(base + begin)
                    if fh.readinto(buffer) != end - begin:
                        return None
                out[str(name)] = tensor
            return out
    except (OSError, ValueError, RuntimeError):  # unreadable, bad JSON, odd shapes
        return None
