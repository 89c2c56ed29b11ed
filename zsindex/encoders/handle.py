"""The model behind an :class:`~zsindex.encoders.Encoder`: located, loaded on first use, known.

A :class:`ModelHandle` holds a resolved model (files located by
:func:`~zsindex.encoders.resolve.resolve_model`, weights built on first use and cached per process)
or a model the caller already holds (:meth:`ModelHandle.from_open_clip`), its identity
(:class:`~zsindex.encoders.info.ModelInfo`: cheap for resolved models, no model load) and its raw
text tower: prompts to token ids, token ids to L2-normalised features. What zsindex computes with
it (label embeddings, image embeddings) is :class:`~zsindex.encoders.encoder.Encoder`'s.

Importing this module does not import torch or open_clip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from zsindex.encoders.info import ModelInfo, model_dim, state_dict_sha256, weights_sha256
from zsindex.encoders.loading import LoadedModel, get_loaded, get_tokenizer, resolve_device
from zsindex.encoders.resolve import ResolvedModel
from zsindex.encoders.text_forward import DEFAULT_TEXT_BATCH, ProgressFn, encode_prompts, tokenize
from zsindex.errors import InvalidInputError, ModelError

if TYPE_CHECKING:
    import torch

    from zsindex.encoders.fast_tokenizer import FastTokenizer

__all__ = ["ModelHandle"]

_PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def _check_device(device: str | None) -> str:
    dev = (device or "auto").strip()
    if dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit()):
        return dev
    raise InvalidInputError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


class ModelHandle:
    """An open_clip model, resolved (weights load on first use) or wrapped, with its identity.

    The base of :class:`~zsindex.encoders.encoder.Encoder`; build one with
    :func:`~zsindex.encoders.encoder.load_encoder` or :meth:`from_open_clip`.
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
    ) -> Self:
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

    def load(self) -> Self:
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
        """The model (loads it): open_clip's, or for a standard CLIP the same modules and
        weights built without open_clip (:class:`~zsindex.encoders.plain_model.PlainCLIP`)."""
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
        if dim is None:  # nothing to read it from: embed one prompt
            tokens, _ = self.tokenize_prompts(["a"])
            dim = int(self.encode_tokens(tokens).shape[1])
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

    # ----------------------------------------------------------------- text tower
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
        # Imported here: a process that only encodes images never reads the BPE tables.
        from zsindex.encoders.fast_tokenizer import standalone_tokenizer

        return standalone_tokenizer(self._resolved.model_cfg, self._resolved.tokenizer_source)

    def tokenize_prompts(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens [n, context] int64, truncated bool [n])`` exactly as the model's open_clip
        tokenizer cuts them; never loads the weights. Where it is exact, this does not even
        import open_clip (≈5 s with torch, torchvision and timm)."""
        fast = self.standalone_tokenizer()
        if fast is not None:
            return fast.token_array(prompts)
        return tokenize(self.text_tokenizer(), prompts)

    def encode_tokens(
        self,
        tokens: np.ndarray,
        *,
        batch_size: int = DEFAULT_TEXT_BATCH,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """L2-normalised float32 ``[n, dim]`` features of token rows (loads the model)."""
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
