"""Standard CLIP image towers built from their config with torch alone (no open_clip).

open_clip builds the image tower of every ``ViT-*`` architecture as its ``VisionTransformer``
(patch convolution, class token, learned positional embedding, ``ln_pre``, pre-norm
``ResidualAttentionBlock``s, ``ln_post``, class-token pooling, projection) and that of every
``RN*`` architecture and ``zsindex-tiny`` as its ``ModifiedResNet`` (three-convolution stem,
anti-aliased ``Bottleneck`` stages, attention pooling). This module builds the same modules under
the same state-dict names and runs the same torch calls in the same order, so the numbers are
open_clip's bit for bit (tests hold them to it on random-weight architectures).

The gate (:func:`plain_vision_config`) is conservative: a vision-config key it does not know, or a
value other than the ones implemented here (timm towers, attentional pooling, sin-cos positions,
custom blocks, extra norm/activation arguments, output tokens), gives ``None`` and the model is
built by open_clip.

This module imports torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zsindex.encoders.plain_tower import LayerNorm, PlainBlock, PlainTransformer, QuickGELU

__all__ = ["PlainModifiedResNet", "PlainVisionTransformer", "build_visual", "plain_vision_config"]


def _positive(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _size(v: Any) -> bool:
    return _positive(v) or (
        isinstance(v, (list, tuple)) and len(v) == 2 and all(_positive(s) for s in v)
    )


def _false(v: Any) -> bool:
    return v is False


def _anything(v: Any) -> bool:
    return True


# open_clip CLIPVisionCfg fields, each with what this module supports.
_VISION_KEYS: dict[str, Callable[[Any], bool]] = {
    "layers": lambda v: (
        _positive(v)
        or (isinstance(v, (list, tuple)) and len(v) == 4 and all(_positive(n) for n in v))
    ),
    "width": _positive,
    "head_width": _positive,
    "mlp_ratio": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
    "patch_size": lambda v: v is None or _positive(v),
    "image_size": _size,
    "ls_init_value": lambda v: v is None or isinstance(v, (int, float)),
    "patch_dropout": lambda v: v == 0,  # (an eval-mode no-op either way; kept strict)
    "attentional_pool": _false,
    "attn_pooler_queries": _anything,  # used only with attentional pooling
    "attn_pooler_heads": _anything,
    "no_ln_pre": lambda v: isinstance(v, bool),
    "pos_embed_type": lambda v: v == "learnable",
    "final_ln_after_pool": lambda v: isinstance(v, bool),
    "pool_type": lambda v: v in ("tok", "avg"),
    "output_tokens": _false,
    "act_kwargs": lambda v: v is None,
    "norm_kwargs": lambda v: v is None,
    "block_type": lambda v: v in (None, "default"),
    "qk_norm": _false,
    "scaled_cosine_attn": _false,
    "scale_heads": _false,
    "scale_attn_inner": _false,
    "scale_attn": _false,
    "scale_fc": _false,
    "timm_model_name": lambda v: v is None,
    "timm_model_pretrained": _anything,  # the timm_* keys are read only with a timm model name
    "timm_pool": _anything,
    "timm_proj": _anything,
    "timm_proj_bias": _anything,
    "timm_drop": _anything,
    "timm_drop_path": _anything,
}


def plain_vision_config(model_cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The image-tower settings of ``model_cfg`` when its tower is one this module builds, else
    ``None``. ``kind`` is ``vit`` or ``resnet``; the other keys are those of the tower."""
    vision = model_cfg.get("vision_cfg")
    if not isinstance(vision, Mapping) or not _positive(model_cfg.get("embed_dim")):
        return None
    for key, value in vision.items():
        check = _VISION_KEYS.get(key)
        if check is None or not check(value):
            return None
    layers = vision.get("layers", 12)
    width = int(vision.get("width", 768))
    head_width = int(vision.get("head_width", 64))
    image_size = vision.get("image_size", 224)
    common = {"width": width, "image_size": image_size, "embed_dim": int(model_cfg["embed_dim"])}
    if isinstance(layers, (list, tuple)):
        heads = width * 32 // head_width  # open_clip's rule for the attention pool
        if not isinstance(image_size, int) or heads < 1 or (width * 32) % heads:
            return None
        return {"kind": "resnet", "layers": [int(n) for n in layers], "heads": heads, **common}
    patch = vision.get("patch_size", 16)
    heads = width // head_width
    if patch is None or heads < 1 or width % heads:
        return None
    return {
        "kind": "vit",
        **common,
        # open_clip's to_2tuple: an int becomes a tuple, a list stays the list it was
        "image_size": (image_size, image_size) if isinstance(image_size, int) else image_size,
        "patch_size": int(patch),
        "layers": int(layers),
        "heads": heads,
        "mlp_width": int(width * float(vision.get("mlp_ratio", 4.0))),
        "ls_init_value": vision.get("ls_init_value"),
        "no_ln_pre": bool(vision.get("no_ln_pre", False)),
        "final_ln_after_pool": bool(vision.get("final_ln_after_pool", False)),
        "pool_type": str(vision.get("pool_type", "tok")),
        "quick_gelu": bool(model_cfg.get("quick_gelu", False)),
    }


class PlainVisionTransformer(nn.Module):
    """open_clip's ``VisionTransformer`` for the settings :func:`plain_vision_config` admits."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        width, patch = cfg["width"], cfg["patch_size"]
        self.image_size: tuple[int, int] | list[int] = cfg["image_size"]
        self.patch_size = (patch, patch)
        self.grid_size = (int(self.image_size[0]) // patch, int(self.image_size[1]) // patch)
        self.output_dim: int = cfg["embed_dim"]
        self.pool_type: str = cfg["pool_type"]
        self.final_ln_after_pool: bool = cfg["final_ln_after_pool"]
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(
            torch.empty(self.grid_size[0] * self.grid_size[1] + 1, width)
        )
        self.ln_pre: nn.Module = nn.Identity() if cfg["no_ln_pre"] else LayerNorm(width)
        act = QuickGELU if cfg["quick_gelu"] else nn.GELU
        layer_scale = cfg["ls_init_value"] is not None
        self.transformer = PlainTransformer(
            [
                PlainBlock(width, cfg["heads"], cfg["mlp_width"], layer_scale, act)
                for _ in range(cfg["layers"])
            ]
        )
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, self.output_dim))

    def _global_pool(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:].mean(dim=1) if self.pool_type == "avg" else x[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls.to(x.dtype), x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        pooled: torch.Tensor
        if self.final_ln_after_pool:
            pooled = self.ln_post(self._global_pool(x))
        else:
            pooled = self._global_pool(self.ln_post(x))
        return pooled @ self.proj


class Bottleneck(nn.Module):
    """open_clip's ``modified_resnet.Bottleneck`` (anti-aliased: avg-pool before a stride)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool: nn.Module = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        out += identity
        return self.act3(out)  # type: ignore[no-any-return]  # nn.ReLU is typed as returning Any


class AttentionPool2d(nn.Module):
    """open_clip's ``AttentionPool2d``: the mean token attends over the feature map."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(spacial_dim**2 + 1, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]).permute(2, 0, 1)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x,
            key=x,
            value=x,
            embed_dim_to_check=x.shape[-1],
            num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True,
            training=self.training,
            need_weights=False,
        )
        return x[0]


class PlainModifiedResNet(nn.Module):
    """open_clip's ``ModifiedResNet``: the image tower of the ``RN*`` models and zsindex-tiny."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        width, layers = cfg["width"], cfg["layers"]
        self.output_dim: int = cfg["embed_dim"]
        self.image_size: int = cfg["image_size"]
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(
            self.image_size // 32, width * 32, cfg["heads"], self.output_dim
        )

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        out = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        out.extend(Bottleneck(self._inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)  # type: ignore[no-any-return]  # nn.Module.__call__ is untyped


def build_visual(cfg: Mapping[str, Any]) -> nn.Module:
    """The image tower for settings from :func:`plain_vision_config` (weights uninitialised)."""
    if cfg["kind"] == "resnet":
        return PlainModifiedResNet(cfg)
    return PlainVisionTransformer(cfg)
