"""Fixtures for zsindex.encoders tests: real open_clip models with random weights (offline)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from enc_helpers import (
    CUSTOM_CAUSAL_CFG,
    SIGLIP_LIKE_CFG,
    TINY_CLIP_CFG,
    Bundle,
    build_from_cfg,
    write_local_dir,
)


@pytest.fixture(scope="session")
def vitb32() -> Bundle:
    """Random-weight open_clip ViT-B-32 (shared by the whole session: it takes seconds)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    model.eval()
    return Bundle(model, open_clip.get_tokenizer("ViT-B-32"), preprocess)


@pytest.fixture(scope="session")
def tiny_clip() -> Bundle:
    return build_from_cfg(TINY_CLIP_CFG, seed=1)


@pytest.fixture(scope="session")
def siglip_like() -> Bundle:
    return build_from_cfg(SIGLIP_LIKE_CFG, seed=2)


@pytest.fixture(scope="session")
def custom_causal() -> Bundle:
    return build_from_cfg(CUSTOM_CAUSAL_CFG, seed=3)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Bundle) -> Path:
    """``tiny_clip`` saved in open_clip local-dir layout (safetensors)."""
    return write_local_dir(tmp_path_factory.mktemp("tiny-local-dir"), tiny_clip)


@pytest.fixture
def fresh_caches() -> Iterator[Callable[[], None]]:
    """Clear zsindex's per-process model and weight-hash caches before and after a test."""
    from zsindex.encoders import clear_model_cache, clear_weights_hash_cache

    clear_model_cache()
    clear_weights_hash_cache()
    yield clear_model_cache
    clear_model_cache()
    clear_weights_hash_cache()
