"""A standard open_clip ``CLIP`` built with torch alone: both towers, logit scale, preprocess.

A one-shot ``zsindex classify one.png`` spent most of its time importing open_clip (which
imports torchvision, ``torch._dynamo`` and timm) to build a model whose parts are a handful of
torch modules. :func:`read_plain_model` builds those parts itself when the model is the standard
kind — the text tower of :mod:`zsindex.encoders.plain_tower` and an image tower of
:mod:`zsindex.encoders.plain_vision` (``VisionTransformer`` or ``ModifiedResNet``) — under
open_clip's state-dict names, loads the checkpoint strictly (every key, every shape), and gives
the inference preprocess of :mod:`zsindex.encoders.plain_preprocess`. Anything else (a config key
or value not implemented, a checkpoint whose keys or shapes differ, an unreadable file) gives
``None`` and :mod:`zsindex.encoders.loading` builds the model with open_clip, as before.

The model answers what zsindex asks of an open_clip model — ``encode_image``, ``encode_text``,
``visual`` (with ``preprocess_cfg``, ``image_size``, ``output_dim``), ``logit_scale``,
``logit_bias``, ``text_projection``, ``context_length`` — with open_clip's numbers (tests compare
them bit for bit), and its text tower runs through the prefix tree like open_clip's
(:func:`zsindex.encoders.towers.detect_tower`).

This module imports torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from zsindex.encoders.plain_preprocess import (
    open_clip_transform,
    plain_transform,
    preprocess_config,
)
from zsindex.encoders.plain_tower import PlainTextModel, plain_text_config
from zsindex.encoders.plain_vision import build_visual, plain_vision_config

__all__ = ["PlainCLIP", "build_plain_model", "plain_model_supported", "read_plain_model"]


class PlainCLIP(PlainTextModel):
    """open_clip's ``CLIP`` for the configs both gates admit, state-dict keys unchanged."""

    def __init__(
        self,
        text_cfg: Mapping[str, Any],
        vision_cfg: Mapping[str, Any],
        *,
        nonscalar_logit_scale: bool,
        logit_bias: bool,
    ) -> None:
        super().__init__(text_cfg)
        self.visual = build_visual(vision_cfg)
        self.context_length: int = text_cfg["context_length"]
        self.vocab_size: int = text_cfg["vocab_size"]
        self.text_pool_type = "argmax"
        self.text_eos_id = None
        shape = [1] if nonscalar_logit_scale else []
        self.logit_scale = nn.Parameter(torch.ones(shape))
        self.logit_bias: nn.Parameter | None = (
            nn.Parameter(torch.zeros(shape)) if logit_bias else None
        )

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's ``CLIP.encode_image``."""
        features: torch.Tensor = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's ``CLIP.encode_text`` (full context, ``argmax`` pooling)."""
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(text).to(cast_dtype)
        x = x + self.positional_embedding.to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]
        x = x @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x


_FILLS = frozenset({"uniform_", "normal_", "fill_", "zero_"})


class _SkipInit(TorchFunctionMode):
    """Skips ``torch.nn.init`` and in-place random/constant fills while modules are built:
    every parameter and persistent buffer is then replaced by the checkpoint's."""

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if getattr(func, "__module__", None) == "torch.nn.init" or name in _FILLS:
            return args[0] if args else kwargs.get("tensor")
        return func(*args, **kwargs)


def _own(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in a contiguous, 64-byte aligned allocation of its own, as a parameter open_clip
    copied the checkpoint into. Tensors read from a safetensors file sit at the file's offsets:
    misaligned, some kernels take other code paths and the last bit of a result moves."""
    own = tensor.untyped_storage().nbytes() == tensor.nbytes  # no view into a larger buffer
    if own and tensor.is_contiguous() and tensor.data_ptr() % 64 == 0:
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def _configs(model_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    text = plain_text_config(model_cfg)
    vision = plain_vision_config(model_cfg)
    if text is None or vision is None:
        return None
    return text, vision


def plain_model_supported(model_cfg: Mapping[str, Any]) -> bool:
    """Whether :func:`build_plain_model` may build this config (the weights still decide)."""
    return _configs(model_cfg) is not None


def _logit_flags(model_cfg: Mapping[str, Any]) -> dict[str, bool]:
    return {
        "nonscalar_logit_scale": bool(model_cfg.get("nonscalar_logit_scale", False)),
        "logit_bias": model_cfg.get("init_logit_bias") is not None,
    }


def build_plain_model(
    model_cfg: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    device: str = "cpu",
    *,
    consume: bool = False,
) -> PlainCLIP | None:
    """The model of ``model_cfg`` with the weights of ``state`` (float32, eval mode, on
    ``device``; no preprocess set), or ``None`` when either is not the standard kind. With
    ``consume`` (``state`` a dict handed over), entries leave ``state`` as they are taken, so
    the checkpoint is not held twice while it is copied (600 MB for a ViT-B-32)."""
    cfgs = _configs(model_cfg)
    if cfgs is None:
        return None
    flags = _logit_flags(model_cfg)
    # Built without random initialisation and then given the checkpoint's own tensors
    # (assign=True): no fill or copy of weights that the checkpoint replaces anyway (~0.4 s for
    # zsindex-tiny, seconds for a ViT-B). The values are the float32 numbers a copy into
    # open_clip's parameters gives. (The meta device would do the same but its random fills
    # import torch._dynamo and sympy.)
    with _SkipInit():
        model = PlainCLIP(
            cfgs[0],
            cfgs[1],
            nonscalar_logit_scale=flags["nonscalar_logit_scale"],
            logit_bias=flags["logit_bias"],
        )
    expected = model.state_dict()
    if set(state) != set(expected) or any(
        tuple(state[k].shape) != tuple(v.shape) for k, v in expected.items()
    ):
        return None  # open_clip's loader converts, resizes or reports
    given: dict[str, torch.Tensor] = {}
    for key, value in expected.items():
        tensor = state.pop(key) if consume and isinstance(state, dict) else state[key]
        given[key] = _own(tensor.to(value.dtype))
        del tensor
    model.load_state_dict(given, strict=True, assign=True)
    n = model.context_length  # the one non-persistent buffer: not in any checkpoint
    model.register_buffer("attn_mask", torch.full((n, n), float("-inf")).triu(1), persistent=False)
    model.to(device)
    model.eval()
    return model


def set_preprocess_cfg(model: PlainCLIP, cfg: Mapping[str, Any]) -> None:
    """open_clip's ``set_model_preprocess_cfg``: the settings travel on ``model.visual``."""
    visual: Any = model.visual  # the attributes open_clip sets on its towers
    visual.image_mean = cfg["mean"]
    visual.image_std = cfg["std"]
    visual.preprocess_cfg = copy.deepcopy(dict(cfg))


def read_plain_model(
    model_cfg: Mapping[str, Any],
    weights_path: Path,
    arch: str,
    preprocess_overrides: Mapping[str, Any],
    device: str = "cpu",
) -> tuple[PlainCLIP, Callable[[Any], Any]] | None:
    """``(model, preprocess)`` for a resolved model without open_clip, or ``None`` (see the
    module docstring). ``arch`` and ``preprocess_overrides`` are the resolved model's: they
    decide the preprocessing as they do for ``open_clip.create_model``."""
    if not plain_model_supported(model_cfg):
        return None
    from zsindex.encoders.aligned_safetensors import read_aligned
    from zsindex.encoders.weights import read_state_dict

    state = read_aligned(weights_path) if weights_path.suffix.lower() == ".safetensors" else None
    if state is None:
        try:
            state = read_state_dict(weights_path)
        except Exception:  # e.g. ModelError: open_clip's path reports it in its own words
            return None
    model = build_plain_model(model_cfg, state, device, consume=True)
    del state
    if model is None:
        return None
    size = model.visual.image_size
    try:
        cfg = preprocess_config(arch, preprocess_overrides, size)  # type: ignore[arg-type]  # nn.Module attributes are typed as Tensor | Module
    except (OSError, ValueError):
        return None
    set_preprocess_cfg(model, cfg)
    preprocess = plain_transform(cfg)
    return model, (preprocess if preprocess is not None else open_clip_transform(cfg))
