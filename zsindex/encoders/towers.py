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
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TrimmableTower",
    "common_prefix_length",
    "detect_tower",
    "encode_full",
    "encode_shared_prefix",
    "encode_trimmed",
    "needed_lengths",
]


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
    # (pre-norm, ``nn.MultiheadAttention`` self-attention): then :func:`encode_shared_prefix`
    # can run them itself. ``None`` otherwise.
    plain_blocks: tuple[nn.Module, ...] | None = None


def _is_causal(mask: object, n: int) -> bool:
    if not isinstance(mask, torch.Tensor) or mask.shape != (n, n) or not mask.is_floating_point():
        return False
    expected = torch.full((n, n), float("-inf"), device=mask.device, dtype=mask.dtype).triu(1)
    return bool(torch.equal(mask, expected))


def detect_tower(model: nn.Module) -> TrimmableTower | None:
    """The trimmable text tower of ``model``, or ``None`` when trimming would not be exact."""
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
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast_dtype = tower.transformer.get_cast_dtype()  # type: ignore[operator]
    x = tower.token_embedding(tokens).to(cast_dtype)
    x = x + tower.positional_embedding[:length].to(cast_dtype)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
    x = tower.ln_final(x)
    x = text_global_pool(x, tokens, tower.pool_type, eos_token_id=tower.eos_id)
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return F.normalize(x, dim=-1)


def encode_full(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """L2-normalised text features through the model's own ``encode_text`` (full context)."""
    out = model.encode_text(tokens, normalize=True)  # type: ignore[operator]
    assert isinstance(out, torch.Tensor)
    return out


def common_prefix_length(tokens: torch.Tensor, lengths: torch.Tensor) -> int:
    """How many leading positions every row of ``tokens`` shares, leaving at least each row's
    pooled token (``lengths - 1``) outside the prefix."""
    if tokens.shape[0] == 0:
        return 0
    same = (tokens == tokens[:1]).all(dim=0)
    differs = (~same).nonzero()
    shared = int(differs[0, 0]) if differs.numel() else int(tokens.shape[1])
    return max(0, min(shared, int(lengths.min()) - 1))


def _self_attention_block(
    block: Any,  # open_clip ResidualAttentionBlock (checked by _plain_blocks)
    x: torch.Tensor,
    past: tuple[torch.Tensor, torch.Tensor] | None,
    pooled_at: torch.Tensor | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One pre-norm residual block over ``x [B, S, width]`` that follows ``past`` keys/values
    (``[1, heads, P, head_dim]``, shared by every row) at positions ``P .. P+S-1``, causal.

    Returns the block's output and this call's keys/values. With ``pooled_at`` (``[B]``
    positions within ``x``) only those rows' outputs are computed (``[B, 1, width]``): the last
    block of an end-pooled tower needs nothing else.
    """
    attn = block.attn
    assert isinstance(attn, nn.MultiheadAttention)
    batch, length, width = x.shape
    heads = attn.num_heads
    head_dim = width // heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = (
        t.reshape(batch, length, heads, head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1)
    )
    if past is not None:
        keys = torch.cat((past[0].expand(batch, -1, -1, -1), k), dim=2)
        values = torch.cat((past[1].expand(batch, -1, -1, -1), v), dim=2)
        offset = past[0].shape[2]
    else:
        keys, values, offset = k, v, 0
    total = offset + length
    cols = torch.arange(total, device=x.device)
    if pooled_at is None:
        rows = torch.arange(length, device=x.device) + offset
        mask = cols[None, :] <= rows[:, None]  # [S, P+S]: causal, True = may attend
        residual = x
    else:
        pick = torch.arange(batch, device=x.device)
        q = q[pick, :, pooled_at].unsqueeze(2)  # [B, heads, 1, head_dim]
        mask = (cols[None, :] <= (pooled_at + offset)[:, None])[:, None, None, :]
        residual = x[pick, pooled_at].unsqueeze(1)
        length = 1
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    out = out.transpose(1, 2).reshape(batch, length, width)
    out = F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
    y = residual + block.ls_1(out)
    y = y + block.ls_2(block.mlp(block.ln_2(y)))
    return y, (k, v)


def encode_prefix(
    tower: TrimmableTower, prefix: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys/values of every block for a shared token prefix ``[P]`` (P ≥ 1), for
    :func:`encode_shared_prefix`."""
    assert tower.plain_blocks is not None
    cast_dtype = tower.transformer.get_cast_dtype()  # type: ignore[operator]
    length = int(prefix.shape[0])
    x = tower.token_embedding(prefix[None]).to(cast_dtype)
    x = x + tower.positional_embedding[:length].to(cast_dtype)
    cache = []
    for block in tower.plain_blocks:
        x, kv = _self_attention_block(block, x, None, None)
        cache.append(kv)
    return cache


def encode_shared_prefix(
    tower: TrimmableTower,
    tokens: torch.Tensor,
    prefix_len: int,
    prefix_cache: list[tuple[torch.Tensor, torch.Tensor]] | None,
) -> torch.Tensor:
    """L2-normalised features of ``tokens [B, L]`` whose first ``prefix_len`` positions are the
    same in every row and already encoded (``prefix_cache``, from :func:`encode_prefix`).

    Exact for the towers :func:`detect_tower` accepts with ``plain_blocks`` (causal attention:
    a shared prefix's keys and values do not depend on what follows it, and the pooled position
    is the only output the last block needs). Numbers equal :func:`encode_trimmed` up to float
    summation order.
    """
    assert tower.plain_blocks is not None
    cast_dtype = tower.transformer.get_cast_dtype()  # type: ignore[operator]
    length = int(tokens.shape[1])
    suffix = tokens[:, prefix_len:]
    x = tower.token_embedding(suffix).to(cast_dtype)
    x = x + tower.positional_embedding[prefix_len:length].to(cast_dtype)
    # Pooled position of each row within the suffix (computed on the whole row, as open_clip).
    pooled_at = pool_indices(tokens, tower) - prefix_len
    blocks = tower.plain_blocks
    for i, block in enumerate(blocks):
        past = prefix_cache[i] if prefix_cache is not None else None
        last = i == len(blocks) - 1
        x, _ = _self_attention_block(block, x, past, pooled_at if last else None)
    x = tower.ln_final(x[:, 0])
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return F.normalize(x, dim=-1)
