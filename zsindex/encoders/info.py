"""Model identity: :class:`ModelInfo`, weight-file hashing and state-dict fingerprints.

Weight hashes are cached per process by ``(real path, size, mtime_ns)``: a file is hashed again
only when one of those changes. Nothing here imports torch at module level.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "ModelInfo",
    "clear_weights_hash_cache",
    "model_dim",
    "model_fingerprint",
    "model_image_size",
    "state_dict_sha256",
    "weights_hash_stats",
    "weights_sha256",
]

_CHUNK = 8 * 1024 * 1024
_HASH_LOCK = threading.Lock()
_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_STATS = {"computed": 0, "cached": 0}


def model_fingerprint(name: str, pretrained: str | None, weights_sha256: str) -> str:
    """The cache key of a model: SHA-256 of name, pretrained tag/path and weights hash."""
    # A weights *path* is identified by its hash alone, so moving the file keeps the fingerprint.
    pre = "file" if pretrained and os.path.isabs(pretrained) else (pretrained or "")
    payload = "\x00".join(["zsindex-model-v1", name, pre, weights_sha256])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """What identifies a model and what classification needs from it without loading it.

    Attributes:
        name: model name as resolved (``ViT-B-32``, ``hf-hub:org/repo``, ``local-dir:/abs/path``,
            ``zsindex-tiny``, or a user-chosen name for in-memory models).
        pretrained: pretrained tag or absolute weights path (``None`` where none applies).
        weights_sha256: SHA-256 of the weights file; for in-memory models a deterministic
            SHA-256 over the state dict (names, dtypes, shapes, bytes).
        dim: embedding dimension.
        logit_scale: ``model.logit_scale.exp().item()``.
        logit_bias: ``model.logit_bias.item()`` (SigLIP-style models) or ``None``.
        context_length: text context length in tokens.
        fingerprint: SHA-256 of name, pretrained and weights hash; the embedding-cache key.
    """

    name: str
    pretrained: str | None
    weights_sha256: str
    dim: int
    logit_scale: float
    logit_bias: float | None
    context_length: int
    fingerprint: str = field(default="", compare=True)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            fp = model_fingerprint(self.name, self.pretrained, self.weights_sha256)
            object.__setattr__(self, "fingerprint", fp)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "weights_sha256": self.weights_sha256,
            "dim": self.dim,
            "logit_scale": self.logit_scale,
            "logit_bias": self.logit_bias,
            "context_length": self.context_length,
            "fingerprint": self.fingerprint,
        }


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex of a file, cached per process by (real path, size, mtime_ns).

    Raises:
        OSError: the file cannot be read.
    """
    real = os.path.realpath(os.fspath(path))
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        hit = _HASH_CACHE.get(key)
        if hit is not None:
            _HASH_STATS["cached"] += 1
            return hit
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = value
        _HASH_STATS["computed"] += 1
    return value


def weights_hash_stats() -> dict[str, int]:
    """Counters of the weight-hash cache: ``computed`` (files hashed) and ``cached`` (hits)."""
    with _HASH_LOCK:
        return dict(_HASH_STATS)


def clear_weights_hash_cache() -> None:
    """Forget every cached weight hash (counters are kept)."""
    with _HASH_LOCK:
        _HASH_CACHE.clear()


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Deterministic SHA-256 over a module's state dict (sorted names, dtype, shape, raw bytes)."""
    import torch

    digest = hashlib.sha256(b"zsindex-state-dict-v1")
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"\x00{name}\x00{t.dtype}\x00{tuple(t.shape)}\x00".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_dim(model: Any) -> int | None:
    """The embedding dimension from the text projection (or the visual output), if visible."""
    import torch
    from torch import nn

    for owner in (model, getattr(model, "text", None)):
        proj = getattr(owner, "text_projection", None)
        if isinstance(proj, nn.Linear):
            return int(proj.out_features)
        if isinstance(proj, torch.Tensor) and proj.ndim == 2:
            return int(proj.shape[1])
    out = getattr(getattr(model, "visual", None), "output_dim", None)
    return int(out) if isinstance(out, int) else None


def model_image_size(model: Any) -> int | None:
    """The model's input side in pixels (the largest side when not square), if known."""
    visual = getattr(model, "visual", None)
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    size = cfg.get("size") if isinstance(cfg, dict) else None
    if size is None:
        size = getattr(visual, "image_size", None)
    if isinstance(size, int):
        return size
    if isinstance(size, (tuple, list)) and size and all(isinstance(s, int) for s in size):
        return int(max(size))
    return None
