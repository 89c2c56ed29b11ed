"""Image encoding under fp16 autocast and the prefix-tree text path on CUDA, against the CPU.

zsindex-tiny (shipped) runs on both devices: fp32 on CUDA must match the CPU closely (cuDNN may
use TF32 for convolutions), fp16 autocast within fp16's tolerance; the prefix-tree text forward
on CUDA must equal the CPU's and CUDA's own full-context forward.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from gpu_needs import need_cuda
from PIL import Image

from zsindex.config import TINY_MODEL
from zsindex.encoders import load_encoder

pytestmark = pytest.mark.gpu


def _images(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((96 + i, 80), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


def test_autocast_image_encoding_is_close_to_fp32() -> None:
    need_cuda()
    images = _images(24)
    cpu = load_encoder(TINY_MODEL, device="cpu").encode_images(images, batch_size=8)
    fp32 = load_encoder(TINY_MODEL, device="cuda", precision="fp32").encode_images(
        images, batch_size=8
    )
    fp16 = load_encoder(TINY_MODEL, device="cuda", precision="auto").encode_images(
        images, batch_size=8
    )
    for emb in (cpu, fp32, fp16):
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.abs(fp32 - cpu).max() < 5e-3  # cuDNN's TF32 convolutions at most
    assert _cos(fp16, cpu).min() > 0.999
    assert np.abs(fp16 - cpu).max() < 3e-2


def test_prefix_tree_text_path_on_cuda_equals_cpu() -> None:
    need_cuda()
    import torch

    from zsindex.encoders.text_forward import encode_prompts

    enc_cpu = load_encoder(TINY_MODEL, device="cpu")
    labels = ["dog", "cat", "great white shark", "great white", "a", "x " * 40]
    prompts = [f"a photo of a {x}." for x in labels] + [f"itap of the {x}" for x in labels]
    prompts += ["", "a photo", "a photo of a dog."]
    tokens, _ = enc_cpu.tokenize_prompts(prompts)
    cpu = enc_cpu.encode_tokens(tokens)
    enc = load_encoder(TINY_MODEL, device="cuda", precision="fp32")
    cuda = enc.encode_tokens(tokens)
    np.testing.assert_allclose(cuda, cpu, atol=1e-4)
    # The prefix tree against the plain full-context forward, both on CUDA in fp32.
    model = enc.model
    t = torch.from_numpy(np.asarray(tokens))
    tree = encode_prompts(model, t, device="cuda", precision="fp32", share_prefix=True)
    plain = encode_prompts(model, t, device="cuda", precision="fp32", share_prefix=False)
    with torch.no_grad():
        full = model.encode_text(t.to("cuda"), normalize=True).float().cpu()
    assert (tree - full).abs().max().item() < 1e-4
    assert (plain - full).abs().max().item() < 1e-4
    # ... and under fp16 autocast, within fp16's tolerance of fp32.
    half = encode_prompts(model, t, device="cuda", precision="auto", share_prefix=True)
    assert (half - full).abs().max().item() < 2e-2
