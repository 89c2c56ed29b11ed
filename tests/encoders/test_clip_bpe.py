"""ClipBpe (torch-free) gives exactly open_clip's SimpleTokenizer ids; standalone_tokenizer picks
it only where open_clip.get_tokenizer would build that tokenizer."""

from __future__ import annotations

import json
import string
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zsindex
from zsindex.encoders.clip_bpe import ClipBpe, clip_bpe, vocab_path
from zsindex.encoders.fast_tokenizer import (
    FastTokenizer,
    fast_tokenizer_for,
    standalone_tokenizer,
)
from zsindex.encoders.text_forward import tokenize

TINY_DIR = Path(zsindex.__file__).parent / "models" / "zsindex-tiny"
SAMPLES = [
    "a photo of a dog.",
    "a photo of Corvus corax, a type of bird.",
    "Crème brûlée &amp; café 'Ａ' ﬁsh",
    "itap of the <start_of_text> 12345 ...",
    "word " * 100,
    "",
]


@pytest.fixture(scope="module")
def simple() -> Any:
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def bare_simple() -> Any:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


@pytest.fixture(scope="module")
def fast_bpe() -> FastTokenizer:
    return FastTokenizer(ClipBpe(77))


# The alphabet of test_fast_tokenizer.py (printable ASCII, "&", entities, control characters,
# non-ASCII) plus the special-token strings and contractions the word pattern treats specially.
ALPHABET = st.sampled_from(
    [
        *string.printable,
        "&",
        "&amp;",
        "&lt;",
        "\x00",
        "\x1b",
        "\x85",
        "é",
        "’",
        "Ａ",
        "ﬁ",
        "<start_of_text>",
        "<END_OF_TEXT>",
        "'S",
        "'ll",
    ]
)
TEXTS = st.lists(ALPHABET, max_size=40).map("".join)
# Sometimes long enough to be cut to the context.
LONG_TEXTS = st.tuples(TEXTS, st.integers(1, 12)).map(lambda t: t[0] * t[1])


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(LONG_TEXTS, min_size=1, max_size=8))
def test_same_ids_as_open_clip(
    simple: Any, bare_simple: Any, fast_bpe: FastTokenizer, texts: list[str]
) -> None:
    bpe = fast_bpe._tok
    for text in texts:
        assert bpe.encode(text) == bare_simple.encode(text)
    tokens, truncated = fast_bpe.token_array(texts)
    assert tokens.dtype == np.int64 and truncated.dtype == np.bool_
    assert np.array_equal(tokens, simple(texts).numpy())
    expected_tokens, expected_truncated = tokenize(simple, texts)
    assert np.array_equal(tokens, np.asarray(expected_tokens))
    assert truncated.tolist() == expected_truncated.tolist()
    short, _ = fast_bpe.token_array(texts, context_length=16)
    assert np.array_equal(short, simple(texts, context_length=16).numpy())


def test_attributes_and_bpe_cache_match_simple_tokenizer() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    ours, theirs = ClipBpe(40), SimpleTokenizer(context_length=40)
    assert ours.encoder == theirs.encoder
    assert ours.bpe_ranks == theirs.bpe_ranks
    assert ours.byte_encoder == theirs.byte_encoder
    assert (ours.sot_token_id, ours.eot_token_id) == (theirs.sot_token_id, theirs.eot_token_id)
    assert ours.context_length == theirs.context_length == 40
    assert ours.pat.pattern == theirs.pat.pattern and ours.pat.flags == theirs.pat.flags
    for text in SAMPLES:
        assert ours.encode(text) == theirs.encode(text)
    assert ours.cache == theirs.cache  # same words cached (not single characters), same pieces
    assert "a" not in ours.cache and "photo</w>" not in ours.cache and "photo" in ours.cache


def test_bpe_merges_equal_simple_tokenizer_on_many_words() -> None:
    """Every word of open_clip's ImageNet and its templates, plus pseudo-Latin taxa, merged
    piece for piece as SimpleTokenizer merges them (the merge loop is ours, not a copy)."""
    from open_clip.tokenizer import SimpleTokenizer
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    text = " ".join([*IMAGENET_CLASSNAMES, *(t("x") for t in OPENAI_IMAGENET_TEMPLATES)])
    syllables = [c + v for c in "bcdglmnprstv" for v in "aeiou"]
    latin = ["".join(syllables[(i * k) % 60] for k in (1, 7, 13, 31)) for i in range(600)]
    ours, theirs = ClipBpe(), SimpleTokenizer()
    words = {w for w in ours.pat.findall(text.lower()) + latin}
    encoded = ["".join(ours.byte_encoder[b] for b in w.encode("utf-8")) for w in sorted(words)]
    assert len(encoded) > 1300
    assert [ours.bpe(w) for w in encoded] == [theirs.bpe(w) for w in encoded]


def test_vocab_is_open_clips_file_and_instances_are_shared() -> None:
    import open_clip.tokenizer

    assert vocab_path() == Path(open_clip.tokenizer.default_bpe())
    got: list[ClipBpe] = []
    threads = [threading.Thread(target=lambda: got.append(clip_bpe(77))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(t) for t in got}) == 1 and got[0] is clip_bpe(77)
    assert clip_bpe(32) is not got[0] and clip_bpe(32).context_length == 32
    assert clip_bpe(32).encoder is got[0].encoder  # the vocabulary is parsed once


def test_fast_tokenizer_for_clip_bpe_is_cached(simple: Any) -> None:
    bpe = clip_bpe(77)
    fast = fast_tokenizer_for(bpe)
    assert fast is not None and fast is fast_tokenizer_for(bpe)
    assert fast.tokens(SAMPLES)[0].tolist() == simple(SAMPLES).tolist()
    assert fast_tokenizer_for(simple) is not None  # open_clip tokenizers keep their fast path


def _tiny_cfg() -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads((TINY_DIR / "open_clip_config.json").read_text())["model_cfg"]
    return cfg


def test_standalone_tokenizer_imports_neither_torch_nor_open_clip() -> None:
    code = f"""
import json, sys
from pathlib import Path
from zsindex.encoders.fast_tokenizer import fast_tokenizer_for, standalone_tokenizer
folder = Path({str(TINY_DIR)!r})
cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
fast = standalone_tokenizer(cfg, "local-dir:" + str(folder))
assert fast is not None
assert fast is standalone_tokenizer(cfg, "local-dir:" + str(folder))
tokens, truncated = fast.token_array(
    ["a photo of Cababa bodomius.", "itap of a café &amp; Ａ", "word " * 80]
)
assert tokens.shape == (3, 77) and truncated.tolist() == [False, False, True], truncated
assert fast_tokenizer_for(fast._tok) is not None
assert fast_tokenizer_for(lambda texts: texts) is None
print(json.dumps(tokens.tolist()))
bad = [m for m in ("torch", "open_clip") if m in sys.modules]
assert not bad, bad
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    import open_clip

    prompts = ["a photo of Cababa bodomius.", "itap of a café &amp; Ａ", "word " * 80]
    expected = open_clip.get_tokenizer("local-dir:" + str(TINY_DIR))(prompts).tolist()
    assert json.loads(out.stdout) == expected


def test_standalone_decision_matches_get_tokenizer_for_builtin_models() -> None:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower

    prompts = ["a photo of a dog.", "Crème brûlée &amp; café", "word " * 100]
    chosen = 0
    for name in open_clip.list_models():
        fast = standalone_tokenizer(open_clip.get_model_config(name), name)
        if fast is None:
            continue  # open_clip may need the network for these: never build them here
        chosen += 1
        tok = open_clip.get_tokenizer(name)
        assert type(tok) is SimpleTokenizer, name
        assert tok.clean_fn is _clean_lower and tok.reduction_fn is None, name
        assert fast.context_length == tok.context_length, name
        assert np.array_equal(fast.token_array(prompts)[0], tok(prompts).numpy()), name
    assert chosen > 50  # the plain CLIP configs


def _write_cfg(folder: Path, model_cfg: dict[str, Any]) -> str:
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    return "local-dir:" + str(folder)


def test_standalone_decision_for_local_dirs(tmp_path: Path) -> None:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower

    tiny = _tiny_cfg()
    assert standalone_tokenizer(tiny, "local-dir:" + str(TINY_DIR)) is not None
    assert standalone_tokenizer(tiny, "hf-hub:org/zsindex-tiny") is not None
    assert standalone_tokenizer({}, "hf-hub:org/repo") is None  # open_clip would use the hub's
    # A schema hides the SigLIP name rule; explicit default kwargs are the default tokenizer.
    cfg = json.loads(json.dumps(tiny))
    cfg["text_cfg"]["context_length"] = 24
    cfg["text_cfg"]["tokenizer_kwargs"] = {"clean": "lower", "reduction_mask": ""}
    source = _write_cfg(tmp_path / "my-siglip-copy", cfg)
    fast = standalone_tokenizer(cfg, source)
    assert fast is not None and fast.context_length == 24
    tok = open_clip.get_tokenizer(source)
    assert type(tok) is SimpleTokenizer and tok.clean_fn is _clean_lower
    assert tok.reduction_fn is None and tok.context_length == 24
    assert np.array_equal(fast.token_array(SAMPLES)[0], tok(SAMPLES).numpy())
    assert standalone_tokenizer(cfg, source) is fast  # one per context length


@pytest.mark.parametrize(
    ("text_cfg", "source"),
    [
        ({"hf_tokenizer_name": "bert-base-uncased"}, "ViT-B-32"),
        ({}, "ViT-B-16-SigLIP"),
        ({}, "my-SIGLIP2-model"),
        ({"tokenizer_kwargs": {"clean": "canonicalize"}}, "ViT-B-32"),
        ({"tokenizer_kwargs": {"clean": "whitespace"}}, "local-dir:/x"),
        ({"tokenizer_kwargs": {"reduction_mask": "simple"}}, "ViT-B-32"),
        ({"tokenizer_kwargs": {"additional_special_tokens": ["<x>"]}}, "ViT-B-32"),
        ({"tokenizer_kwargs": None}, "ViT-B-32"),
        ({"context_length": None}, "ViT-B-32"),
        ({"context_length": 0}, "ViT-B-32"),
        ({}, "local-dir:"),
        ({}, "hf-hub:"),
    ],
)
def test_standalone_declines_other_tokenizers(text_cfg: dict[str, Any], source: str) -> None:
    cfg = {**_tiny_cfg(), "text_cfg": {**_tiny_cfg()["text_cfg"], **text_cfg}}
    assert standalone_tokenizer(cfg, source) is None
