"""``labels tune`` and ``calibrate`` through ``Client.local()`` on SQLite and PostgreSQL, with
``zsindex-tiny`` on a label set where zero-shot errs by construction (``adapt_cases``: labels named
after shapes, classes defined by colour)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from adapt_cases import EXTRA, LABELS, TEAMS, team_images  # tests/ is not a package
from PIL import Image

from zsindex import Client
from zsindex.demo.render import render_shape
from zsindex.errors import ImageError, InvalidInputError, NotFoundError

NAMES = list(TEAMS)


def images(label: str, n: int, seed: int) -> list[Image.Image]:
    return team_images(label, n, seed)


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Client:
    c = Client.local(database_url=db_url, device="cpu", home=tmp_path / "home")
    c.add_labelset("colors", LABELS, templates=["a {} shape."], model="zsindex-tiny")
    yield c
    c.close()


def _embed(client: Client, images: list[Image.Image]) -> np.ndarray:
    backend = client.backend
    loaded = backend.resolve("colors")  # type: ignore[attr-defined]
    emb, _ = backend._embed(loaded, images, [str(i) for i in range(len(images))])  # type: ignore[attr-defined]
    return emb


def test_tune_round_trip_blends_text_and_image_means(client: Client) -> None:
    examples = {c: images(c, 4, seed=10 + i) for i, c in enumerate(NAMES)}
    names, text = client.embeddings("colors")
    info = client.tune_labelset("colors", examples, alpha=0.6)
    assert (info.version, info.temperature) == (2, 1.0)
    tune = info.provenance["tune"]
    assert tune["source_version"] == 1 and tune["alpha"] == 0.6 and tune["alpha_mode"] == "given"
    assert tune["examples"] == {c: 4 for c in NAMES}
    assert all(len(d) == 4 and all(len(x) == 64 for x in d) for d in tune["images"].values())
    # Read back from the store by a second client: the same provenance and vectors.
    again = client.labelset("colors")
    assert again.provenance == info.provenance and again.version == 2
    _, tuned = client.embeddings("colors")
    for i, label in enumerate(names):
        if label == EXTRA:  # no examples: its text vector unchanged
            np.testing.assert_array_equal(tuned[i], text[i])
            continue
        mean = _embed(client, examples[label]).astype(np.float64).sum(axis=0)
        mean /= np.linalg.norm(mean)
        want = 0.4 * text[i] + 0.6 * mean
        np.testing.assert_allclose(tuned[i], want / np.linalg.norm(want), atol=2e-6)


def test_tuning_again_starts_from_the_text_vectors(client: Client) -> None:
    examples = {c: images(c, 2, seed=20 + i) for i, c in enumerate(NAMES)}
    first = client.tune_labelset("colors", examples, alpha=0.5)
    _, m2 = client.embeddings("colors")
    second = client.tune_labelset("colors", examples, alpha=0.5)
    _, m3 = client.embeddings("colors")
    assert second.provenance["tune"]["source_version"] == 1  # not version 2
    np.testing.assert_array_equal(m2, m3)  # never compounds
    assert second.version == first.version + 1
    history = client.history("colors")
    assert [h.provenance.get("tune", {}).get("source_version") for h in history] == [None, 1, 1]


def test_tuning_fixes_what_zero_shot_gets_wrong(client: Client) -> None:
    train = {c: images(c, 6, seed=30 + i) for i, c in enumerate(NAMES)}
    held_out = {c: images(c, 12, seed=40 + i) for i, c in enumerate(NAMES)}

    def accuracy() -> float:
        hits = [
            r.predictions[0].label == c
            for c, imgs in held_out.items()
            for r in client.classify(imgs, labelset="colors", k=1)
        ]
        return float(np.mean(hits))

    # Zero-shot reads the label names as shapes: right about one time in three (measured here).
    zero_shot = accuracy()
    info = client.tune_labelset("colors", train, alpha="auto")
    assert info.provenance["tune"]["alpha_mode"] == "auto"
    assert 0.0 < info.provenance["tune"]["alpha"] <= 1.0
    tuned = accuracy()
    assert zero_shot < 0.5 and tuned > zero_shot + 0.3, (zero_shot, tuned)


def test_calibrate_round_trip_rescales_probabilities_not_the_ranking(
    client: Client, db_url: str, tmp_path: Path
) -> None:
    calib = {c: images(c, 6, seed=50 + i) for i, c in enumerate(NAMES)}
    probe = images("cross", 3, seed=99) + images("circle", 3, seed=98)
    before = client.classify(probe, labelset="colors", k=5)
    info = client.calibrate("colors", calib, target_precision=0.8)
    fit = info.provenance["calibration"]
    assert info.version == 2 and info.temperature == fit["temperature"] != 1.0
    assert fit["n"] == 24 and fit["nll_after"] <= fit["nll_before"]
    assert "0.8" in fit["suggested_reject_below"]
    after = client.classify(probe, labelset="colors", k=5)
    assert [[p.label for p in r.predictions] for r in before] == [
        [p.label for p in r.predictions] for r in after
    ]
    # probabilities = softmax(logit_scale / T · cosine), from a fresh client reading the store
    other = Client.local(database_url=db_url, device="cpu", home=tmp_path / "home2")
    try:
        names, matrix = other.embeddings("colors")
        emb = _embed(client, probe)
        scale = other.backend.resolve("colors").model.logit_scale  # type: ignore[attr-defined]
        z = (emb @ matrix.T).astype(np.float64) * scale / info.temperature
        want = np.exp(z - z.max(axis=1, keepdims=True))
        want /= want.sum(axis=1, keepdims=True)
        got = other.classify(embeddings=emb, labelset="colors", k=5)
        for q, r in enumerate(got):
            for p in r.predictions:
                assert p.probability == pytest.approx(want[q, names.index(p.label)], abs=1e-5)
    finally:
        other.close()
    # Calibrating again fits on the model's own scale: no compounding.
    again = client.calibrate("colors", calib)
    assert again.temperature == pytest.approx(info.temperature, rel=1e-9)
    # Tuning after calibrating resets T (the vectors changed) and keeps the text source.
    tuned = client.tune_labelset("colors", calib, alpha=0.5)
    source = tuned.provenance["tune"]["source_version"]
    assert tuned.temperature == 1.0 and source == again.version
    # (a calibrated version's rows are its text version's: tuning starts from text vectors)
    np.testing.assert_array_equal(
        client.embeddings(f"colors@{source}")[1], client.embeddings("colors@1")[1]
    )
    # A rollback carries the version's temperature and provenance.
    rolled = client.rollback("colors", 2)
    assert rolled.temperature == info.temperature
    assert rolled.provenance["calibration"]["source_version"] == 1


def _versions(client: Client) -> int:
    return len(client.history("colors"))


def test_bad_examples_write_nothing(client: Client, tmp_path: Path) -> None:
    good = {c: images(c, 2, seed=60 + i) for i, c in enumerate(NAMES)}
    cases: list[tuple[dict[str, list[object]], str]] = [
        ({**good, "mauve": good["cross"]}, "name no label of 'colors': mauve"),
        ({"cross": good["cross"]}, "only one label"),
        ({"cross": [b"not an image"], "circle": good["circle"]}, "0"),
    ]
    for examples, message in cases:
        with pytest.raises((InvalidInputError, ImageError), match=message):
            client.tune_labelset("colors", examples, alpha=0.5)  # type: ignore[arg-type]
    for alpha in (-0.5, 2.0, "half"):
        with pytest.raises(InvalidInputError, match="alpha"):
            client.tune_labelset("colors", good, alpha=alpha)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="too small to fit"):
        client.calibrate("colors", {c: imgs[:1] for c, imgs in good.items()})
    with pytest.raises(NotFoundError):
        client.tune_labelset("nothing", good, alpha=0.5)
    assert _versions(client) == 1


def test_a_label_set_of_another_models_embeddings_is_refused(
    client: Client, random_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(random_model_dir, folder)
    model = f"local-dir:{folder}"
    client.add_labelset("rand", ["a", "b"], templates=["{}"], model=model)
    # The weights change after registration: the stored vectors belong to the old ones.
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "open_clip_model.safetensors"))
    torch.manual_seed(1)
    save_file(
        {
            k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
            for k, v in weights.items()
        },
        str(folder / "open_clip_model.safetensors"),
    )
    fresh = Client.local(
        database_url=client.backend.settings.database_url, device="cpu", home=tmp_path / "h3"
    )  # type: ignore[attr-defined]
    try:
        with pytest.raises(InvalidInputError, match="holds embeddings of model"):
            fresh.tune_labelset(
                "rand",
                {"a": images("circle", 1, 1), "b": images("square", 1, 2)},
                alpha=0.5,
            )
        assert len(fresh.history("rand")) == 1
    finally:
        fresh.close()


def test_tree_examples_name_nodes_or_paths(db_url: str, tmp_path: Path) -> None:
    c = Client.local(database_url=db_url, device="cpu", home=tmp_path / "home")
    try:
        c.add_labelset("shape-tree", plugin="shape-tree", model="zsindex-tiny")
        tree = c.tree("shape-tree")
        leaf_rows = tree.leaves()
        # Two leaves by their paths (leaf names repeat under different parents).
        paths = []
        for row in leaf_rows[:2]:
            chain = [row]
            while tree.parents[chain[-1]] >= 0:
                chain.append(tree.parents[chain[-1]])
            paths.append("/".join(tree.names[r] for r in reversed(chain)))
        rng = np.random.default_rng(0)
        imgs = [render_shape("circle", "red", 64, rng) for _ in range(4)]
        info = c.tune_labelset("shape-tree", {paths[0]: imgs[:2], paths[1]: imgs[2:]}, alpha=0.3)
        counts = info.provenance["tune"]["examples"]
        assert sum(counts.values()) == 4 and len(counts) == 2
        assert json.dumps(info.provenance)  # JSON-clean
        # Calibration fits flat probabilities over the leaves: an internal node is refused.
        many = [render_shape("circle", "red", 64, rng) for _ in range(12)]
        with pytest.raises(InvalidInputError, match="must be leaves"):
            c.calibrate("shape-tree", {"circle": many[:6], paths[1]: many[6:]})
        assert len(c.history("shape-tree")) == 2
    finally:
        c.close()
