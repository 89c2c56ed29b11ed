"""Batched image embeddings: decode + preprocess in a thread pool, batched forward passes.

Decoding (:func:`zsindex.encoders.images.load_image`) and the model's own preprocessing run in a
small thread pool (Pillow and torchvision release the GIL for the heavy parts), at most two batches
ahead of the forward pass, so memory stays bounded on long lists. Imports torch lazily.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.encoders.images import DEFAULT_MAX_PIXELS, ImageSource, load_image
from zsindex.errors import ImageError

if TYPE_CHECKING:
    import torch

__all__ = ["ImageEncoding", "encode_image_batch"]


@dataclass(frozen=True)
class ImageEncoding:
    """Embeddings of a list of images, some of which may have failed to decode.

    Attributes:
        embeddings: float32 ``[N, dim]`` in input order; rows of failed images are NaN.
        errors: input index → the :class:`ImageError` that image raised.
    """

    embeddings: np.ndarray
    errors: dict[int, ImageError] = field(default_factory=dict)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask ``[N]`` of the images that were encoded."""
        mask = np.ones(len(self.embeddings), dtype=bool)
        mask[list(self.errors)] = False
        return mask


def encode_image_batch(
    model: Any,
    preprocess: Callable[[Any], Any],
    images: Sequence[ImageSource],
    *,
    dim: int,
    device: str,
    autocast: Callable[[], Any],
    batch_size: int = 32,
    num_workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    raise_errors: bool = True,
) -> ImageEncoding:
    """Embed ``images`` with ``model.encode_image``; see ``Encoder.encode_images``."""
    import torch
    import torch.nn.functional as F

    n = len(images)
    out = np.full((n, dim), np.nan, dtype=np.float32)
    errors: dict[int, ImageError] = {}
    if n == 0:
        return ImageEncoding(out, errors)
    bs = max(1, int(batch_size))

    def prep(i: int) -> torch.Tensor | ImageError:
        source: Any = images[i]
        if isinstance(source, torch.Tensor):  # already the model's input (preprocessed)
            return source
        try:
            img = load_image(source, max_pixels=max_pixels, draft_size=draft_size)
        except ImageError as exc:
            if raise_errors:
                raise
            return exc
        tensor = preprocess(img)
        assert isinstance(tensor, torch.Tensor)
        return tensor

    if all(isinstance(x, torch.Tensor) for x in images):
        # Already the model's inputs (the pipeline's prepare stage): no decode pool to run.
        for start in range(0, n, bs):
            x = torch.stack(list(images[start : start + bs])).to(device)  # type: ignore[arg-type]  # checked: all tensors
            with torch.inference_mode(), autocast():
                feats = model.encode_image(x)
            out[start : start + bs] = F.normalize(feats.float(), dim=-1).cpu().numpy()
        return ImageEncoding(out, errors)
    workers = num_workers or min(4, os.cpu_count() or 1)
    pending: collections.deque[Future[torch.Tensor | ImageError]] = collections.deque()
    ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zsindex-decode")
    try:
        submitted = 0
        for start in range(0, n, bs):
            while submitted < min(n, start + 2 * bs):
                pending.append(ex.submit(prep, submitted))
                submitted += 1
            rows: list[int] = []
            tensors: list[torch.Tensor] = []
            for i in range(start, min(n, start + bs)):
                res = pending.popleft().result()
                if isinstance(res, ImageError):
                    errors[i] = res
                else:
                    rows.append(i)
                    tensors.append(res)
            if not tensors:
                continue
            x = torch.stack(tensors).to(device)
            with torch.inference_mode(), autocast():
                feats = model.encode_image(x)
            out[rows] = F.normalize(feats.float(), dim=-1).cpu().numpy()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    return ImageEncoding(out, errors)
