"""Label embeddings: parity with open_clip.build_zero_shot_classifier, trimming, cache."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from enc_helpers import LAYER_SCALE_CFG, Bundle, build_from_cfg

from zsindex.encoders import Encoder, MemoryTextEmbeddingCache, load_encoder, model_cache_stats
from zsindex.errors import InvalidInputError

LABELS = [
    "tench",
    "great white shark",
    "cock",
    "American robin",
    "spotted salamander",
    "loggerhead sea turtle",
    "European green lizard",
    "a label with quite a few words so that its prompts are clearly longer than the others",
    "yellow lady's slipper",
    "dog",
    "cat",
]
TEMPLATES = ["itap of a {}.", "a bad photo of the {}.", "a {} in a video game."]
LONG = "very " * 80 + "long label"


def reference(bundle: Bundle, labels: list[str], templates: list[str]) -> np.ndarray:
    import open_clip

    weights = open_clip.build_zero_shot_classifier(
        bundle.model,
        bundle.tokenizer,
        labels,
        templates,
        num_classes_per_batch=10,
        device="cpu",
        use_tqdm=False,
    )
    return weights.T.numpy()


def encoder_for(bundle: Bundle, name: str = "custom") -> Encoder:
    return Encoder.from_open_clip(bundle.model, bundle.tokenizer, bundle.preprocess, name=name)


class ForwardCounter:
    """Counts forward passes of a module through a real torch hook, with each input's shape."""

    def __init__(self, module: Any) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, _module: Any, args: Any, _out: Any) -> None:
        self.shapes.append(tuple(args[0].shape))

    @property
    def calls(self) -> int:
        return len(self.shapes)

    @property
    def rows(self) -> list[int]:
        return [shape[0] for shape in self.shapes]

    @property
    def lengths(self) -> list[int]:
        """Sequence lengths of ``[batch, length, width]`` inputs."""
        return [shape[1] for shape in self.shapes if len(shape) > 2]

    def close(self) -> None:
        self._handle.remove()


def text_transformer(model: Any) -> Any:
    return model.text.transformer if hasattr(model, "text") else model.transformer


def text_batches(model: Any) -> ForwardCounter:
    """Counts text batches: the final layer norm runs once per batch on every path (shared
    prefixes never reach it)."""
    return ForwardCounter(model.text.ln_final if hasattr(model, "text") else model.ln_final)


@pytest.mark.parametrize("fixture", ["vitb32", "tiny_clip", "siglip_like", "custom_causal"])
def test_parity_with_open_clip(fixture: str, request: pytest.FixtureRequest) -> None:
    bundle: Bundle = request.getfixturevalue(fixture)
    labels = LABELS if fixture != "vitb32" else LABELS[:8]
    out = encoder_for(bundle).encode_labels(labels, TEMPLATES)
    ref = reference(bundle, labels, TEMPLATES)
    assert out.embeddings.dtype == np.float32
    assert out.embeddings.shape == ref.shape
    assert np.abs(out.embeddings - ref).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1.0, atol=1e-5)


def test_tower_detection(
    vitb32: Bundle, tiny_clip: Bundle, siglip_like: Bundle, custom_causal: Bundle
) -> None:
    from zsindex.encoders.towers import detect_tower

    assert detect_tower(vitb32.model) is not None
    assert detect_tower(tiny_clip.model) is not None
    assert detect_tower(custom_causal.model) is not None
    assert detect_tower(siglip_like.model) is None  # bidirectional, last-token pooled


def test_siglip_like_runs_full_context_and_keeps_bias(siglip_like: Bundle) -> None:
    enc = encoder_for(siglip_like)
    counter = ForwardCounter(text_transformer(siglip_like.model))
    try:
        enc.encode_labels(["dog", "cat"], ["a {}"])
    finally:
        counter.close()
    assert counter.lengths and set(counter.lengths) == {24}
    assert enc.info.logit_bias == pytest.approx(-10.0)
    assert enc.info.logit_scale == pytest.approx(siglip_like.model.logit_scale.exp().item())


@pytest.mark.parametrize("fixture", ["vitb32", "tiny_clip", "custom_causal"])
def test_trimmed_forward_equals_full_context(fixture: str, request: pytest.FixtureRequest) -> None:
    import torch

    from zsindex.encoders.text_forward import encode_prompts, tokenize

    bundle: Bundle = request.getfixturevalue(fixture)
    prompts = ["a", "a photo of a dog.", LONG, "x " * 30, "cat", "the " * 12 + "end"]
    tokens, truncated = tokenize(bundle.tokenizer, prompts)
    assert truncated.tolist() == [False, False, True, False, False, False]
    counter = ForwardCounter(text_transformer(bundle.model))
    try:
        trimmed = encode_prompts(bundle.model, tokens, batch_size=2, share_prefix=False)
    finally:
        counter.close()
    # sorted by length, batched in pairs, each batch cut to its longest real sequence:
    # ("a", "cat") -> 3 tokens, ("a photo of a dog.", "the ... end") -> 15, ("x x ...", LONG) -> 77
    assert sorted(counter.lengths) == [3, 15, 77]
    with torch.no_grad():
        full = bundle.model.encode_text(torch.from_numpy(tokens), normalize=True)
    assert (trimmed - full).abs().max().item() < 1e-5


@pytest.mark.parametrize("fixture", ["vitb32", "tiny_clip", "custom_causal"])
def test_prefix_tree_forward_equals_full_context(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    import torch

    from zsindex.encoders import prefix_tree
    from zsindex.encoders.text_forward import encode_prompts, tokenize
    from zsindex.encoders.towers import detect_tower, needed_lengths

    bundle: Bundle = request.getfixturevalue(fixture)
    tower = detect_tower(bundle.model)
    assert tower is not None and tower.plain_blocks is not None
    labels = ["dog", "cat", "great white shark", "great white", "x " * 40, "a", LONG]
    prompts = [f"a photo of a {x}." for x in labels] + [f"itap of the {x}" for x in labels]
    prompts += ["", "a", "a photo", "a photo of a dog."]  # a duplicate, and prefixes of others
    tokens_np, _ = tokenize(bundle.tokenizer, prompts)
    tokens = torch.from_numpy(tokens_np)
    with torch.no_grad():
        full = bundle.model.encode_text(tokens, normalize=True)
    embedded = ForwardCounter(tower.token_embedding)
    try:
        tree = encode_prompts(bundle.model, tokens)
    finally:
        embedded.close()
    assert (tree - full).abs().max().item() < 1e-5
    # One chunk: the token embedding ran once, over the distinct prefixes only.
    lengths = needed_lengths(tokens, tower).numpy()
    built = prefix_tree.build_prefix_tree(tokens.numpy(), lengths)
    distinct = {tuple(row[:n]) for row, n in zip(tokens.numpy().tolist(), lengths, strict=True)}
    prefixes = {p[:k] for p in distinct for k in range(1, len(p) + 1)}
    assert built.size == len(prefixes) < int(lengths.sum())
    # The first block's input runs once per distinct (token, depth) pair of those prefixes.
    pairs = {(p[-1], len(p)) for p in prefixes}
    assert embedded.shapes == [(len(pairs),)] and len(pairs) < built.size
    # Small gather blocks and many chunks give the same numbers.
    original = prefix_tree.GATHER_BUDGET
    prefix_tree.GATHER_BUDGET = 1
    try:
        small = encode_prompts(bundle.model, tokens)
    finally:
        prefix_tree.GATHER_BUDGET = original
    assert (small - full).abs().max().item() < 1e-5


def test_prefix_tree_one_block_with_layer_scale_and_quick_gelu() -> None:
    """A single block is both the first (one row per (token, depth) pair) and the last (outputs
    at the pooled nodes only); LayerScale and QuickGELU go through the block's own modules."""
    import torch

    from zsindex.encoders.text_forward import encode_prompts, tokenize

    cfg = {**LAYER_SCALE_CFG, "text_cfg": {**LAYER_SCALE_CFG["text_cfg"], "layers": 1}}
    bundle = build_from_cfg(cfg, seed=4)
    prompts = [f"a photo of a {x}." for x in ("dog", "dogfish", "cat", "great white shark")]
    tokens, _ = tokenize(bundle.tokenizer, [*prompts, "a", "a photo"])
    with torch.no_grad():
        full = bundle.model.encode_text(torch.from_numpy(tokens), normalize=True)
    tree = encode_prompts(bundle.model, tokens)
    assert (tree - full).abs().max().item() < 1e-5


@pytest.mark.parametrize("fixture", ["tiny_clip", "custom_causal"])
def test_prefix_tree_under_autocast(fixture: str, request: pytest.FixtureRequest) -> None:
    """On CUDA the tower runs under fp16 autocast, where some results come back narrower than
    the buffers they go into; CPU bfloat16 autocast takes the same mixed-dtype paths here."""
    import torch

    from zsindex.encoders.prefix_tree import encode_prefix_tree
    from zsindex.encoders.text_forward import tokenize
    from zsindex.encoders.towers import detect_tower

    bundle: Bundle = request.getfixturevalue(fixture)
    tower = detect_tower(bundle.model)
    assert tower is not None
    prompts = [f"a photo of a {x}." for x in ("dog", "dogfish", "cat", "great white shark")]
    tokens = torch.from_numpy(tokenize(bundle.tokenizer, [*prompts, "a"])[0][:, :16])
    with torch.inference_mode():
        exact = encode_prefix_tree(tower, tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            narrow = encode_prefix_tree(tower, tokens)
    assert (narrow.float() - exact).abs().max().item() < 3e-2


def test_chains_cover_every_node_once() -> None:
    import numpy as np

    from zsindex.encoders.prefix_tree import build_prefix_tree, chain_groups

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 4, size=(300, 9))
    lengths = rng.integers(1, 10, size=300)
    tree = build_prefix_tree(tokens, lengths)
    covered = np.concatenate(
        [
            tree.ancestors[g.depth][g.rows][:, g.depth + 1 - g.queries :].reshape(-1)
            for g in chain_groups(tree)
        ]
    )
    assert np.array_equal(np.sort(covered), np.arange(tree.size))


def test_prefix_tree_structure() -> None:
    import numpy as np

    from zsindex.encoders.prefix_tree import build_prefix_tree, chain_groups

    tokens = np.array([[1, 5, 6, 9, 0], [1, 5, 7, 9, 0], [1, 5, 6, 9, 0], [2, 9, 0, 0, 0]])
    tree = build_prefix_tree(tokens, np.array([4, 4, 4, 2]))
    # nodes: depth 0 {1, 2}; depth 1 {1-5, 2-9}; depth 2 {1-5-6, 1-5-7}; depth 3 {..-9, ..-9}
    assert tree.level_starts == [0, 2, 4, 6, 8]
    assert tree.tokens.tolist() == [1, 2, 5, 9, 6, 7, 9, 9]
    assert tree.pooled.tolist() == [6, 7, 6, 3]  # identical prompts share their node
    assert tree.ancestors[3].tolist() == [[0, 2, 4, 6], [0, 2, 5, 7]]
    # Chains (paths of single children): 0-2 ends where 1-5 branches, 1-3 at its leaf, 4-6
    # and 5-7 at theirs; each is gathered once, as its last node's path, for all its queries.
    chains = [(g.depth, g.queries, g.rows.tolist()) for g in chain_groups(tree)]
    assert chains == [(1, 2, [0, 1]), (3, 2, [0, 1])]


def test_clip_benchmark_templates_match(tiny_clip: Bundle) -> None:
    enc = encoder_for(tiny_clip)
    braces = enc.encode_labels(LABELS, TEMPLATES).embeddings
    named = enc.encode_labels(LABELS, [t.replace("{}", "{c}") for t in TEMPLATES]).embeddings
    assert np.array_equal(braces, named)


def test_per_label_prompts(tiny_clip: Bundle) -> None:
    import torch

    enc = encoder_for(tiny_clip)
    own = ["a small dog", "a photo of a puppy", "a dog running"]
    out = enc.encode_labels(["dog", "cat"], TEMPLATES, prompts=[own, None])
    with torch.no_grad():
        e = tiny_clip.model.encode_text(tiny_clip.tokenizer(own), normalize=True).mean(dim=0)
    expected = (e / e.norm()).numpy()
    assert np.abs(out.embeddings[0] - expected).max() < 1e-5
    assert np.abs(out.embeddings[1] - reference(tiny_clip, ["cat"], TEMPLATES)[0]).max() < 1e-5


def test_dedup_keeps_template_weights(tiny_clip: Bundle) -> None:
    enc = encoder_for(tiny_clip)
    labels = ["dog", "cat", "dog", "missile", "missile"]
    templates = ["a {}", "a {}", "the {}."]  # duplicate template: counted twice, as open_clip does
    counter = text_batches(tiny_clip.model)
    try:
        out = enc.encode_labels(labels, templates)
    finally:
        counter.close()
    assert out.num_prompts == 6  # 3 distinct labels x 2 distinct prompts
    assert counter.rows == [6]  # one batch across labels and templates
    assert np.array_equal(out.embeddings[0], out.embeddings[2])
    assert np.abs(out.embeddings - reference(tiny_clip, labels, templates)).max() < 1e-5


def test_truncation_warning_count_and_strict(
    tiny_clip: Bundle, caplog: pytest.LogCaptureFixture
) -> None:
    enc = encoder_for(tiny_clip)
    labels = ["dog", LONG, "cat"]
    with caplog.at_level(logging.WARNING, logger="zsindex.encoders.text"):
        out = enc.encode_labels(labels, TEMPLATES)
    assert out.num_truncated == len(TEMPLATES)
    assert out.truncated_labels == (1,)
    assert "truncated" in caplog.text and "very very" in caplog.text
    assert np.abs(out.embeddings - reference(tiny_clip, labels, TEMPLATES)).max() < 1e-5
    with pytest.raises(InvalidInputError, match="very very"):
        enc.encode_labels(labels, TEMPLATES, strict=True)
    assert enc.encode_labels(["dog"], TEMPLATES, strict=True).num_truncated == 0


def test_cache_hit_encodes_nothing(tiny_clip: Bundle) -> None:
    enc = encoder_for(tiny_clip)
    cache = MemoryTextEmbeddingCache()
    first = enc.encode_labels(LABELS, TEMPLATES, cache=cache)
    assert first.num_encoded == len(LABELS) and len(cache) == len(LABELS)
    counter = text_batches(tiny_clip.model)
    try:
        again = enc.encode_labels(LABELS, TEMPLATES, cache=cache)
        assert counter.calls == 0
        assert again.num_cached == len(LABELS) and again.num_encoded == 0
        assert np.array_equal(again.embeddings, first.embeddings)
        # two new labels: only they are encoded (one batch of their prompts)
        more = enc.encode_labels([*LABELS, "zebra", "okapi"], TEMPLATES, cache=cache)
        assert more.num_encoded == 2 and more.num_prompts == 2 * len(TEMPLATES)
        assert counter.rows == [2 * len(TEMPLATES)]
        # other templates are another cache entry
        enc.encode_labels(LABELS[:2], ["{}"], cache=cache)
        assert counter.rows == [2 * len(TEMPLATES), 2]
    finally:
        counter.close()
    ref = reference(tiny_clip, [*LABELS, "zebra", "okapi"], TEMPLATES)
    assert np.abs(more.embeddings - ref).max() < 1e-5


def test_strict_checks_cached_labels_too(tiny_clip: Bundle) -> None:
    enc = encoder_for(tiny_clip)
    cache = MemoryTextEmbeddingCache()
    enc.encode_labels(["dog", LONG], TEMPLATES, cache=cache)
    cached = enc.encode_labels(["dog", LONG], TEMPLATES, cache=cache)
    assert cached.num_cached == 2 and not cached.truncation_complete
    checked = enc.encode_labels(["dog", LONG], TEMPLATES, cache=cache, check_cached_truncation=True)
    assert checked.num_truncated == len(TEMPLATES) and checked.truncation_complete
    with pytest.raises(InvalidInputError):
        enc.encode_labels(["dog", LONG], TEMPLATES, cache=cache, strict=True)


def test_cached_rebuild_does_not_load_the_model(tiny_dir: Path, fresh_caches: Any) -> None:
    cache = MemoryTextEmbeddingCache()
    enc = load_encoder(f"local-dir:{tiny_dir}", device="cpu")
    assert not enc.is_loaded
    first = enc.encode_labels(LABELS, TEMPLATES, cache=cache)
    assert enc.is_loaded
    fresh_caches()  # forget loaded models, as a new process would
    built = model_cache_stats()["models_built"]
    enc2 = load_encoder(f"local-dir:{tiny_dir}", device="cpu")
    again = enc2.encode_labels(LABELS, TEMPLATES, cache=cache)
    assert not enc2.is_loaded and model_cache_stats()["models_built"] == built
    assert again.num_cached == len(LABELS)
    assert np.array_equal(again.embeddings, first.embeddings)


def test_progress_and_raw_texts(tiny_clip: Bundle) -> None:
    enc = encoder_for(tiny_clip)
    seen: list[tuple[int, int]] = []
    enc.encode_labels(LABELS, TEMPLATES, progress=lambda d, t: seen.append((d, t)))
    n = len(LABELS) * len(TEMPLATES)
    assert seen and seen[-1] == (n, n)
    assert all(a <= b for (a, _), (b, _) in itertools.pairwise(seen))
    raw = enc.encode_texts(["a photo of a dog."])
    assert raw.shape == (1, 32)
    with pytest.raises(InvalidInputError):
        enc.encode_labels([], TEMPLATES)


def test_encoding_labels_never_builds_open_clips_tokenizer(
    tiny_dir: Path, fresh_caches: Any
) -> None:
    # Tokens come from the standalone tokenizer and the model encodes ids: open_clip's own
    # tokenizer (0.2-0.4 s to read its vocabulary) is built only when someone asks for it.
    before = model_cache_stats()
    enc = load_encoder(f"local-dir:{tiny_dir}", device="cpu")
    out = enc.encode_labels(LABELS, TEMPLATES)
    after = model_cache_stats()
    assert enc.is_loaded and after["models_built"] == before["models_built"] + 1
    assert after["tokenizers_built"] == before["tokenizers_built"]
    tokens = enc.tokenizer(["a photo of a dog."])  # asked for: built now
    assert model_cache_stats()["tokenizers_built"] == before["tokenizers_built"] + 1
    assert tokens.shape == (1, 77) and out.embeddings.shape[0] == len(LABELS)
