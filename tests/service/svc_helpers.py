"""Helpers shared by the service tests (importable: tests/service is on sys.path)."""

from __future__ import annotations

import importlib.util
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

API_KEY = "zs-test-key-7f3a9c0e1d2b4a68"
OTHER_KEY = "zs-second-key-00112233445566"
TINY_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "zsindex/models/zsindex-tiny/open_clip_model.safetensors"
)


def wait_ready(get: Callable[[str], Any], timeout: float = 60.0) -> Any:
    """Poll ``get("/readyz")`` until it answers 200 (a replica preloads before it says ready);
    every earlier answer must be the documented 503 ``not_ready``. Returns the 200 response."""
    deadline = time.monotonic() + timeout
    while True:
        answer = get("/readyz")
        if answer.status_code == 200:
            return answer
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "not_ready", answer.text
        assert time.monotonic() < deadline, f"not ready after {timeout:g} s: {answer.text}"
        time.sleep(0.05)


def has_local_backend() -> bool:
    return importlib.util.find_spec("zsindex.local") is not None


def has_tiny_model() -> bool:
    return TINY_WEIGHTS.is_file()


needs_local = pytest.mark.skipif(
    not has_local_backend(), reason="zsindex.local (LocalBackend) is not there yet"
)
needs_tiny = pytest.mark.skipif(
    not (has_local_backend() and has_tiny_model()), reason="zsindex-tiny weights not there yet"
)


def png_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 32)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(
    color: tuple[int, int, int] = (30, 30, 200), size: tuple[int, int] = (32, 32)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build_random_model(folder: Path, seed: int = 0) -> str:
    """A small random-weight open_clip CLIP in local-dir layout; returns ``local-dir:<folder>``.

    Stands in for ``zsindex-tiny`` where only plumbing is tested (results compared between the
    two clients, never against expected labels).
    """
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "patch_size": 8,
            "width": 64,
            "layers": 1,
            "head_width": 32,
            "mlp_ratio": 2.0,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 1,
            "mlp_ratio": 2.0,
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {
        "model_cfg": cfg,
        "preprocess_cfg": {
            "size": 32,
            "mode": "RGB",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
            "fill_color": 0,
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return f"local-dir:{folder}"
