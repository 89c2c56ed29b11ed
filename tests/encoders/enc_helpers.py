"""Helpers for zsindex.encoders tests: small open_clip configs built offline with random weights."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A small open_clip CLIP built from a dict: causal text tower, argmax pooling (trimmable).
TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

# SigLIP-style text tower without any Hugging Face download: bidirectional (no causal mask),
# pooled at the last position, projection with bias, a logit bias; open_clip's BPE tokenizer.
SIGLIP_LIKE_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "init_logit_bias": -10.0,
    "custom_text": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {
        "context_length": 24,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 2,
        "no_causal_mask": True,
        "pool_type": "last",
        "proj_bias": True,
        "norm_kwargs": {"eps": 1e-6},
    },
}

# CustomTextCLIP with a standard causal TextTransformer (trimmed through model.text).
CUSTOM_CAUSAL_CFG: dict[str, Any] = {
    "embed_dim": 24,
    "custom_text": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 48,
        "heads": 4,
        "layers": 2,
        "proj_bias": True,
    },
}


# A plain CLIP text tower with LayerScale and QuickGELU (the plain-tower gate accepts it).
LAYER_SCALE_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 3,
        "mlp_ratio": 2.5,
        "ls_init_value": 0.3,
    },
}


@dataclass
class Bundle:
    """An open_clip model with its tokenizer and inference preprocess."""

    model: Any
    tokenizer: Any
    preprocess: Any
    cfg: dict[str, Any] | None = None


def build_from_cfg(cfg: dict[str, Any], seed: int = 0) -> Bundle:
    import open_clip
    import torch
    from open_clip.model import CLIP, CustomTextCLIP

    torch.manual_seed(seed)
    kwargs = copy.deepcopy(cfg)
    custom = kwargs.pop("custom_text", False)
    model = (CustomTextCLIP if custom else CLIP)(**kwargs).eval()
    # Random logit scale so tests notice a hard-coded 100 or a missing exp().
    with torch.no_grad():
        model.logit_scale.fill_(2.5 + seed * 0.1)
    tokenizer = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    preprocess = open_clip.image_transform(cfg["vision_cfg"]["image_size"], is_train=False)
    return Bundle(model, tokenizer, preprocess, cfg)


def write_local_dir(folder: Path, bundle: Bundle, *, fmt: str = "safetensors") -> Path:
    """Write ``bundle`` in open_clip local-dir layout (config + weights)."""
    import torch
    from safetensors.torch import save_file

    assert bundle.cfg is not None
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": bundle.cfg,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    state = {k: v.detach().contiguous() for k, v in bundle.model.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(folder / "open_clip_model.safetensors"))
    else:
        torch.save(state, str(folder / "open_clip_pytorch_model.bin"))
    return folder
