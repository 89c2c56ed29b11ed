"""A standard CLIP text tower built from its config and weights with torch alone (no open_clip).

Importing open_clip costs a one-shot process ~2 s: it imports torchvision, which imports
``torch._dynamo``. The text worker (:mod:`zsindex.encoders.text_worker`) needs none of it when
the model's text tower is the standard one — open_clip's ``CLIP`` text transformer of plain
pre-norm ``ResidualAttentionBlock``s with a causal mask and ``argmax`` pooling, as in OpenAI's
CLIP, every ``ViT-*`` architecture and ``zsindex-tiny``. For those this module builds the same
modules (``nn.Embedding``, ``nn.LayerNorm``, ``nn.MultiheadAttention``, the MLP, LayerScale,
QuickGELU) under the same names and loads the same state-dict keys into them; the prefix-tree
encoder (:mod:`zsindex.encoders.prefix_tree`) then runs them exactly as it runs open_clip's own.

The gate is conservative: a config key this module does not know, a non-default value of one it
does, or a checkpoint whose text keys or shapes differ from what it expects gives ``None``, and
the worker builds the model with open_clip instead. Tests check the numbers against open_clip's
``encode_text`` (1e-5) for the shipped model and random-weight architectures.

This module imports torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zsindex.encoders.towers import TrimmableTower

__all__ = ["build_plain_tower", "plain_text_config", "read_plain_tower"]

# Model-config keys that do not change the text tower (or must keep their default).
_MODEL_KEYS: dict[str, Callable[[Any], bool]] = {
    "embed_dim": lambda v: isinstance(v, int) and v > 0,
    "vision_cfg": lambda v: isinstance(v, Mapping),
    "text_cfg": lambda v: isinstance(v, Mapping),
    "quick_gelu": lambda v: isinstance(v, bool),
    "init_logit_scale": lambda v: True,
    "init_logit_bias": lambda v: True,
    "nonscalar_logit_scale": lambda v: True,
    "custom_text": lambda v: v is False,
}


def _POSITIVE(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# open_clip CLIPTextCfg fields, each with what this module supports.
_TEXT_KEYS: dict[str, Callable[[Any], bool]] = {
    "context_length": _POSITIVE,
    "vocab_size": _POSITIVE,
    "width": _POSITIVE,
    "heads": _POSITIVE,
    "layers": _POSITIVE,
    "mlp_ratio": lambda v: isinstance(v, (int, float)) and v > 0,
    "ls_init_value": lambda v: v is None or isinstance(v, (int, float)),
    "embed_cls": lambda v: v is False,
    "pad_id": lambda v: True,  # used only with a class token or a padding mask
    "eos_id": lambda v: True,  # used only with eos pooling
    "no_causal_mask": lambda v: v is False,
    "final_ln_after_pool": lambda v: isinstance(v, bool),  # a per-token norm: same either way
    "pool_type": lambda v: v == "argmax",
    "proj_bias": lambda v: v is False,
    "proj_type": lambda v: v == "linear",
    "output_tokens": lambda v: v is False,
    "block_type": lambda v: v in (None, "default"),
    "qk_norm": lambda v: v is False,
    "scaled_cosine_attn": lambda v: v is False,
    "scale_heads": lambda v: v is False,
    "scale_attn_inner": lambda v: v is False,
    "scale_attn": lambda v: v is False,
    "scale_fc": lambda v: v is False,
}


def plain_text_config(model_cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The text settings of ``model_cfg`` when its text tower is the standard one, else
    ``None``: ``{context_length, vocab_size, width, heads, layers, mlp_width, ls_init_value,
    quick_gelu, embed_dim}``."""
    text = model_cfg.get("text_cfg")
    if not isinstance(text, Mapping) or "embed_dim" not in model_cfg:
        return None
    for keys, cfg in ((_MODEL_KEYS, model_cfg), (_TEXT_KEYS, text)):
        for key, value in cfg.items():
            check = keys.get(key)
            if check is None or not check(value):
                return None
    width, heads = int(text.get("width", 512)), int(text.get("heads", 8))
    if width % heads:
        return None
    return {
        "context_length": int(text.get("context_length", 77)),
        "vocab_size": int(text.get("vocab_size", 49408)),
        "width": width,
        "heads": heads,
        "layers": int(text.get("layers", 12)),
        "mlp_width": int(width * float(text.get("mlp_ratio", 4.0))),
        "ls_init_value": text.get("ls_init_value"),
        "quick_gelu": bool(model_cfg.get("quick_gelu", False)),
        "embed_dim": int(model_cfg["embed_dim"]),
    }


class LayerNorm(nn.LayerNorm):
    """open_clip's ``LayerNorm``: the result in the input's dtype (matters under autocast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).to(x.dtype)


class QuickGELU(nn.Module):
    """open_clip's ``QuickGELU``: ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    """open_clip's ``LayerScale`` (not in place): ``x * gamma``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class PlainBlock(nn.Module):
    """The parameters of one open_clip ``ResidualAttentionBlock``, under its names (the prefix
    tree runs them)."""

    def __init__(
        self, width: int, heads: int, mlp_width: int, layer_scale: bool, act: type
    ) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ls_1: nn.Module = LayerScale(width) if layer_scale else nn.Identity()
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, mlp_width)),
                    ("gelu", act()),
                    ("c_proj", nn.Linear(mlp_width, width)),
                ]
            )
        )
        self.ls_2: nn.Module = LayerScale(width) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """open_clip's ``ResidualAttentionBlock.forward`` (self-attention): the same calls, so
        the same kernels and the same numbers (the image towers run blocks this way)."""
        y = self.ln_1(x)
        mask = attn_mask.to(y.dtype) if attn_mask is not None else None
        x = x + self.ls_1(self.attn(y, y, y, need_weights=False, attn_mask=mask)[0])
        out: torch.Tensor = x + self.ls_2(self.mlp(self.ln_2(x)))
        return out


class PlainTransformer(nn.Module):
    """The blocks, under open_clip's ``transformer.resblocks`` names."""

    def __init__(self, blocks: list[PlainBlock]) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """open_clip's batch-first ``Transformer.forward``."""
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x

    def get_cast_dtype(self) -> torch.dtype:
        return self.resblocks[0].mlp.c_fc.weight.dtype  # type: ignore[union-attr,return-value]  # nn.Module attributes are typed as Tensor | Module


class PlainTextModel(nn.Module):
    """The text half of an open_clip ``CLIP``, its state-dict keys unchanged."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        width = cfg["width"]
        act = QuickGELU if cfg["quick_gelu"] else nn.GELU
        layer_scale = cfg["ls_init_value"] is not None
        self.token_embedding = nn.Embedding(cfg["vocab_size"], width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg["context_length"], width))
        self.transformer = PlainTransformer(
            [
                PlainBlock(width, cfg["heads"], cfg["mlp_width"], layer_scale, act)
                for _ in range(cfg["layers"])
            ]
        )
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, cfg["embed_dim"]))
        n = cfg["context_length"]
        self.register_buffer(
            "attn_mask", torch.full((n, n), float("-inf")).triu(1), persistent=False
        )

    def tower(self) -> TrimmableTower:
        blocks = tuple(self.transformer.resblocks)
        return TrimmableTower(
            token_embedding=self.token_embedding,
            positional_embedding=self.positional_embedding,
            transformer=self.transformer,
            ln_final=self.ln_final,
            text_projection=self.text_projection,
            attn_mask=self.attn_mask,  # type: ignore[arg-type]  # nn.Module attributes are typed as Tensor | Module
            pool_type="argmax",
            eos_id=None,
            plain_blocks=blocks,
        )


_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.")


def _is_text_key(key: str) -> bool:
    return key.startswith(_TEXT_PREFIXES) or key == "text_projection"


def build_plain_tower(
    model_cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor], device: str = "cpu"
) -> TrimmableTower | None:
    """The text tower of ``model_cfg`` with the text weights of ``state`` (float32, eval mode,
    on ``device``), or ``None`` when either is not the standard kind (see the module
    docstring)."""
    cfg = plain_text_config(model_cfg)
    if cfg is None:
        return None
    model = PlainTextModel(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    given = {k: v for k, v in state.items() if _is_text_key(k)}
    if set(given) != set(expected) or any(
        tuple(given[k].shape) != tuple(shape) for k, shape in expected.items()
    ):
        return None
    model.load_state_dict({k: v.float() for k, v in given.items()}, strict=True)
    model.to(device)
    model.eval()
    return model.tower()


def read_plain_tower(
    model_cfg: Mapping[str, Any], weights_path: Path, device: str = "cpu"
) -> TrimmableTower | None:
    """:func:`build_plain_tower` from a weights file; a ``.safetensors`` file is read for its
    text tensors only. Unreadable files give ``None`` too (open_clip's loader then reports)."""
    if plain_text_config(model_cfg) is None:
        return None
    state: Mapping[str, torch.Tensor]
    try:
        if weights_path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(weights_path), framework="pt") as fh:
                state = {k: fh.get_tensor(k) for k in fh.keys() if _is_text_key(k)}  # noqa: SIM118
        else:
            from zsindex.encoders.weights import read_state_dict

            state = read_state_dict(weights_path)
    except Exception:  # e.g. SafetensorError, ModelError: open_clip's loader reports it
        return None
    return build_plain_tower(model_cfg, state, device)
