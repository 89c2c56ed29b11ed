"""A faster, exact path through open_clip's ``SimpleTokenizer`` for plain ASCII prompts.

Profiling a 100k-label registration showed ~40% of the time in open_clip's tokenizer, and most
of that in work that cannot change plain ASCII text: ``ftfy.fix_text`` (mojibake, width, quotes,
control characters — all about non-ASCII or control characters, plus HTML entities, which need
``&``), two ``html.unescape`` passes (need ``&``) and per-character byte re-encoding (the
identity for printable ASCII). For a prompt made only of printable ASCII characters without
``&`` this module skips them and reuses one cached token-id list per word, which gives exactly the
ids ``SimpleTokenizer.__call__`` gives (checked by property tests against the real tokenizer).
Every other prompt — non-ASCII, control characters, ``&`` — goes through the tokenizer's own
``encode``, so the output is always what open_clip would produce.

Only open_clip's ``SimpleTokenizer`` with the default ``lower`` clean function and no
``reduction_mask`` takes this path; :func:`fast_tokenizer_for` returns ``None`` for anything else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["FastTokenizer", "fast_tokenizer_for"]

# Printable ASCII except "&" (the only printable ASCII character ftfy / html.unescape act on).
_PLAIN = re.compile(r"[ -%'-~]*")
MAX_CACHED = 1_000_000  # chunks kept per tokenizer (~100 MB at most)


class FastTokenizer:
    """Token ids of prompts, equal to ``SimpleTokenizer.__call__`` (see the module docstring)."""

    def __init__(self, tokenizer: Any) -> None:
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

    def tokens(self, texts: Sequence[str], context_length: int | None = None) -> tuple[Any, Any]:
        """``([n, context] int64 tensor, truncated bool [n])``, cut exactly as open_clip cuts:
        a row longer than the context keeps its first ``context`` ids with the last set to the
        end-of-text id."""
        import torch

        ctx = int(context_length or self.context_length)
        rows = self.ids(texts)
        out = np.zeros((len(rows), ctx), dtype=np.int64)
        truncated = np.zeros(len(rows), dtype=bool)
        for i, row in enumerate(rows):
            if len(row) > ctx:
                row = row[:ctx]
                row[-1] = self._eot
                truncated[i] = True
            out[i, : len(row)] = row
        return torch.from_numpy(out), truncated

    def __call__(self, texts: Sequence[str], context_length: int | None = None) -> Any:
        """``[n, context]`` int64 token tensor, as ``SimpleTokenizer.__call__`` returns it."""
        return self.tokens(texts, context_length)[0]


def fast_tokenizer_for(tokenizer: Any) -> FastTokenizer | None:
    """A :class:`FastTokenizer` over ``tokenizer`` when that is exact, else ``None``."""
    try:
        from open_clip.tokenizer import SimpleTokenizer, _clean_lower
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return None
    if type(tokenizer) is not SimpleTokenizer:
        return None
    if tokenizer.clean_fn is not _clean_lower or tokenizer.reduction_fn is not None:
        return None
    cached = getattr(tokenizer, "_zsindex_fast", None)
    if isinstance(cached, FastTokenizer):
        return cached
    fast = FastTokenizer(tokenizer)
    tokenizer._zsindex_fast = fast  # one word cache per tokenizer, shared by every caller
    return fast
