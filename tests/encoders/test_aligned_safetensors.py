"""The aligned safetensors reader: the same tensors as the safetensors package, each in an aligned
allocation of its own; anything malformed gives ``None`` (the caller then uses the package)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from zsindex.encoders.aligned_safetensors import read_aligned
from zsindex.encoders.resolve import tiny_model_dir


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=gen),
        "f16": torch.randn(7, generator=gen).half(),
        "bf16": torch.randn(2, 3, generator=gen).bfloat16(),
        "i64": torch.arange(11),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "u8": torch.arange(5, dtype=torch.uint8),
    }


@pytest.mark.parametrize("which", ["made", "shipped"])
def test_same_tensors_as_the_safetensors_package(which: str, tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    if which == "made":
        save_file(_tensors(), str(path), metadata={"format": "pt"})
    else:
        path = tiny_model_dir() / "open_clip_model.safetensors"
    ours, ref = read_aligned(path), load_file(str(path))
    assert ours is not None and set(ours) == set(ref)
    for key, value in ref.items():
        got = ours[key]
        assert got.dtype == value.dtype and got.shape == value.shape
        assert torch.equal(got, value), key
        assert got.is_contiguous() and got.untyped_storage().nbytes() == got.nbytes
        assert got.numel() == 0 or got.data_ptr() % 64 == 0


def _raw(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x01\x00",
        _raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\x00" * 4),
        _raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\x00" * 8),
        _raw({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\x00" * 8),
        _raw({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\x00" * 4),
        _raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\x00" * 4),
        _raw({"a": [1, 2]}, b""),
        _raw([1, 2], b""),
        _raw({"a": 1}, b"", length=10_000),
        b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}",
    ],
)
def test_malformed_files_give_none(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    assert read_aligned(path) is None
    assert read_aligned(tmp_path / "missing.safetensors") is None
