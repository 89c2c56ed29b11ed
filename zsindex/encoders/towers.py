"""Running open_clip text towers, trimmed to each batch's real length where that is exact.

open_clip's standard text transformer is causal and pools one token per sequence (the end-of-text
token: ``argmax`` of the ids, or the first ``eos`` id). With a causal mask a position only sees
positions before it, so every position after the pooled one is dead weight: running the batch at
``max(pool index) + 1`` tokens — positional embedding and causal mask sliced to that length — gives
the same numbers (up to float summation order, ~1e-7) as the full context, 4–7× cheaper for class
prompts (10–20 of 77 tokens).

Detection is per model and conservative: only open_clip's own ``CLIP.encode_text`` and
``CustomTextCLIP`` + ``TextTransformer`` code paths, with a causal mask, no class token, no padding
mask and ``argmax``/``eos`` pooling are trimmed. Everything else (SigLIP-style bidirectional towers,
``last``/``first`` pooling, Hugging Face towers, CoCa, subclasses overriding ``encode_text``) runs
``model.encode_text`` at the full context.

This module imports torch; import it lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TrimmableTower", "detect_tower", "encode_full", "encode_trimmed", "needed_lengths"]


@dataclass(frozen=True)
class TrimmableTower:
    """The parts of a causal, end-pooled open_clip text tower."""

    token_embedding: nn.Module
    positional_embedding: torch.Tensor
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: nn.Module | torch.Tensor | None
    attn_mask: torch.Tensor
    pool_type: str
    eos_id: int | None
    # The transformer's blocks when they are all plain open_clip ``ResidualAttentionBlock``s
    # (pre-norm, ``nn.MultiheadAttention`` self-attention): then
    # :mod:`zsindex.encoders.prefix_tree` can run them itself. ``None`` otherwise.
    plain_blocks: tuple[nn.Module, ...] | None = None


def _is_causal(mask: object, n: int) -> bool:
    if not isinstance(mask, torch.Tensor) or mask.shape != (n, n) or not mask.is_floating_point():
        return False
    expected = torch.full((n, n), float("-inf"), device=mask.device, dtype=mask.dtype).triu(1)
    return bool(torch.equal(mask, expected))


def detect_tower(model: nn.Module) -> TrimmableTower | None:
    """The trimmable text tower of ``model``, or ``None`` when trimming would not be exact."""
    from zsindex.encoders.plain_model import PlainCLIP

    if type(model) is PlainCLIP:  # built without open_clip: its text tower is the standard one
        return model.tower()
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.transformer import TextTransformer

    cls = type(model)
    if isinstance(model, CLIP) and getattr(cls, "encode_text", None) is CLIP.encode_text:
        src: nn.Module = model
        pool = getattr(model, "text_pool_type", None)
        eos = getattr(model, "text_eos_id", None)
        cls_emb = None
    elif (
        isinstance(model, CustomTextCLIP)
        and getattr(cls, "encode_text", None) is CustomTextCLIP.encode_text
        and type(getattr(model, "text", None)) is TextTransformer
    ):
        src = model.text
        pool = getattr(src, "pool_type", None)
        eos = getattr(src, "eos_id", None)
        cls_emb = getattr(src, "cls_emb", None)
        if getattr(src, "use_pad_mask", False) or getattr(src, "output_tokens", False):
            return None
    else:
        return None
    if pool not in ("argmax", "eos") or cls_emb is not None:
        return None
    pos = getattr(src, "positional_embedding", None)
    if not isinstance(pos, torch.Tensor) or pos.ndim != 2:
        return None
    mask = getattr(src, "attn_mask", None)
    if not _is_causal(mask, pos.shape[0]):
        return None
    assert isinstance(mask, torch.Tensor)
    proj = getattr(src, "text_projection", None)
    if proj is not None and not isinstance(proj, (nn.Linear, torch.Tensor)):
        return None
    parts = [getattr(src, a, None) for a in ("token_embedding", "transformer", "ln_final")]
    if not all(isinstance(p, nn.Module) for p in parts):
        return None
    token_embedding, transformer, ln_final = parts
    assert isinstance(token_embedding, nn.Module)
    assert isinstance(transformer, nn.Module)
    assert isinstance(ln_final, nn.Module)
    return TrimmableTower(
        plain_blocks=_plain_blocks(transformer),
        token_embedding=token_embedding,
        positional_embedding=pos,
        transformer=transformer,
        ln_final=ln_final,
        text_projection=proj,
        attn_mask=mask,
        pool_type=str(pool),
        eos_id=None if eos is None else int(eos),
    )


def _plain_blocks(transformer: nn.Module) -> tuple[nn.Module, ...] | None:
    """The blocks of an open_clip ``Transformer`` made only of standard self-attention blocks."""
    from open_clip.transformer import ResidualAttentionBlock, Transformer

    if type(transformer) is not Transformer or not getattr(transformer, "batch_first", False):
        return None
    if getattr(transformer, "grad_checkpointing", False):
        return None
    blocks = tuple(getattr(transformer, "resblocks", ()))
    for block in blocks:
        attn = getattr(block, "attn", None)
        if (
            type(block) is not ResidualAttentionBlock
            or hasattr(block, "ln_1_kv")
            or type(attn) is not nn.MultiheadAttention
            or not attn.batch_first
            or not attn._qkv_same_embed_dim
            or attn.in_proj_weight is None
            or attn.bias_k is not None
            or attn.add_zero_attn
        ):
            return None
    return blocks or None


def pool_indices(tokens: torch.Tensor, tower: TrimmableTower) -> torch.Tensor:
    """The position each sequence is pooled at, computed as open_clip's ``text_global_pool``."""
    if tower.pool_type == "argmax":
        return tokens.argmax(dim=-1)
    is_eos = torch.eq(tokens, -1 if tower.eos_id is None else tower.eos_id)
    return is_eos.int().argmax(dim=-1)


def needed_lengths(tokens: torch.Tensor, tower: TrimmableTower) -> torch.Tensor:
    """Per sequence, how many leading tokens determine its pooled output (pool index + 1)."""
    return pool_indices(tokens, tower) + 1


def encode_trimmed(tower: TrimmableTower, tokens: torch.Tensor) -> torch.Tensor:
    """L2-normalised text features of ``tokens`` (already cut to the batch's needed length).

    Mirrors ``open_clip.model.CLIP.encode_text`` / ``TextTransformer.forward`` with the positional
    embedding and causal mask sliced to ``tokens.shape[1]``.
    """
    length = tokens.shape[1]
    cast_dtype = tower.transformer.get_cast_dtype()  # type: ignore[operator]  # open_clip's module attributes are untyped
    x = tower.token_embedding(tokens).to(cast_dtype)
    x = x + tower.positional_embedding[:length].to(cast_dtype)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
    x = tower.ln_final(x)
    # open_clip's text_global_pool for argmax/eos (the only pool types detect_tower admits).
    x = x[torch.arange(x.shape[0], device=x.device), pool_indices(tokens, tower)]
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return F.normalize(x, dim=-1)


def encode_full(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """L2-normalised text features through the model's own ``encode_text`` (full context)."""
    out = model.encode_text(tokens, normalize=True)  # type: ignore[operator]  # open_clip's module attributes are untyped
    assert isinstance(out, torch.Tensor)
    return out
