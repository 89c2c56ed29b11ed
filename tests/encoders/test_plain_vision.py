"""Standard CLIP models built without open_clip: open_clip's numbers bit for bit, a conservative
gate, and a one-shot process that never imports open_clip or torchvision.

The reference is always open_clip itself: the same checkpoint built by ``open_clip`` (through
zsindex's open_clip path, or ``open_clip.create_model_and_transforms`` reading the folder), its
own ``image_transform``. Weights are random (every tensor, batch-norm statistics included), so a
swapped or skipped parameter shows.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from enc_helpers import LAYER_SCALE_CFG, SIGLIP_LIKE_CFG, TINY_CLIP_CFG, build_from_cfg
from PIL import Image

from zsindex.encoders import load_encoder, load_image, resolve_model, tiny_model_dir
from zsindex.encoders.info import model_dim, model_image_size
from zsindex.encoders.loading import LoadedModel, _build, clear_model_cache
from zsindex.encoders.plain_model import PlainCLIP, build_plain_model
from zsindex.encoders.plain_preprocess import open_clip_transform, plain_transform
from zsindex.encoders.plain_vision import plain_vision_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import one_answer_corpus  # tests/ is not a package

_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}

ARCHS: dict[str, dict[str, Any]] = {
    "vit_tiny": TINY_CLIP_CFG,
    "vit_layer_scale_quick_gelu": LAYER_SCALE_CFG,
    # avg pooling, no ln_pre, ln_post after pooling, mlp_ratio 2, 8-pixel patches
    "vit_avg_pool_variants": {
        "embed_dim": 24,
        "vision_cfg": {
            "image_size": 48,
            "layers": 2,
            "width": 32,
            "head_width": 8,
            "patch_size": 8,
            "mlp_ratio": 2.0,
            "pool_type": "avg",
            "no_ln_pre": True,
            "final_ln_after_pool": True,
        },
        "text_cfg": _TEXT,
    },
    # non-square input: the model is built plain, the preprocess is open_clip's own
    "vit_non_square": {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": [48, 32],
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 16,
        },
        "text_cfg": _TEXT,
    },
    "resnet": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 2, 1, 1], "width": 16, "head_width": 16},
        "text_cfg": _TEXT,
    },
    # a logit bias and a non-scalar logit scale (SigLIP-style heads on a CLIP)
    "resnet_logit_bias": {
        "embed_dim": 16,
        "init_logit_bias": -5.0,
        "nonscalar_logit_scale": True,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
        "text_cfg": _TEXT,
    },
}

PREPROCESS: dict[str, dict[str, Any]] = {
    "vit_tiny": {"mean": [0.48145466, 0.4578275, 0.40821073]},
    "vit_layer_scale_quick_gelu": {"interpolation": "bilinear", "mean": 0.5, "std": 0.25},
    "vit_avg_pool_variants": {"mean": [0.1, 0.2, 0.3], "std": [0.9, 0.8, 0.7]},
    "vit_non_square": {},
    "resnet": {"size": 999, "mean": [0.631, 0.61, 0.597], "std": [0.247, 0.24, 0.253]},
    "resnet_logit_bias": {"interpolation": "random", "resize_mode": "shortest"},
}


def _randomise(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every floating tensor of the state dict random (variances positive)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            noise = torch.randn(value.shape, generator=gen) * 0.2
            value = noise.abs() + 0.5 if key.endswith("running_var") else noise
            if key == "logit_scale":
                value = torch.full(value.shape, 2.7)
        out[key] = value.detach().contiguous()
    return out


def _write_dir(folder: Path, cfg: dict[str, Any], pp: dict[str, Any], seed: int) -> Path:
    from safetensors.torch import save_file

    bundle = build_from_cfg(cfg, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"model_cfg": cfg, "preprocess_cfg": pp}
    (folder / "open_clip_config.json").write_text(json.dumps(data))
    save_file(_randomise(bundle.model, seed), str(folder / "open_clip_model.safetensors"))
    return folder


def _images() -> list[Image.Image]:
    """RGB images of many sizes and aspect ratios: smaller and larger than the input, exact,
    odd and even margins (the crop's rounding), extreme strips."""
    rng = np.random.default_rng(0)
    sizes = [(320, 240), (240, 320), (64, 64), (65, 64), (66, 67), (31, 200), (999, 33),
             (1, 1), (2, 3), (224, 224), (225, 300), (48, 32), (500, 499)]  # fmt: skip
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def _both(folder: Path) -> tuple[LoadedModel, LoadedModel]:
    resolved = resolve_model(f"local-dir:{folder}")
    return _build(resolved, "cpu", plain=True), _build(resolved, "cpu", plain=False)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_random_architectures_equal_open_clip_bit_for_bit(arch: str, tmp_path: Path) -> None:
    from open_clip.model import CLIP

    cfg = ARCHS[arch]
    folder = _write_dir(tmp_path / arch, copy.deepcopy(cfg), PREPROCESS[arch], seed=7)
    plain, ref = _both(folder)
    assert type(plain.model) is PlainCLIP and type(ref.model) is CLIP
    assert plain.model.visual.preprocess_cfg == ref.model.visual.preprocess_cfg
    assert model_image_size(plain.model) == model_image_size(ref.model)
    assert model_dim(plain.model) == model_dim(ref.model) == cfg["embed_dim"]
    ours_sd, ref_sd = plain.model.state_dict(), ref.model.state_dict()
    assert set(ours_sd) == set(ref_sd)
    assert all(torch.equal(ours_sd[k], ref_sd[k]) for k in ref_sd)
    assert torch.equal(plain.model.logit_scale, ref.model.logit_scale)
    if ref.model.logit_bias is None:
        assert plain.model.logit_bias is None
    else:
        assert torch.equal(plain.model.logit_bias, ref.model.logit_bias)

    images = _images()
    ours_x = torch.stack([plain.preprocess(img) for img in images])
    ref_x = torch.stack([ref.preprocess(img) for img in images])
    assert torch.equal(ours_x, ref_x)
    tokens = torch.zeros((3, 77), dtype=torch.long)
    tokens[:, 0] = 49406
    tokens[0, 1:4], tokens[1, 1:2], tokens[2, 1:40] = 320, 1929, 268
    for row, end in enumerate((4, 2, 40)):
        tokens[row, end] = 49407
    with torch.inference_mode():
        assert torch.equal(plain.model.encode_image(ref_x), ref.model.encode_image(ref_x))
        assert torch.equal(
            plain.model.encode_image(ref_x[:1], normalize=True),
            ref.model.encode_image(ref_x[:1], normalize=True),
        )
        assert torch.equal(plain.model.encode_text(tokens), ref.model.encode_text(tokens))


def test_shipped_model_classifies_as_open_clip_does(tmp_path: Path) -> None:
    """zsindex-tiny through the Encoder (plain) against open_clip reading the same folder, on the
    decoding corpus (JPEG, PNG, EXIF turns, alpha, palette, grey + alpha)."""
    import open_clip

    clear_model_cache()
    files = list(one_answer_corpus.build(tmp_path / "corpus").values())
    encoder = load_encoder("zsindex-tiny", device="cpu", precision="fp32")
    assert type(encoder.model) is PlainCLIP
    ours = encoder.encode_images(files, draft=False)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_model_dir()}")
    model.eval()
    batch = torch.stack([preprocess(load_image(f)) for f in files])
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(model.encode_image(batch), dim=-1).numpy()
    assert np.abs(ours - ref).max() <= 1e-6
    assert np.array_equal(ours, ref)
    assert encoder.info.logit_scale == pytest.approx(
        float(model.logit_scale.detach().exp()), rel=1e-6
    )
    prompts = ["a red circle", "an image of a blue ring.", "x " * 90]
    with torch.inference_mode():
        expected = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(prompts), normalize=True)
    assert np.abs(encoder.encode_texts(prompts) - expected.numpy()).max() < 1e-5


PP_CONFIGS = [
    {"size": 64, "mean": [0.631, 0.61, 0.597], "std": [0.247, 0.24, 0.253]},
    {"size": 224},
    {"size": 97, "interpolation": "bilinear", "mean": 0.5, "std": 0.5},
    {"size": (33, 33), "interpolation": "random"},
]


def _cfg(extra: dict[str, Any]) -> dict[str, Any]:
    base = {"size": 224, "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
            "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic",
            "resize_mode": "shortest", "fill_color": 0}  # fmt: skip
    return {**base, **extra}


@pytest.mark.parametrize("extra", PP_CONFIGS, ids=lambda e: str(e["size"]))
def test_preprocess_equals_torchvision_on_the_corpus_and_raw_modes(
    extra: dict[str, Any], tmp_path: Path
) -> None:
    cfg = _cfg(extra)
    ours, ref = plain_transform(cfg), open_clip_transform(cfg)
    assert ours is not None
    files = one_answer_corpus.build(tmp_path / "corpus").values()
    images = [load_image(f) for f in files] + _images()
    # Modes other than RGB straight into the transform: open_clip resizes first, then converts.
    rgb = _images()[0]
    raw = [rgb.convert(m) for m in ("L", "P", "RGBA", "LA", "CMYK", "1", "I;16", "F")]
    raw.append(Image.open(next(iter(files))))  # a lazily decoded file, as given
    for img in images + raw:
        a, b = ours(img), ref(img)
        assert a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b), (img.size, img.mode)
    tensor = torch.rand(3, 50, 70)  # not a PIL image: open_clip's own handling
    assert torch.equal(ours(tensor), ref(tensor))


@pytest.mark.parametrize(
    "extra",
    [
        {"resize_mode": "longest"},
        {"resize_mode": "squash"},
        {"size": (224, 160)},
        {"interpolation": "nearest"},
        {"mean": "x"},
        {"std": [0.5, 0.0, 0.5]},
        {"std": [1e-50, 1.0, 1.0]},
    ],
)
def test_preprocess_gate_refuses_what_it_does_not_reproduce(extra: dict[str, Any]) -> None:
    assert plain_transform(_cfg(extra)) is None


BASE_VISION = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}


@pytest.mark.parametrize(
    "change",
    [
        {"timm_model_name": "vit_base_patch16_224"},
        {"attentional_pool": True},
        {"pos_embed_type": "sin_cos_2d"},
        {"output_tokens": True},
        {"act_kwargs": {"approximate": "tanh"}},
        {"norm_kwargs": {"eps": 1e-6}},
        {"block_type": "custom"},
        {"qk_norm": True},
        {"scale_fc": True},
        {"patch_dropout": 0.5},
        {"pool_type": "none"},
        {"some_future_key": 1},
        {"head_width": 64},  # wider heads than the tower: open_clip refuses it
        {"layers": [1, 1, 1]},
    ],
)
def test_vision_gate_refuses_unknown_settings(change: dict[str, Any]) -> None:
    cfg = {"embed_dim": 32, "vision_cfg": {**BASE_VISION, **change}, "text_cfg": _TEXT}
    assert plain_vision_config(cfg) is None
    assert plain_vision_config({"embed_dim": 32, "vision_cfg": BASE_VISION}) is not None


def test_other_models_and_mismatched_weights_go_to_open_clip(tmp_path: Path) -> None:
    from open_clip.model import CLIP, CustomTextCLIP

    folder = _write_dir(tmp_path / "siglip", copy.deepcopy(SIGLIP_LIKE_CFG), {}, seed=3)
    plain, _ = _both(folder)
    assert type(plain.model) is CustomTextCLIP  # custom text tower: open_clip builds it
    cfg = {**TINY_CLIP_CFG, "vision_cfg": {**TINY_CLIP_CFG["vision_cfg"], "norm_kwargs": {}}}
    folder = _write_dir(tmp_path / "norm_kwargs", copy.deepcopy(cfg), {}, seed=4)
    assert type(_both(folder)[0].model) is CLIP
    state = _randomise(build_from_cfg(TINY_CLIP_CFG).model, 1)
    assert build_plain_model(TINY_CLIP_CFG, state) is not None
    missing = {k: v for k, v in state.items() if k != "visual.proj"}
    assert build_plain_model(TINY_CLIP_CFG, missing) is None
    extra = {**state, "visual.extra": torch.zeros(1)}
    assert build_plain_model(TINY_CLIP_CFG, extra) is None
    wrong = {**state, "visual.positional_embedding": torch.zeros(7, 32)}
    assert build_plain_model(TINY_CLIP_CFG, wrong) is None


def test_half_precision_checkpoint_loads_as_float32(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder = _write_dir(tmp_path / "fp16", copy.deepcopy(ARCHS["resnet"]), {}, seed=5)
    weights = folder / "open_clip_model.safetensors"
    from safetensors.torch import load_file

    half = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(weights).items()}
    save_file(half, str(weights))
    plain, ref = _both(folder)
    assert type(plain.model) is PlainCLIP
    assert all(p.dtype == torch.float32 for p in plain.model.parameters())
    x = torch.stack([ref.preprocess(img) for img in _images()[:4]])
    with torch.inference_mode():
        assert torch.equal(plain.model.encode_image(x), ref.model.encode_image(x))


def test_one_shot_process_never_imports_open_clip(tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    _images()[0].save(image)
    code = (
        "import sys\n"
        "from zsindex.encoders import load_encoder\n"
        "enc = load_encoder('zsindex-tiny', device='cpu')\n"
        f"emb = enc.encode_images([{str(image)!r}])\n"
        "txt = enc.encode_texts(['a red circle'])\n"
        "print(emb.shape, txt.shape, type(enc.model).__name__, enc.info.logit_scale > 0)\n"
        "print(sorted(m for m in ('open_clip', 'torchvision', 'timm', 'torch._dynamo')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["(1, 128) (1, 128) PlainCLIP True", "[]"], out.stderr
