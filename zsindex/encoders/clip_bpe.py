"""open_clip's default CLIP tokenizer, without importing torch or open_clip.

``import open_clip`` costs seconds (it imports torch, torchvision and timm), which dominates a
one-shot ``zsindex labels add``. :class:`ClipBpe` is a reimplementation of
``open_clip.tokenizer.SimpleTokenizer(context_length=..., clean="lower")`` — no additional special
tokens, no reduction mask — that reads open_clip's own vocabulary file
(``bpe_simple_vocab_16e6.txt.gz``) from the installed package folder, found with
``importlib.util.find_spec`` (which does not execute the package). It gives the same ids (checked by
property tests against the real tokenizer) and exposes what
:class:`zsindex.encoders.fast_tokenizer.FastTokenizer` uses: ``pat``, ``sot_token_id``,
``eot_token_id``, ``context_length``, ``encoder``, ``bpe`` and ``encode``.

Derived from OpenAI CLIP (https://github.com/openai/CLIP, MIT License, Copyright (c) 2021 OpenAI)
via open_clip (https://github.com/mlfoundations/open_clip, MIT License).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import regex

__all__ = ["VOCAB_FILE", "ClipBpe", "clip_bpe", "vocab_path"]

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
DEFAULT_CONTEXT_LENGTH = 77  # open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH
_SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_NUM_MERGES = 49152 - 256 - 2  # open_clip keeps lines [1, 49152-256-2] of the merges file


def vocab_path() -> Path:
    """open_clip's BPE vocabulary file in the installed package (the package is not imported)."""
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / VOCAB_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"open_clip's {VOCAB_FILE} not found (is open_clip installed?)")


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """open_clip's reversible byte → printable character table (``bytes_to_unicode``)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


_tables_lock = threading.Lock()
_tables: dict[Path, tuple[dict[str, int], dict[tuple[str, ...], int]]] = {}


def _load_tables(path: Path) -> tuple[dict[str, int], dict[tuple[str, ...], int]]:
    """``(encoder, bpe_ranks)`` as ``SimpleTokenizer.__init__`` builds them; read once per file
    and shared (read-only) by every :class:`ClipBpe`."""
    with _tables_lock:
        cached = _tables.get(path)
        if cached is not None:
            return cached
        with gzip.open(path) as f:
            lines = f.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        byte_chars = list(_bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars]
        vocab.extend("".join(m) for m in merges)
        vocab.extend(_SPECIAL_TOKENS)
        encoder = dict(zip(vocab, range(len(vocab)), strict=True))
        ranks = dict(zip(merges, range(len(merges)), strict=True))
        _tables[path] = (encoder, ranks)
        return encoder, ranks


def _clean_lower(text: str) -> str:
    """open_clip's ``_clean_lower``: ``whitespace_clean(basic_clean(text)).lower()``."""
    import ftfy  # ~0.1 s to import; only texts that leave FastTokenizer's plain path need it

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


class ClipBpe:
    """``open_clip.tokenizer.SimpleTokenizer(context_length=context_length)``'s ids, torch-free.

    Building one reads and parses the vocabulary (the file is parsed once per process and shared);
    use :func:`clip_bpe` for a process-wide instance per context length.
    """

    def __init__(
        self, context_length: int = DEFAULT_CONTEXT_LENGTH, bpe_path: str | Path | None = None
    ) -> None:
        path = Path(bpe_path) if bpe_path is not None else vocab_path()
        self.encoder, self.bpe_ranks = _load_tables(path.resolve())
        self.byte_encoder = _bytes_to_unicode()
        self.cache: dict[str, str] = {t: t for t in _SPECIAL_TOKENS}
        special = "|".join(_SPECIAL_TOKENS)
        self.pat = regex.compile(
            special + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.vocab_size = len(self.encoder)
        self.all_special_ids = [self.encoder[t] for t in _SPECIAL_TOKENS]
        self.sot_token_id = self.all_special_ids[0]
        self.eot_token_id = self.all_special_ids[1]
        self.context_length = int(context_length)

    def bpe(self, token: str) -> str:
        """Space-separated BPE pieces of one byte-encoded word (``SimpleTokenizer.bpe``, with the
        same cache: every multi-character word, plus the special tokens)."""
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        if len(token) == 1:
            return token + "</w>"
        word = [*token[:-1], token[-1] + "</w>"]
        ranks = self.bpe_ranks
        # SimpleTokenizer's loop, without its per-pair key function: find the lowest-ranked
        # adjacent pair (ranks are distinct), merge every occurrence left to right, repeat.
        while len(word) > 1:
            best_rank = -1
            first = second = ""
            left = word[0]
            for right in word[1:]:
                rank = ranks.get((left, right))
                if rank is not None and (best_rank < 0 or rank < best_rank):
                    best_rank, first, second = rank, left, right
                left = right
            if best_rank < 0:
                break
            merged: list[str] = []
            i, n = 0, len(word)
            while i < n:
                if i < n - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens (``SimpleTokenizer.encode``)."""
        ids: list[int] = []
        byte_encoder = self.byte_encoder
        encoder = self.encoder
        for token in self.pat.findall(_clean_lower(text)):
            token = "".join(byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(encoder[piece] for piece in self.bpe(token).split(" "))
        return ids


_instances_lock = threading.Lock()
_instances: dict[int, ClipBpe] = {}


def clip_bpe(context_length: int = DEFAULT_CONTEXT_LENGTH) -> ClipBpe:
    """The process-wide :class:`ClipBpe` for ``context_length`` (built once; thread-safe)."""
    ctx = int(context_length)
    with _instances_lock:
        tok = _instances.get(ctx)
        if tok is None:
            tok = _instances[ctx] = ClipBpe(ctx)
        return tok
