"""Model resolution, OpenCLIP text/image encoding, template ensembling and the embedding cache.

Importing this package is light: nothing here imports torch or open_clip until a model is
resolved by a pretrained tag, loaded, or used. Public names are loaded lazily on first access.

Typical use (the store's flow: identity first, cache next, model only for misses)::

    from zsindex.encoders import load_encoder, MemoryTextEmbeddingCache

    enc = load_encoder("zsindex-tiny")            # resolves files; weights load on first use
    enc.info.fingerprint, enc.info.logit_scale    # cheap: no model load
    out = enc.encode_labels(["dog", "cat"], ["a photo of a {}."], cache=cache)
    out.embeddings                                # float32 [2, dim], L2-normalised
    enc.encode_images(["dog.jpg", pil_image])     # float32 [2, dim], L2-normalised
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zsindex.encoders.cache import MemoryTextEmbeddingCache, TextEmbeddingCache
    from zsindex.encoders.encoder import Encoder, load_encoder
    from zsindex.encoders.image_batch import ImageEncoding
    from zsindex.encoders.images import (
        ALLOWED_FORMATS,
        DEFAULT_MAX_PIXELS,
        ImageHeader,
        check_image,
        load_image,
    )
    from zsindex.encoders.info import (
        ModelInfo,
        clear_weights_hash_cache,
        model_fingerprint,
        weights_hash_stats,
        weights_sha256,
    )
    from zsindex.encoders.loading import clear_model_cache, model_cache_stats
    from zsindex.encoders.prompts import build_prompts, label_key, templates_digest
    from zsindex.encoders.resolve import ResolvedModel, resolve_model, tiny_model_dir
    from zsindex.encoders.text import TextEncoding

_EXPORTS: dict[str, str] = {
    "Encoder": "encoder",
    "load_encoder": "encoder",
    "ModelInfo": "info",
    "model_fingerprint": "info",
    "weights_sha256": "info",
    "weights_hash_stats": "info",
    "clear_weights_hash_cache": "info",
    "TextEncoding": "text",
    "ImageEncoding": "image_batch",
    "TextEmbeddingCache": "cache",
    "MemoryTextEmbeddingCache": "cache",
    "templates_digest": "prompts",
    "label_key": "prompts",
    "build_prompts": "prompts",
    "load_image": "images",
    "check_image": "images",
    "ImageHeader": "images",
    "ALLOWED_FORMATS": "images",
    "DEFAULT_MAX_PIXELS": "images",
    "resolve_model": "resolve",
    "ResolvedModel": "resolve",
    "tiny_model_dir": "resolve",
    "clear_model_cache": "loading",
    "model_cache_stats": "loading",
}

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "Encoder",
    "ImageEncoding",
    "ImageHeader",
    "MemoryTextEmbeddingCache",
    "ModelInfo",
    "ResolvedModel",
    "TextEmbeddingCache",
    "TextEncoding",
    "build_prompts",
    "check_image",
    "clear_model_cache",
    "clear_weights_hash_cache",
    "label_key",
    "load_encoder",
    "load_image",
    "model_cache_stats",
    "model_fingerprint",
    "resolve_model",
    "templates_digest",
    "tiny_model_dir",
    "weights_hash_stats",
    "weights_sha256",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zsindex.encoders' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"zsindex.encoders.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
