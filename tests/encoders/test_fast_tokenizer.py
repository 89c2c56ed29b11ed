"""The fast tokenizer path gives exactly open_clip's SimpleTokenizer ids, truncation included."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zsindex.encoders.fast_tokenizer import FastTokenizer, fast_tokenizer_for
from zsindex.encoders.text import tokenize


@pytest.fixture(scope="module")
def simple() -> Any:
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


# Mostly printable ASCII (the fast path) with the characters that must leave it: "&" (HTML
# entities), control characters, tabs/newlines, non-ASCII letters, curly quotes, fullwidth forms.
ALPHABET = st.sampled_from(
    [*string.printable, "&", "&amp;", "&lt;", "\x00", "\x1b", "\x85", "é", "’", "Ａ", "ﬁ"]
)
TEXTS = st.lists(ALPHABET, max_size=40).map("".join)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(TEXTS, min_size=1, max_size=8))
def test_same_ids_as_open_clip(simple: Any, texts: list[str]) -> None:
    fast = fast_tokenizer_for(simple)
    assert fast is not None
    assert fast(texts).tolist() == simple(texts).tolist()


def test_words_and_chunks_are_cached_and_bounded(
    simple: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zsindex.encoders.fast_tokenizer as module

    fast = FastTokenizer(simple)
    texts = [f"a photo of Corvus corax{i}." for i in range(50)]
    assert fast(texts).tolist() == simple(texts).tolist()
    assert "corvus" in fast._chunks and "corvus" in fast._words
    monkeypatch.setattr(module, "MAX_CACHED", 10)
    again = [f"the {i} {i + 1} Corvus" for i in range(30)]
    assert fast(again).tolist() == simple(again).tolist()
    assert len(fast._chunks) <= 10


def test_truncation_matches_and_is_flagged(simple: Any) -> None:
    texts = ["word " * 75, "word " * 76, "word " * 200, "short"]
    tokens, truncated = tokenize(simple, texts)
    assert tokens.tolist() == simple(texts).tolist()
    # 75 words + <sot> + <eot> = 77 fits the context; 76 words do not.
    assert truncated.tolist() == [False, True, True, False]
    assert int(tokens[1, -1]) == simple.eot_token_id


def test_only_plain_simple_tokenizers_take_the_fast_path(simple: Any) -> None:
    import open_clip

    assert fast_tokenizer_for(simple) is fast_tokenizer_for(simple)  # one word cache per tokenizer
    canonical = open_clip.tokenizer.SimpleTokenizer(clean="canonicalize")
    assert fast_tokenizer_for(canonical) is None
    assert fast_tokenizer_for(lambda texts: texts) is None
