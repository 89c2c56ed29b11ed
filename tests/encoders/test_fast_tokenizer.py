"""The fast tokenizer path gives exactly open_clip's SimpleTokenizer ids, truncation included."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zsindex.encoders.fast_tokenizer import FastTokenizer, fast_tokenizer_for
from zsindex.encoders.text_forward import tokenize


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


def test_token_array_is_numpy_and_tokens_wraps_it(simple: Any) -> None:
    import numpy as np
    import torch

    fast = FastTokenizer(simple)
    texts = ["a photo of a dog.", "word " * 80, "café &amp; Ａ"]
    array, truncated = fast.token_array(texts)
    assert isinstance(array, np.ndarray) and array.dtype == np.int64 and array.shape == (3, 77)
    assert truncated.tolist() == [False, True, False]
    tensor, truncated_again = fast.tokens(texts)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.int64
    assert tensor.tolist() == array.tolist() == simple(texts).tolist()
    assert truncated_again.tolist() == truncated.tolist()
    assert fast.token_array(texts, 8)[0].tolist() == simple(texts, context_length=8).tolist()
