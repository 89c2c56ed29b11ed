"""The :class:`Encoder`: an open_clip model (loaded lazily) with text and image encoding.

``load_encoder`` resolves a model cheaply (files located, weights hashed once per process, logit
scale read from the weights file) and returns an encoder whose weights load on first use, so
``encoder.info.fingerprint`` can be used to look up cached label embeddings before any model is
built. ``Encoder.from_open_clip`` wraps a model the caller already holds (random weights included).

Importing this module does not import torch or open_clip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.encoders.cache import TextEmbeddingCache
from zsindex.encoders.fast_tokenizer import FastTokenizer, standalone_tokenizer
from zsindex.encoders.image_batch import ImageEncoding
from zsindex.encoders.images import DEFAULT_MAX_PIXELS, ImageSource
from zsindex.encoders.info import (
    ModelInfo,
    model_dim,
    model_image_size,
    state_dict_sha256,
    weights_sha256,
)
from zsindex.encoders.loading import LoadedModel, get_loaded, get_tokenizer, resolve_device
from zsindex.encoders.resolve import ResolvedModel, resolve_model
from zsindex.encoders.text import (
    DEFAULT_TEXT_BATCH,
    CheckFn,
    ProgressFn,
    TextEncoding,
    encode_labels,
)
from zsindex.errors import InvalidInputError, ModelError

if TYPE_CHECKING:
    import torch

__all__ = ["Encoder", "load_encoder"]

_PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def _check_device(device: str | None) -> str:
    dev = (device or "auto").strip()
    if dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit()):
        return dev
    raise InvalidInputError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


class Encoder:
    """An open_clip model for zsindex: label embeddings, image embeddings, identity.

    Build one with :func:`load_encoder` (weights load on first use) or
    :meth:`Encoder.from_open_clip` (a model you already hold).
    """

    def __init__(
        self,
        *,
        resolved: ResolvedModel | None = None,
        loaded: LoadedModel | None = None,
        info: ModelInfo | None = None,
        name: str | None = None,
        pretrained: str | None = None,
        device: str | None = "auto",
        precision: str = "auto",
    ) -> None:
        if resolved is None and loaded is None:
            raise ValueError("Encoder needs a resolved model or a loaded one")
        if precision not in _PRECISIONS:
            raise InvalidInputError(
                f"precision {precision!r} is not one of {', '.join(_PRECISIONS)}"
            )
        self._resolved = resolved
        self._loaded = loaded
        self._device_request = _check_device(device)
        self._precision = precision
        self._name = name or (resolved.name if resolved else "custom")
        self._pretrained = pretrained if resolved is None else resolved.pretrained
        self._info = info if info is not None else (resolved.info if resolved else None)
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_open_clip(
        cls,
        model: torch.nn.Module,
        tokenizer: Callable[..., Any],
        preprocess: Callable[[Any], Any],
        *,
        name: str = "custom",
        pretrained: str | None = None,
        device: str | None = None,
        precision: str = "auto",
    ) -> Encoder:
        """Wrap an open_clip model, tokenizer and (inference) preprocess you already hold.

        Args:
            model: an open_clip ``CLIP``/``CustomTextCLIP``-like model (random weights are fine).
            tokenizer: its tokenizer (``open_clip.get_tokenizer(...)``).
            preprocess: its inference image transform.
            name: the name recorded in :attr:`info`.
            pretrained: the tag or path recorded in :attr:`info`.
            device: move the model there; ``None`` keeps it where it is.
            precision: ``auto`` (fp16 autocast on CUDA, fp32 on CPU), ``fp32``, ``fp16``, ``bf16``.
        """
        if device is None:
            param = next(iter(model.parameters()), None)
            dev = str(param.device) if param is not None else "cpu"
        else:
            dev = resolve_device(_check_device(device))
            model.to(dev)
        model.eval()
        loaded = LoadedModel(
            model=model, preprocess=preprocess, device=dev, tokenizer_factory=lambda: tokenizer
        )
        return cls(loaded=loaded, name=name, pretrained=pretrained, device=dev, precision=precision)

    # ----------------------------------------------------------------- state
    @property
    def name(self) -> str:
        """The model name recorded in :attr:`info`."""
        return self._name

    @property
    def is_loaded(self) -> bool:
        """Whether the model weights are in memory."""
        return self._loaded is not None

    def load(self) -> Encoder:
        """Load the weights now (from the per-process cache when another encoder loaded them)."""
        self._get_loaded()
        return self

    def _get_loaded(self) -> LoadedModel:
        with self._lock:
            if self._loaded is None:
                assert self._resolved is not None
                device = resolve_device(self._device_request)
                self._loaded = get_loaded(self._resolved, device)
            return self._loaded

    @property
    def model(self) -> torch.nn.Module:
        """The open_clip model (loads it)."""
        return self._get_loaded().model

    @property
    def preprocess(self) -> Callable[[Any], Any]:
        """The model's own inference image transform (loads the model)."""
        return self._get_loaded().preprocess

    @property
    def tokenizer(self) -> Callable[..., Any]:
        """The model's tokenizer (does not load the weights)."""
        return self.text_tokenizer()

    @property
    def device(self) -> str:
        """Where the model runs (resolves ``auto``)."""
        if self._loaded is not None:
            return self._loaded.device
        return resolve_device(self._device_request)

    @property
    def info(self) -> ModelInfo:
        """Identity, dimension, logit scale/bias, context length and cache fingerprint.

        Cheap for resolved models (no model load); for wrapped models the state-dict hash is
        computed once per encoder.
        """
        with self._lock:
            if self._info is None:
                self._info = self._compute_info()
            return self._info

    def _compute_info(self) -> ModelInfo:
        loaded = self._get_loaded()
        model = loaded.model
        if self._resolved is not None:
            sha = weights_sha256(self._resolved.weights_path)
        else:
            sha = state_dict_sha256(model)
        dim = model_dim(model)
        if dim is None:
            dim = int(self.encode_texts(["a"]).shape[1])
        scale = getattr(model, "logit_scale", None)
        bias = getattr(model, "logit_bias", None)
        if scale is None:
            raise ModelError(f"model {self._name} has no logit_scale")
        ctx: Any = getattr(model, "context_length", None)
        if not isinstance(ctx, int):
            ctx = getattr(loaded.tokenizer, "context_length", None) or 77
        return ModelInfo(
            name=self._name,
            pretrained=self._pretrained,
            weights_sha256=sha,
            dim=dim,
            logit_scale=float(scale.exp().item()),
            logit_bias=None if bias is None else float(bias.item()),
            context_length=int(ctx),
        )

    # ----------------------------------------------------------------- text
    def text_tokenizer(self) -> Callable[..., Any]:
        """The tokenizer alone; never loads the model weights."""
        if self._loaded is not None:
            return self._loaded.tokenizer
        assert self._resolved is not None
        return get_tokenizer(self._resolved.tokenizer_source)

    def standalone_tokenizer(self) -> FastTokenizer | None:
        """The model's tokenizer without torch or open_clip, where that is exact (open_clip's
        default BPE tokenizer; see :func:`~zsindex.encoders.fast_tokenizer.standalone_tokenizer`),
        else ``None``. Only for resolved models: a wrapped model brings its own tokenizer."""
        if self._resolved is None:
            return None
        return standalone_tokenizer(self._resolved.model_cfg, self._resolved.tokenizer_source)

    def tokenize_prompts(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens [n, context] int64, truncated bool [n])`` exactly as the model's open_clip
        tokenizer cuts them; never loads the weights. Where it is exact, this does not even
        import open_clip (≈5 s with torch, torchvision and timm)."""
        from zsindex.encoders.text import tokenize

        fast = self.standalone_tokenizer()
        if fast is not None:
            return fast.token_array(prompts)
        return tokenize(self.text_tokenizer(), prompts)

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
        from zsindex.encoders.text import tokenize_then_encode

        return tokenize_then_encode(
            self, prompts, batch_size=batch_size, progress=progress, check=check
        )

    def encode_tokens(
        self,
        tokens: np.ndarray,
        *,
        batch_size: int = DEFAULT_TEXT_BATCH,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """L2-normalised float32 ``[n, dim]`` features of token rows (loads the model)."""
        from zsindex.encoders.text import encode_prompts

        loaded = self._get_loaded()
        emb = encode_prompts(
            loaded.model,
            tokens,
            device=loaded.device,
            precision=self._precision,
            batch_size=batch_size,
            progress=progress,
        )
        return emb.numpy()

    @property
    def resolved(self) -> ResolvedModel | None:
        """Where the model's files are (``None`` for a wrapped model)."""
        return self._resolved

    @property
    def device_request(self) -> str:
        """The device as asked for (``auto`` not yet resolved)."""
        return self._device_request

    @property
    def precision(self) -> str:
        """``auto``, ``fp32``, ``fp16`` or ``bf16``."""
        return self._precision

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
        from zsindex.encoders.text import _autocast

        if isinstance(images, (str, bytes)):
            raise InvalidInputError("images must be a list (of paths, bytes or PIL images)")
        loaded = self._get_loaded()
        result = encode_image_batch(
            loaded.model,
            loaded.preprocess,
            images,
            dim=self.info.dim,
            device=loaded.device,
            autocast=lambda: _autocast(loaded.device, self._precision),
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
    """
    resolved = resolve_model(name, pretrained, cache_dir=cache_dir, allow_download=allow_download)
    enc = Encoder(resolved=resolved, device=device, precision=precision)
    if eager:
        enc.load()
    return enc
