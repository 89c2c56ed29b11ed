"""Label embeddings: templates × labels → prompts → text tower → per-label mean → L2 norm.

The numbers equal ``open_clip.build_zero_shot_classifier`` (transposed) within 1e-5 in fp32; the
speed comes from (1) deduplicating prompts, (2) batching across labels, (3) the embedding cache,
checked before the model is needed, and (4) the forward pass of
:mod:`zsindex.encoders.text_forward` (length-trimmed, prefix-shared, autocast on GPU). A
:class:`TextRuntime` runs that pass: the :class:`~zsindex.encoders.Encoder` in this process, or a
:class:`~zsindex.encoders.text_worker.TextWorker` in a child.

Nothing here imports torch.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from zsindex.encoders.cache import TextEmbeddingCache
from zsindex.encoders.info import ModelInfo
from zsindex.encoders.prompts import build_prompts, label_key, templates_digest
from zsindex.encoders.text_forward import DEFAULT_TEXT_BATCH, ProgressFn
from zsindex.errors import InvalidInputError

__all__ = [
    "CheckFn",
    "TextEncoding",
    "TextRuntime",
    "encode_label_prompts",
    "encode_labels",
    "tokenize_then_encode",
]

log = logging.getLogger(__name__)

CheckFn = Callable[[np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class TextEncoding:
    """The result of :meth:`Encoder.encode_labels`.

    Attributes:
        embeddings: float32 ``[num_labels, dim]``, each row L2-normalised, in label order.
        num_truncated: prompts longer than the context (truncated as open_clip does), counted over
            the labels tokenized in this call (see ``truncation_complete``).
        truncated_labels: indices of labels with at least one truncated prompt (same scope).
        num_encoded: labels whose embedding was computed by the model in this call.
        num_cached: labels taken from the cache.
        num_prompts: distinct prompts run through the text tower.
        truncation_complete: ``False`` when labels served from the cache were not re-tokenized
            (their truncation was counted when they were first encoded), ``True`` otherwise.
    """

    embeddings: np.ndarray
    num_truncated: int
    truncated_labels: tuple[int, ...]
    num_encoded: int
    num_cached: int
    num_prompts: int
    truncation_complete: bool


class TextRuntime(Protocol):
    """What :func:`encode_labels` needs from an encoder: :class:`~zsindex.encoders.Encoder` runs
    the model in this process, :class:`~zsindex.encoders.text_worker.TextWorker` in a child."""

    @property
    def info(self) -> ModelInfo: ...

    def tokenize_prompts(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens [n, context] int64, truncated bool [n])``; never loads model weights."""
        ...

    def encode_tokens(
        self, tokens: np.ndarray, *, batch_size: int, progress: ProgressFn | None
    ) -> np.ndarray:
        """L2-normalised float32 ``[n, dim]`` features of token rows (loads the model)."""
        ...

    def tokenize_and_encode(
        self,
        prompts: Sequence[str],
        *,
        batch_size: int,
        progress: ProgressFn | None,
        check: CheckFn,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens, truncated, features)`` of every prompt: :meth:`tokenize_prompts` then
        :meth:`encode_tokens`, or both at once where a runtime can overlap them. ``check`` sees
        ``(tokens, truncated)`` before the features are returned and may raise."""
        ...


def tokenize_then_encode(
    runtime: TextRuntime,
    prompts: Sequence[str],
    *,
    batch_size: int,
    progress: ProgressFn | None,
    check: CheckFn,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`TextRuntime.tokenize_and_encode` one after the other (``check`` before encoding)."""
    tokens, truncated = runtime.tokenize_prompts(prompts)
    check(tokens, truncated)
    features = runtime.encode_tokens(tokens, batch_size=batch_size, progress=progress)
    return tokens, truncated, features


def encode_label_prompts(
    prompt_emb: np.ndarray, label_prompt_ids: Sequence[Sequence[int]]
) -> np.ndarray:
    """Per label: mean of its prompts' normalised embeddings, L2-normalised again (float32)."""
    prompt_emb = np.asarray(prompt_emb, dtype=np.float32)
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(label_prompt_ids):
        groups.setdefault(len(ids), []).append(i)
    out: np.ndarray | None = None
    for count, rows in groups.items():
        # fromiter over a flat chain: ~10x faster than np.array of 100k small lists.
        flat = itertools.chain.from_iterable(label_prompt_ids[r] for r in rows)
        idx = np.fromiter(flat, dtype=np.int64, count=len(rows) * count).reshape(-1, count)
        # One template: the mean of one row is the row (each pass over a 100k x dim matrix
        # costs ~0.1 s, so none is spent on it).
        vecs = prompt_emb[idx[:, 0]] if count == 1 else prompt_emb[idx].mean(axis=1)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        if len(groups) == 1:  # every label in order
            return np.asarray(vecs)
        if out is None:
            out = np.empty((len(label_prompt_ids), prompt_emb.shape[1]), dtype=np.float32)
        out[np.array(rows, dtype=np.int64)] = vecs
    assert out is not None
    return out


def _valid_vector(vec: Any, dim: int) -> np.ndarray | None:
    arr = np.asarray(vec, dtype=np.float32).reshape(-1)
    if arr.shape != (dim,) or not np.all(np.isfinite(arr)):
        return None
    return arr


def _report_truncation(
    labels: Sequence[str],
    truncated_labels: list[int],
    num_truncated: int,
    context: int,
    strict: bool,
) -> None:
    if not num_truncated:
        return
    names = ", ".join(
        repr(labels[i] if len(labels[i]) <= 60 else labels[i][:57] + "...")
        for i in truncated_labels[:5]
    )
    more = "" if len(truncated_labels) <= 5 else f" and {len(truncated_labels) - 5} more"
    if strict:
        raise InvalidInputError(
            f"{num_truncated} prompt(s) exceed the model's context of {context} tokens, "
            f"for label(s) {names}{more}; shorten them or drop --strict to truncate"
        )
    log.warning(
        "%d prompt(s) exceed the model's context of %d tokens and were truncated (labels %s%s)",
        num_truncated,
        context,
        names,
        more,
    )


def encode_labels(
    runtime: TextRuntime,
    labels: Sequence[str],
    templates: Sequence[str] | None,
    *,
    prompts: Sequence[Sequence[str] | None] | None = None,
    cache: TextEmbeddingCache | None = None,
    progress: ProgressFn | None = None,
    strict: bool = False,
    check_cached_truncation: bool = False,
    batch_size: int = DEFAULT_TEXT_BATCH,
) -> TextEncoding:
    """Embed labels; see :meth:`zsindex.encoders.Encoder.encode_labels`."""
    per_label = build_prompts(labels, templates, prompts)
    n = len(per_label)
    if n == 0:
        raise InvalidInputError("no labels to encode")
    plain_keys: dict[str, str] = {}  # taxonomies repeat names: hash each plain label once
    keys = []
    for i, label in enumerate(labels):
        if prompts is None or prompts[i] is None:
            key = plain_keys.get(label)
            if key is None:
                key = plain_keys[label] = label_key(label)
        else:
            key = label_key(label, per_label[i])
        keys.append(key)
    first_of: dict[str, int] = {}
    for i, key in enumerate(keys):
        first_of.setdefault(key, i)

    found: dict[str, np.ndarray] = {}
    fingerprint = digest = ""
    dim = 0
    if cache is not None:
        info = runtime.info
        fingerprint, digest, dim = info.fingerprint, templates_digest(templates), info.dim
        for key, vec in cache.get_many(fingerprint, digest, list(first_of)).items():
            arr = _valid_vector(vec, dim)
            if arr is not None and key in first_of:
                found[key] = arr
    missing_keys = [k for k in first_of if k not in found]
    check_all = strict or check_cached_truncation or not found
    tokenize_keys = list(first_of) if check_all else missing_keys

    truncated_labels: list[int] = []
    num_truncated = 0
    prompt_emb: np.ndarray | None = None
    label_ids: list[list[int]] = []
    uniq: list[str] = []
    if tokenize_keys:
        # Distinct prompts of the labels to tokenize, each once.
        pos: dict[str, int] = {}
        key_ids: dict[str, list[int]] = {}
        for key in tokenize_keys:
            ids = []
            for p in per_label[first_of[key]]:
                if p not in pos:
                    pos[p] = len(uniq)
                    uniq.append(p)
                ids.append(pos[p])
            key_ids[key] = ids
        truncation: list[tuple[list[int], int]] = []

        def check(tokens: np.ndarray, trunc: np.ndarray) -> None:
            bad = {k for k, ids in key_ids.items() if trunc[ids].any()} if trunc.any() else set()
            bad_labels = [i for i, k in enumerate(keys) if k in bad]
            count = sum(int(trunc[key_ids[keys[i]]].sum()) for i in bad_labels)
            _report_truncation(labels, bad_labels, count, int(tokens.shape[1]), strict)
            truncation.append((bad_labels, count))

        if missing_keys and len(missing_keys) == len(key_ids):
            # Every prompt tokenized here is also encoded (a new set, or only the uncached labels
            # were tokenized): a worker encodes the first ones while the rest tokenize.
            tokens, trunc, prompt_emb = runtime.tokenize_and_encode(
                uniq, batch_size=batch_size, progress=progress, check=check
            )
            label_ids = [key_ids[k] for k in missing_keys]
        else:
            tokens, trunc = runtime.tokenize_prompts(uniq)
            check(tokens, trunc)
        truncated_labels, num_truncated = truncation[0]
        if missing_keys and prompt_emb is None:  # some cached: encode the others' prompts
            need = sorted({i for k in missing_keys for i in key_ids[k]})
            remap = {old: new for new, old in enumerate(need)}
            need_tokens = tokens[need]
            label_ids = [[remap[i] for i in key_ids[k]] for k in missing_keys]
            uniq = [uniq[i] for i in need]
            prompt_emb = runtime.encode_tokens(
                need_tokens, batch_size=batch_size, progress=progress
            )

    emb: np.ndarray | None = None
    if missing_keys:
        assert prompt_emb is not None
        vecs = encode_label_prompts(prompt_emb, label_ids)
        new = dict(zip(missing_keys, vecs, strict=True))
        if cache is not None:
            cache.put_many(fingerprint, digest, new)
        if not found:  # nothing cached: one gather from the new rows, not 100k row copies
            row_of = {k: j for j, k in enumerate(missing_keys)}
            emb = vecs[np.fromiter((row_of[k] for k in keys), dtype=np.int64, count=n)]
        found.update(new)
    if emb is None:
        emb = np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
    missing_set = set(missing_keys)
    num_encoded = sum(1 for k in keys if k in missing_set)
    return TextEncoding(
        embeddings=emb,
        num_truncated=num_truncated,
        truncated_labels=tuple(truncated_labels),
        num_encoded=num_encoded,
        num_cached=n - num_encoded,
        num_prompts=len(uniq) if missing_keys else 0,
        truncation_complete=check_all,
    )
