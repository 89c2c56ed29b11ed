"""The :class:`Encoder`: an open_clip model (loaded lazily) with text and image encoding.

``load_encoder`` resolves a model cheaply (files located, weights hashed once per process, logit
scale read from the weights file) and returns an encoder whose weights load on first use, so
``encoder.info.fingerprint`` can be used to look up cached label embeddings before any model is
built. ``Encoder.from_open_clip`` wraps a model the caller already holds (random weights included).
Holding the model, loading it, knowing its identity and running its text tower is the base class's
job (:class:`~zsindex.encoders.handle.ModelHandle`); :class:`Encoder` adds what zsindex computes
with it: label embeddings (templates, cache), text embeddings and image embeddings.

Importing this module does not import torch or open_clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zsindex.config import NetworkSettings
from zsindex.encoders.cache import TextEmbeddingCache
from zsindex.encoders.handle import ModelHandle
from zsindex.encoders.image_batch import ImageEncoding
from zsindex.encoders.images import DEFAULT_MAX_PIXELS, ImageSource
from zsindex.encoders.info import model_image_size
from zsindex.encoders.resolve import resolve_model
from zsindex.encoders.text import CheckFn, TextEncoding, encode_labels, tokenize_then_encode
from zsindex.encoders.text_forward import DEFAULT_TEXT_BATCH, ProgressFn
from zsindex.errors import InvalidInputError

__all__ = ["Encoder", "load_encoder"]


class Encoder(ModelHandle):
    """An open_clip model for zsindex: label embeddings, image embeddings, identity.

    Build one with :func:`load_encoder` (weights load on first use) or
    :meth:`Encoder.from_open_clip` (a model you already hold).
    """

    # ----------------------------------------------------------------- text
    def tokenize_and_encode(
        self,
        prompts: Sequence[str],
        *,
        batch_size: int = DEFAULT_TEXT_BATCH,
        progress: ProgressFn | None = None,
        check: CheckFn,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens, truncated, features)``; ``check(tokens, truncated)`` runs before the model
        is loaded or run (see :class:`~zsindex.encoders.text.TextRuntime`)."""
        return tokenize_then_encode(
            self, prompts, batch_size=batch_size, progress=progress, check=check
        )

    def encode_labels(
        self,
        labels: Sequence[str],
        templates: Sequence[str] | None,
        *,
        prompts: Sequence[Sequence[str] | None] | None = None,
        cache: TextEmbeddingCache | None = None,
        progress: ProgressFn | None = None,
        strict: bool = False,
        check_cached_truncation: bool = False,
        batch_size: int = DEFAULT_TEXT_BATCH,
    ) -> TextEncoding:
        """Embed labels: per label, the mean of its L2-normalised prompt embeddings, L2-normalised.

        Equal to ``open_clip.build_zero_shot_classifier(...).T`` within 1e-5 in fp32. Labels found
        in ``cache`` are not encoded; when all are found the model is not even loaded.

        Args:
            labels: label names (duplicates allowed; they share one computation).
            templates: ``{}``/``{c}`` templates; ``None``: each label is its own single prompt.
            prompts: per-label prompt lists overriding the templates (``None`` entries: templates).
            cache: a :class:`TextEmbeddingCache` read before and written after encoding.
            progress: called with ``(prompts done, prompts total)`` as batches finish.
            strict: prompts longer than the context raise :class:`InvalidInputError` naming the
                labels (checked for cached labels too) instead of being truncated with a warning.
            check_cached_truncation: also count truncation for labels served from the cache
                (needs the tokenizer, not the model).
            batch_size: prompts per forward pass.

        Returns:
            A :class:`TextEncoding` (``embeddings`` float32 ``[N, dim]``, ``num_truncated``, …).

        Raises:
            InvalidInputError: bad labels/templates/prompts, or truncation under ``strict``.
            ModelError: the model cannot be loaded.
        """
        return encode_labels(
            self,
            labels,
            templates,
            prompts=prompts,
            cache=cache,
            progress=progress,
            strict=strict,
            check_cached_truncation=check_cached_truncation,
            batch_size=batch_size,
        )

    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int = DEFAULT_TEXT_BATCH
    ) -> np.ndarray:
        """L2-normalised float32 embeddings ``[N, dim]`` of raw prompts (no templates)."""
        if isinstance(texts, str) or not texts:
            raise InvalidInputError("texts must be a non-empty list of strings")
        tokens, _ = self.tokenize_prompts(list(texts))
        return self.encode_tokens(tokens, batch_size=batch_size)

    # ----------------------------------------------------------------- images
    @property
    def image_size(self) -> int | None:
        """The model's input side in pixels (largest side if not square; loads the model)."""
        return model_image_size(self.model)

    def encode_images(
        self,
        images: Sequence[ImageSource],
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        draft: bool = True,
    ) -> np.ndarray:
        """L2-normalised float32 embeddings ``[N, dim]`` of images, in input order.

        Decoding (:func:`load_image`: EXIF orientation, RGB, alpha on white) and the model's own
        preprocessing run in a small thread pool, overlapping the batched forward passes.

        Args:
            images: paths, file bytes or PIL images (or tensors already made by
                :attr:`preprocess`, used as they are).
            batch_size: images per forward pass.
            num_workers: decode threads (default ``min(4, cpu count)``).
            max_pixels: refuse larger images (:class:`ImageTooLargeError`).
            draft: let JPEGs decode at a reduced scale no smaller than the model input (see
                :mod:`zsindex.encoders.images` for how far that moves embeddings).

        Raises:
            ImageError: an image is unreadable (the message names it); nothing is returned.
        """
        return self._encode_images(images, batch_size, num_workers, max_pixels, draft, True)[0]

    def try_encode_images(
        self,
        images: Sequence[ImageSource],
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        draft: bool = True,
    ) -> ImageEncoding:
        """Like :meth:`encode_images`, but an unreadable image does not stop the others.

        Returns:
            An :class:`ImageEncoding`: ``embeddings`` ``[N, dim]`` (NaN rows for failed images)
            and ``errors`` (input index → :class:`ImageError`).
        """
        return self._encode_images(images, batch_size, num_workers, max_pixels, draft, False)[1]

    def _encode_images(
        self,
        images: Sequence[ImageSource],
        batch_size: int,
        num_workers: int | None,
        max_pixels: int,
        draft: bool,
        raise_errors: bool,
    ) -> tuple[np.ndarray, ImageEncoding]:
        from zsindex.encoders.image_batch import encode_image_batch
        from zsindex.encoders.text_forward import autocast_context

        if isinstance(images, (str, bytes)):
            raise InvalidInputError("images must be a list (of paths, bytes or PIL images)")
        loaded = self._get_loaded()
        result = encode_image_batch(
            loaded.model,
            loaded.preprocess,
            images,
            dim=self.info.dim,
            device=loaded.device,
            autocast=lambda: autocast_context(loaded.device, self._precision),
            batch_size=batch_size,
            num_workers=num_workers,
            max_pixels=max_pixels,
            draft_size=model_image_size(loaded.model) if draft else None,
            raise_errors=raise_errors,
        )
        return result.embeddings, result

    def __repr__(self) -> str:
        state = "loaded" if self.is_loaded else "not loaded"
        pre = f", pretrained={self._pretrained!r}" if self._pretrained else ""
        return f"Encoder({self._name!r}{pre}, {state})"


def load_encoder(
    name: str,
    pretrained: str | None = None,
    device: str = "auto",
    *,
    precision: str = "auto",
    cache_dir: str | None = None,
    allow_download: bool = True,
    eager: bool = False,
    network: NetworkSettings | None = None,
) -> Encoder:
    """Resolve a model and return its :class:`Encoder`; weights load on first use.

    Resolution is cheap and fails fast: unknown names, missing files and offline-without-cache
    raise :class:`ModelError` here, with one line naming the ways out.

    Args:
        name: open_clip architecture, ``hf-hub:org/repo``, ``local-dir:/path`` or ``zsindex-tiny``.
        pretrained: pretrained tag or weights file (architectures only).
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``auto`` (fp16 autocast on CUDA), ``fp32``, ``fp16``, ``bf16``.
        cache_dir: download cache folder.
        allow_download: whether missing weights may be downloaded when online.
        eager: load the weights now instead of on first use.
        network: offline flag, Hub address and proxies (``Settings.network``; default: read
            from the environment by :func:`zsindex.config.network_from_env`).
    """
    resolved = resolve_model(
        name, pretrained, cache_dir=cache_dir, allow_download=allow_download, network=network
    )
    enc = Encoder(resolved=resolved, device=device, precision=precision)
    if eager:
        enc.load()
    return enc
