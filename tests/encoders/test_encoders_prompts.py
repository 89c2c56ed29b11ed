"""Prompt building, cache keys and the light import (pure Python, no model)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from zsindex.encoders import (
    MemoryTextEmbeddingCache,
    TextEmbeddingCache,
    build_prompts,
    label_key,
    templates_digest,
)
from zsindex.errors import InvalidInputError


def test_import_is_light() -> None:
    code = (
        "import sys, zsindex, zsindex.encoders as e\n"
        "for n in e.__all__: getattr(e, n)\n"
        "bad = [m for m in ('torch', 'open_clip') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_open_clip_and_clip_benchmark_placeholders() -> None:
    a = build_prompts(["dog", "cat"], ["a photo of a {}.", "art of the {}"])
    b = build_prompts(["dog", "cat"], ["a photo of a {c}.", "art of the {c}"])
    assert (
        a == b == [("a photo of a dog.", "art of the dog"), ("a photo of a cat.", "art of the cat")]
    )
    # literal braces are doubled, as with str.format
    assert build_prompts(["x"], ["{{set}} {}"]) == [("{set} x",)]


def test_per_label_prompts_override_templates() -> None:
    out = build_prompts(["dog", "cat"], ["a {}"], prompts=[None, ["a cat", "a feline"]])
    assert out == [("a dog",), ("a cat", "a feline")]
    assert build_prompts(["dog"], None) == [("dog",)]


@pytest.mark.parametrize(
    "templates",
    [["no placeholder"], ["{0} {1}"], ["{x}"], ["{"], [], "a {}"],
)
def test_bad_templates(templates: object) -> None:
    with pytest.raises(InvalidInputError):
        build_prompts(["dog"], templates)  # type: ignore[arg-type]


def test_bad_labels_and_prompts() -> None:
    with pytest.raises(InvalidInputError):
        build_prompts(["dog", ""], ["a {}"])
    with pytest.raises(InvalidInputError):
        build_prompts(["dog"], ["a {}"], prompts=[[]])
    with pytest.raises(InvalidInputError):
        build_prompts(["dog"], ["a {}"], prompts=[None, None])
    with pytest.raises(InvalidInputError):
        build_prompts("dog", ["a {}"])


def test_keys_and_digests() -> None:
    assert label_key("dog") == label_key("dog")
    assert len(label_key("dog")) == 64
    assert label_key("dog") != label_key("Dog")
    assert label_key("dog") != label_key("dog", ["a dog"])
    assert label_key("dog", ["a", "b"]) != label_key("dog", ["b", "a"])
    assert templates_digest(["a {}"]) == templates_digest(("a {}",))
    assert templates_digest(["a {}", "b {}"]) != templates_digest(["b {}", "a {}"])
    assert templates_digest(None) != templates_digest(["{}"])


def test_memory_cache_protocol() -> None:
    cache = MemoryTextEmbeddingCache()
    assert isinstance(cache, TextEmbeddingCache)
    vec = np.arange(4, dtype=np.float32)
    cache.put_many("fp", "td", {"k": vec})
    vec[0] = 99  # the cache keeps its own copy
    got = cache.get_many("fp", "td", ["k", "missing"])
    assert list(got) == ["k"] and got["k"][0] == 0
    assert cache.get_many("other-model", "td", ["k"]) == {}
    assert (cache.hits, cache.misses, cache.puts) == (1, 2, 1)
