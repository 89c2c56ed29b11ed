"""Prompts through the text tower: tokenized as open_clip does, batched, L2-normalised.

The numbers equal open_clip's ``encode_text`` (normalised) within 1e-5 in fp32; the speed comes
from sorting prompts by token length and running causal end-pooled towers only as long as each
batch's longest real sequence (see :mod:`zsindex.encoders.towers`), running each distinct token
prefix once (:mod:`zsindex.encoders.prefix_tree`), ``torch.inference_mode`` and fp16 autocast on
GPU. Template ensembling and the embedding cache are :mod:`zsindex.encoders.text`'s.

Nothing here imports torch at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

    from zsindex.encoders.towers import TrimmableTower

__all__ = [
    "DEFAULT_TEXT_BATCH",
    "DEFAULT_TOKEN_BUDGET",
    "ProgressFn",
    "autocast_context",
    "encode_prompts",
    "tokenize",
]

ProgressFn = Callable[[int, int], None]
DEFAULT_TEXT_BATCH = 1024
DEFAULT_TOKEN_BUDGET = 16384
TREE_CHUNK = 8192  # prompts per prefix tree (more sharing vs. memory: ~nodes x width floats)


def tokenize(
    tokenizer: Callable[..., Any], prompts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize as open_clip does and flag the prompts the tokenizer truncated.

    Returns:
        ``(tokens [n, context] int64, truncated bool [n])``. A row is truncated when re-tokenizing
        it with one more position of context yields a non-padding token in that position.
    """
    from zsindex.encoders.fast_tokenizer import fast_tokenizer_for  # (regex: not for images)

    fast = fast_tokenizer_for(tokenizer)
    if fast is not None:
        return fast.token_array(prompts)
    tokens = _as_array(tokenizer(list(prompts)))
    ctx = int(tokens.shape[1])
    pad = _as_array(tokenizer([""]))[0, -1]
    full = np.flatnonzero(tokens[:, -1] != pad).tolist()
    truncated = np.zeros(len(prompts), dtype=bool)
    if full:
        try:
            longer = _as_array(tokenizer([prompts[i] for i in full], context_length=ctx + 1))
        except TypeError:  # a tokenizer without a context_length override: count every full row
            truncated[full] = True
        else:
            truncated[full] = longer[:, ctx] != pad
    return tokens, truncated


def _as_array(tokens: Any) -> np.ndarray:
    """int64 numpy ids from a tokenizer's output (open_clip tokenizers return torch tensors)."""
    if hasattr(tokens, "cpu"):
        tokens = tokens.cpu().numpy()
    return np.asarray(tokens, dtype=np.int64)


def autocast_context(device: str, precision: str) -> Any:
    """The context a forward pass runs in: fp16 (``bf16``: bfloat16) autocast on CUDA unless
    ``precision`` is ``fp32``; elsewhere none (exact fp32)."""
    import contextlib

    import torch

    if device.startswith("cuda") and precision in ("auto", "fp16", "bf16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _batches(lengths: list[int], max_batch: int, token_budget: int) -> list[tuple[int, int]]:
    """Greedy ``[start, end)`` ranges over ascending ``lengths``: ≤ max_batch rows and
    rows × longest ≤ token_budget (at least one row per batch)."""
    out: list[tuple[int, int]] = []
    start = 0
    n = len(lengths)
    while start < n:
        end = start + 1
        while (
            end < n and end - start < max_batch and (end - start + 1) * lengths[end] <= token_budget
        ):
            end += 1
        out.append((start, end))
        start = end
    return out


def encode_prompts(
    model: Any,
    tokens: torch.Tensor | np.ndarray,
    *,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int = DEFAULT_TEXT_BATCH,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    trim: bool = True,
    share_prefix: bool = True,
    progress: ProgressFn | None = None,
    tower: TrimmableTower | None = None,
) -> torch.Tensor:
    """L2-normalised float32 features ``[n, dim]`` (on CPU) of tokenized prompts, in input order.

    Args:
        model: an open_clip model (``encode_text``).
        tokens: ``[n, context]`` token ids (a tensor or an integer array).
        device: where to run.
        precision: ``auto``/``fp16``/``bf16`` autocast on CUDA; ``fp32`` (or any CPU run) is exact.
        batch_size: most prompts per forward.
        token_budget: most (prompts × tokens) per forward; with trimming, short prompts batch
            wider.
        trim: run causal end-pooled towers at each batch's real length (exact; see towers).
        share_prefix: with ``trim``, for towers of plain open_clip blocks, run every distinct
            token prefix once (a template's "a photo of", a genus shared by its species) and the
            last block only at the pooled position (exact; see
            :mod:`zsindex.encoders.prefix_tree`). Prompts go in chunks of ``TREE_CHUNK``.
        progress: called with ``(prompts done, prompts total)`` after each batch.
        tower: a tower built without open_clip (:mod:`zsindex.encoders.plain_tower`), run
            instead of ``model`` (which may then be ``None``).
    """
    import torch
    import torch.nn.functional as F

    from zsindex.encoders.prefix_tree import encode_prefix_tree
    from zsindex.encoders.towers import detect_tower, encode_trimmed, needed_lengths

    if isinstance(tokens, np.ndarray):
        tokens = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    n = int(tokens.shape[0])
    if n == 0:
        raise InvalidInputError("no prompts to encode")
    if tower is None:
        tower = detect_tower(model) if trim else None
    as_tree = tower is not None and share_prefix and tower.plain_blocks is not None
    if tower is not None:
        lengths = needed_lengths(tokens, tower)
    if as_tree:
        # Lexicographic order puts prompts with common prefixes in the same chunk.
        keys = tokens.numpy()
        order = torch.from_numpy(np.lexsort(keys.T[::-1]).copy())
        sorted_len = lengths[order].tolist()
        step = max(1, TREE_CHUNK)
        batches = [(a, min(n, a + step)) for a in range(0, n, step)]
    else:
        if tower is not None:
            order = torch.argsort(lengths, stable=True)
            sorted_len = lengths[order].tolist()
        else:
            order = torch.arange(n)
            sorted_len = [int(tokens.shape[1])] * n
        batches = _batches(sorted_len, max(1, batch_size), max(1, token_budget))
    out: torch.Tensor | None = None
    done = 0
    with torch.inference_mode(), autocast_context(device, precision):
        for start, end in batches:
            idx = order[start:end]
            batch = tokens[idx]
            if as_tree:
                assert tower is not None
                batch = batch[:, : max(sorted_len[start:end])]
                feats = encode_prefix_tree(tower, batch.to(device))
            elif tower is not None:
                batch = batch[:, : sorted_len[end - 1]]
                feats = encode_trimmed(tower, batch.to(device))
            else:
                feats = model.encode_text(batch.to(device), normalize=False)
            feats = F.normalize(feats.float(), dim=-1).cpu()
            if out is None:
                out = torch.empty((n, feats.shape[1]), dtype=torch.float32)
            out[idx] = feats
            done += end - start
            if progress is not None:
                progress(done, n)
    assert out is not None
    return out
