"""open_clip's inference image transform without open_clip or torchvision.

``open_clip.image_transform(..., is_train=False)`` with ``resize_mode='shortest'`` and a square
input is torchvision's ``Resize(size)`` (shortest side, bicubic or bilinear) → ``CenterCrop`` →
``convert('RGB')`` → ``ToTensor`` → ``Normalize``. On a PIL image those are Pillow calls plus a
few torch operations; :class:`PlainPreprocess` makes the same calls in the same order (the output
size and crop box by torchvision's own integer rules), so its tensors equal open_clip's bit for
bit (tests compare them on images of many sizes, shapes and modes). Importing torchvision costs
a one-shot process about a second and pulls in ``torch._dynamo``.

Anything else — another resize mode, a non-square input, an input that is not a PIL image — goes
to open_clip's own transform, built on first need (:func:`plain_transform` returns ``None`` for
the configs, and :class:`PlainPreprocess` delegates non-PIL inputs).

:func:`preprocess_config` works out the preprocessing settings exactly as
``open_clip.create_model`` does, for a model zsindex resolved.

This module imports torch.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["PlainPreprocess", "open_clip_transform", "plain_transform", "preprocess_config"]

OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)
_DEFAULTS: dict[str, Any] = {
    "size": 224,
    "mode": "RGB",
    "mean": OPENAI_DATASET_MEAN,
    "std": OPENAI_DATASET_STD,
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}
_LOCAL_DIR = "local-dir:"


def _merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """open_clip's ``merge_preprocess_dict``: known keys only, ``None`` values ignored."""
    out = {k: v for k, v in base.items() if k in _DEFAULTS}
    out.update({k: v for k, v in overlay.items() if k in _DEFAULTS and v is not None})
    return out


def preprocess_config(
    arch: str, overrides: Mapping[str, Any], image_size: int | tuple[int, int]
) -> dict[str, Any]:
    """The ``preprocess_cfg`` ``open_clip.create_model(arch, pretrained=None,
    force_preprocess_cfg=overrides)`` sets on a model whose tower has ``image_size``: the
    defaults, then a ``local-dir:`` folder's ``preprocess_cfg``, then the size, then
    ``overrides``."""
    cfg = dict(_DEFAULTS)
    if arch.startswith(_LOCAL_DIR):
        path = Path(arch[len(_LOCAL_DIR) :]) / "open_clip_config.json"
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        cfg = _merge(cfg, data.get("preprocess_cfg", {}) or {})
    cfg["size"] = image_size
    return _merge(cfg, overrides or {})


def open_clip_transform(cfg: Mapping[str, Any]) -> Callable[[Any], Any]:
    """open_clip's own inference transform for ``cfg`` (imports open_clip)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)  # type: ignore[no-any-return]  # open_clip is untyped


def _triple(value: Any, default: Sequence[float]) -> tuple[float, ...] | None:
    value = value or default  # as open_clip: an empty mean/std means the default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return tuple(float(v) for v in value)
    return None


class PlainPreprocess:
    """open_clip's ``shortest``-mode inference transform for a square input, on PIL images."""

    def __init__(self, cfg: Mapping[str, Any], size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], resample: Image.Resampling) -> None:  # fmt: skip
        self.cfg = copy.deepcopy(dict(cfg))
        self.size = size
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.resample = resample
        self._fallback: Callable[[Any], Any] | None = None

    def _resized_size(self, width: int, height: int) -> tuple[int, int]:
        # torchvision's _compute_resized_output_size for an int size: short side = size, long
        # side truncated (int of a float product, as torchvision computes it).
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, img: Any) -> Any:
        if not isinstance(img, Image.Image):  # tensors and arrays: open_clip's own handling
            if self._fallback is None:
                self._fallback = open_clip_transform(self.cfg)
            return self._fallback(img)
        width, height = img.size
        new_w, new_h = self._resized_size(width, height)
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), self.resample)
        # The resized image is never smaller than the crop, so torchvision's padding branch
        # does not arise; the crop box follows its rounding (Python's round of a half).
        top = round((new_h - self.size) / 2.0)
        left = round((new_w - self.size) / 2.0)
        img = img.crop((left, top, left + self.size, top + self.size))
        img = img.convert("RGB")
        pixels = torch.from_numpy(np.array(img, np.uint8, copy=True))
        x = pixels.view(img.size[1], img.size[0], 3).permute((2, 0, 1)).contiguous()
        x = x.to(dtype=torch.get_default_dtype()).div(255)
        return x.sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"PlainPreprocess(size={self.size}, resample={self.resample.name})"


def plain_transform(cfg: Mapping[str, Any]) -> PlainPreprocess | None:
    """A :class:`PlainPreprocess` equal to ``open_clip_transform(cfg)``, or ``None`` where this
    module does not reproduce it (resize mode other than ``shortest``, non-square size, another
    colour mode, values open_clip would refuse)."""
    size = cfg.get("size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return None
    if cfg.get("mode", "RGB") != "RGB" or (cfg.get("resize_mode") or "shortest") != "shortest":
        return None
    interpolation = cfg.get("interpolation") or "bicubic"
    if interpolation not in ("bicubic", "bilinear", "random"):  # 'random' is bicubic at eval
        return None
    mean = _triple(cfg.get("mean"), OPENAI_DATASET_MEAN)
    std = _triple(cfg.get("std"), OPENAI_DATASET_STD)
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        return None
    if any(np.float32(s) == 0 for s in std):  # torchvision refuses a float32 zero std
        return None
    bilinear = interpolation == "bilinear"
    resample = Image.Resampling.BILINEAR if bilinear else Image.Resampling.BICUBIC
    return PlainPreprocess(cfg, size, mean, std, resample)
