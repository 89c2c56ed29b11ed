"""A faster, exact path through open_clip's ``SimpleTokenizer`` for plain ASCII prompts, and a
torch-free way to get the same ids.

Profiling a 100k-label registration showed ~40% of the time in open_clip's tokenizer, and most
of that in work that cannot change plain ASCII text: ``ftfy.fix_text`` (mojibake, width, quotes,
control characters — all about non-ASCII or control characters, plus HTML entities, which need
``&``), two ``html.unescape`` passes (need ``&``) and per-character byte re-encoding (the
identity for printable ASCII). For a prompt made only of printable ASCII characters without
``&`` this module skips them and reuses one cached token-id list per word, which gives exactly the
ids ``SimpleTokenizer.__call__`` gives (checked by property tests against the real tokenizer).
Every other prompt — non-ASCII, control characters, ``&`` — goes through the tokenizer's own
``encode``, so the output is always what open_clip would produce.

:class:`FastTokenizer` wraps either open_clip's ``SimpleTokenizer`` with the default ``lower``
clean function and no ``reduction_mask`` (:func:`fast_tokenizer_for` returns ``None`` for any
other tokenizer) or a :class:`~zsindex.encoders.clip_bpe.ClipBpe`, the torch-free
reimplementation of that tokenizer. :meth:`FastTokenizer.token_array` returns numpy arrays and
never imports torch. :func:`standalone_tokenizer` decides from a model config alone, by
``open_clip.get_tokenizer``'s own rules (erring towards "no"), whether a model's tokenizer is that
default one, and if so returns a :class:`FastTokenizer` over :class:`ClipBpe`, so a one-shot
``zsindex labels add`` can tokenize without importing torch or open_clip (seconds of imports).
"""

from __future__ import annotations

import itertools
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zsindex.encoders.clip_bpe import DEFAULT_CONTEXT_LENGTH, ClipBpe, clip_bpe

__all__ = ["FastTokenizer", "fast_tokenizer_for", "standalone_tokenizer"]

# Printable ASCII except "&" (the only printable ASCII character ftfy / html.unescape act on).
_PLAIN = re.compile(r"[ -%'-~]*")
MAX_CACHED = 1_000_000  # chunks kept per tokenizer (~100 MB at most)


class FastTokenizer:
    """Token ids of prompts, equal to ``SimpleTokenizer.__call__`` (see the module docstring).

    ``tokenizer`` is an open_clip ``SimpleTokenizer`` (``clean="lower"``, no reduction mask) or a
    :class:`~zsindex.encoders.clip_bpe.ClipBpe`.
    """

    def __init__(self, tokenizer: ClipBpe | Any) -> None:
        self._tok = tokenizer
        self._pat = tokenizer.pat
        self._sot = int(tokenizer.sot_token_id)
        self._eot = int(tokenizer.eot_token_id)
        self._chunks: dict[str, list[int]] = {}
        self._words: dict[str, list[int]] = {}
        self.context_length = int(tokenizer.context_length)

    def _chunk_ids(self, chunk: str) -> list[int]:
        # No alternative of open_clip's word pattern matches whitespace and none looks ahead,
        # so the words of a text are the words of its space-separated chunks, in order.
        ids = self._chunks.get(chunk)
        if ids is None:
            if len(self._chunks) >= MAX_CACHED:  # bound a long-running server's memory
                self._chunks.clear()
                self._words.clear()
            ids = []
            for word in self._pat.findall(chunk):
                word_ids = self._words.get(word)
                if word_ids is None:
                    # Printable ASCII bytes map to themselves in open_clip's byte encoder.
                    pieces = self._tok.bpe(word).split(" ")
                    word_ids = self._words[word] = [self._tok.encoder[p] for p in pieces]
                ids.extend(word_ids)
            self._chunks[chunk] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens (``SimpleTokenizer.encode``)."""
        if not (text.isascii() and _PLAIN.fullmatch(text)):
            return list(self._tok.encode(text))
        ids: list[int] = []
        for chunk in text.lower().split():
            ids.extend(self._chunk_ids(chunk))
        return ids

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Per text: ``[sot] + encode(text) + [eot]``, not yet cut to the context."""
        return [[self._sot, *self.encode(t), self._eot] for t in texts]

    def token_array(
        self, texts: Sequence[str], context_length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``([n, context] int64 array, truncated bool [n])``, cut exactly as open_clip cuts:
        a row longer than the context keeps its first ``context`` ids with the last set to the
        end-of-text id. Does not import torch."""
        ctx = int(context_length or self.context_length)
        rows = self.ids(texts)
        n = len(rows)
        # One pass over all ids instead of a numpy assignment per row (~3x faster at 100k rows):
        # each row's first ``ctx`` ids land in its row of ``out``, in row-major order.
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=n)
        flat = np.fromiter(itertools.chain.from_iterable(rows), np.int64, int(lengths.sum()))
        truncated = lengths > ctx
        kept = np.minimum(lengths, ctx)
        out = np.zeros((n, ctx), dtype=np.int64)
        if truncated.any():
            position = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            flat = flat[position < ctx]
        out[np.arange(ctx) < kept[:, None]] = flat
        out[truncated, ctx - 1] = self._eot
        return out, truncated

    def tokens(self, texts: Sequence[str], context_length: int | None = None) -> tuple[Any, Any]:
        """``([n, context] int64 tensor, truncated bool [n])``: :meth:`token_array` with the
        ids as a torch tensor."""
        import torch

        out, truncated = self.token_array(texts, context_length)
        return torch.from_numpy(out), truncated

    def __call__(self, texts: Sequence[str], context_length: int | None = None) -> Any:
        """``[n, context]`` int64 token tensor, as ``SimpleTokenizer.__call__`` returns it."""
        return self.tokens(texts, context_length)[0]


def fast_tokenizer_for(tokenizer: Any) -> FastTokenizer | None:
    """A :class:`FastTokenizer` over ``tokenizer`` when that is exact, else ``None``.

    Never imports open_clip by itself: an object that is not a :class:`ClipBpe` is only checked
    against open_clip's ``SimpleTokenizer`` when open_clip is already imported (or the object
    comes from it).
    """
    if isinstance(tokenizer, ClipBpe):
        return _cached_fast(tokenizer)
    if "open_clip" not in sys.modules and not type(tokenizer).__module__.startswith("open_clip"):
        return None
    try:
        from open_clip.tokenizer import SimpleTokenizer, _clean_lower
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return None
    if type(tokenizer) is not SimpleTokenizer:
        return None
    if tokenizer.clean_fn is not _clean_lower or tokenizer.reduction_fn is not None:
        return None
    return _cached_fast(tokenizer)


def _cached_fast(tokenizer: Any) -> FastTokenizer:
    cached = getattr(tokenizer, "_zsindex_fast", None)
    if isinstance(cached, FastTokenizer):
        return cached
    fast = FastTokenizer(tokenizer)
    tokenizer._zsindex_fast = fast  # one word cache per tokenizer, shared by every caller
    return fast


_SCHEMAS = ("local-dir:", "hf-hub:")  # open_clip.factory.LOCAL_DIR_PREFIX, HF_HUB_PREFIX
_standalone_lock = threading.Lock()
_standalone: dict[int, FastTokenizer] = {}


def standalone_context_length(
    model_cfg: Mapping[str, Any] | None, tokenizer_source: str
) -> int | None:
    """The context length of the tokenizer :func:`standalone_tokenizer` would give for this
    model, or ``None`` where it gives none. Cheap: nothing is built.

    ``model_cfg`` is the model's ``model_cfg`` (from ``open_clip_config.json`` or open_clip's
    built-in configs). The decision mirrors ``open_clip.get_tokenizer`` and errs towards
    ``None``: a configured ``hf_tokenizer_name``, a SigLIP name without a schema, any
    ``tokenizer_kwargs`` other than ``clean="lower"`` / ``reduction_mask=""``, or anything
    unexpected gives ``None``. An ``hf-hub:`` source is judged like ``local-dir:`` (callers pass
    the downloaded config), but needs a non-empty config (without one open_clip falls back to the
    hub's HF tokenizer).
    """
    if not isinstance(model_cfg, Mapping) or not isinstance(tokenizer_source, str):
        return None
    schema = next((p for p in _SCHEMAS if tokenizer_source.startswith(p)), None)
    identifier = tokenizer_source[len(schema) :] if schema else tokenizer_source
    if not identifier:
        return None  # open_clip rejects an empty identifier
    if schema == "hf-hub:" and not model_cfg:
        return None
    if schema is None and "siglip" in identifier.lower():
        return None
    text_cfg = model_cfg.get("text_cfg", {})
    if not isinstance(text_cfg, Mapping) or text_cfg.get("hf_tokenizer_name"):
        return None
    kwargs = text_cfg.get("tokenizer_kwargs", {})
    if not isinstance(kwargs, Mapping):
        return None
    allowed = {"clean": "lower", "reduction_mask": ""}
    for key, value in kwargs.items():
        if key not in allowed or not isinstance(value, str) or value != allowed[key]:
            return None
    ctx = text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH)
    if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx <= 0:
        return None
    return ctx


def standalone_tokenizer(
    model_cfg: Mapping[str, Any] | None, tokenizer_source: str
) -> FastTokenizer | None:
    """A :class:`FastTokenizer` over :class:`ClipBpe` when ``open_clip.get_tokenizer(
    tokenizer_source)`` would build the default ``SimpleTokenizer`` (``clean="lower"``, no
    reduction mask; see :func:`standalone_context_length`), else ``None``; imports neither torch
    nor open_clip. One :class:`FastTokenizer` per context length is shared by every caller.
    """
    ctx = standalone_context_length(model_cfg, tokenizer_source)
    if ctx is None:
        return None
    with _standalone_lock:
        fast = _standalone.get(ctx)
        if fast is None:
            fast = _standalone[ctx] = FastTokenizer(clip_bpe(ctx))
        return fast
