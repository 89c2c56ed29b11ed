"""Standard CLIP text towers built without open_clip: open_clip's numbers, a conservative gate."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from enc_helpers import LAYER_SCALE_CFG, TINY_CLIP_CFG, Bundle, build_from_cfg

from zsindex.encoders import load_encoder
from zsindex.encoders.plain_tower import build_plain_tower, plain_text_config, read_plain_tower
from zsindex.encoders.text_forward import encode_prompts, tokenize

PROMPTS = [
    "a photo of a dog.",
    "a photo of a dogfish.",
    "a photo of Corvus corax.",
    "a photo of Corvus corone.",
    "itap of the great white shark",
    "a",
    "x " * 90,  # truncated to the context
]


def _text_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def test_shipped_model_equals_open_clip_exactly() -> None:
    from open_clip.model import CLIP

    from zsindex.encoders.loading import _build

    encoder = load_encoder("zsindex-tiny", device="cpu")
    resolved = encoder.resolved
    assert resolved is not None
    tower = read_plain_tower(resolved.model_cfg, resolved.weights_path)
    assert tower is not None
    tokens, _ = encoder.tokenize_prompts(PROMPTS)
    ours = encode_prompts(None, tokens, tower=tower)
    # The reference is the model as open_clip builds it (encoders build it plain by default).
    reference = _build(resolved, "cpu", plain=False).model
    assert type(reference) is CLIP
    assert torch.equal(ours, encode_prompts(reference, tokens))
    assert torch.equal(ours, torch.from_numpy(encoder.encode_tokens(tokens)))  # the plain model


@pytest.mark.parametrize("which", ["vitb32", "layer_scale_quick_gelu"])
def test_random_architectures_equal_open_clip(which: str, request: pytest.FixtureRequest) -> None:
    import open_clip

    if which == "vitb32":
        bundle: Bundle = request.getfixturevalue("vitb32")
        cfg = open_clip.get_model_config("ViT-B-32")
    else:
        bundle, cfg = build_from_cfg(LAYER_SCALE_CFG, seed=5), LAYER_SCALE_CFG
    tower = build_plain_tower(cfg, _text_state(bundle.model))
    assert tower is not None
    tokens, truncated = tokenize(bundle.tokenizer, PROMPTS)
    assert truncated.any()
    with torch.no_grad():
        expected = bundle.model.encode_text(torch.from_numpy(tokens), normalize=True)
    assert (encode_prompts(None, tokens, tower=tower) - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_read_from_weights_files(tmp_path: Path, suffix: str) -> None:
    bundle = build_from_cfg(LAYER_SCALE_CFG, seed=6)
    state = _text_state(bundle.model)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    tower = read_plain_tower(LAYER_SCALE_CFG, path)
    assert tower is not None
    tokens, _ = tokenize(bundle.tokenizer, PROMPTS)
    with torch.no_grad():
        expected = bundle.model.encode_text(torch.from_numpy(tokens), normalize=True)
    assert (encode_prompts(None, tokens, tower=tower) - expected).abs().max().item() < 1e-5
    path.write_bytes(b"not weights")
    assert read_plain_tower(LAYER_SCALE_CFG, path) is None  # open_clip's loader reports it


def _with(cfg: dict[str, Any], where: str, key: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    (out if where == "model" else out["text_cfg"])[key] = value
    return out


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("model", "custom_text", True),
        ("model", "multimodal_cfg", {}),
        ("model", "cast_dtype", "fp16"),
        ("text", "pool_type", "last"),
        ("text", "pool_type", "eos"),
        ("text", "no_causal_mask", True),
        ("text", "embed_cls", True),
        ("text", "proj_bias", True),
        ("text", "proj_type", "none"),
        ("text", "hf_model_name", "bert-base-uncased"),
        ("text", "norm_kwargs", {"eps": 1e-6}),
        ("text", "act_kwargs", {"approximate": "tanh"}),
        ("text", "qk_norm", True),
        ("text", "block_type", "custom"),
        ("text", "something_new", 1),
        ("text", "heads", 3),  # does not divide the width
    ],
)
def test_the_gate_declines_anything_not_standard(where: str, key: str, value: Any) -> None:
    assert plain_text_config(TINY_CLIP_CFG) is not None
    assert plain_text_config(_with(TINY_CLIP_CFG, where, key, value)) is None


def test_the_gate_accepts_defaults_spelled_out() -> None:
    cfg = copy.deepcopy(TINY_CLIP_CFG)
    cfg["text_cfg"].update(
        pool_type="argmax", no_causal_mask=False, proj_type="linear", final_ln_after_pool=True
    )
    cfg["quick_gelu"] = False
    assert plain_text_config(cfg) is not None


def test_weights_that_do_not_fit_are_declined(tiny_clip: Bundle) -> None:
    state = _text_state(tiny_clip.model)
    assert build_plain_tower(TINY_CLIP_CFG, state) is not None
    missing = {k: v for k, v in state.items() if k != "ln_final.bias"}
    extra = {**state, "transformer.resblocks.0.attn.bias_k": torch.zeros(1, 1, 64)}
    reshaped = {**state, "text_projection": state["text_projection"][:, :5]}
    for bad in (missing, extra, reshaped):
        assert build_plain_tower(TINY_CLIP_CFG, bad) is None
    # The vision half does not matter.
    text_only = {k: v for k, v in state.items() if not k.startswith("visual.")}
    assert build_plain_tower(TINY_CLIP_CFG, text_only) is not None


def test_half_precision_weights_are_widened(tiny_clip: Bundle) -> None:
    state = {k: v.half() for k, v in _text_state(tiny_clip.model).items()}
    tower = build_plain_tower(TINY_CLIP_CFG, state)
    assert tower is not None
    assert tower.token_embedding.weight.dtype == torch.float32
    tokens, _ = tokenize(tiny_clip.tokenizer, PROMPTS)
    assert np.isfinite(encode_prompts(None, tokens, tower=tower).numpy()).all()
