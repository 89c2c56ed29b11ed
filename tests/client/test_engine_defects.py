"""Defects found while building the one engine, each pinned by a test that failed before."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsindex import Client
from zsindex.config import Settings
from zsindex.encoders.pool import EncoderPool
from zsindex.errors import InvalidInputError
from zsindex.local import LocalBackend


@pytest.fixture
def settings(zs_home: Path) -> Settings:
    return Settings(home=zs_home, device="cpu", model="zsindex-tiny", pretrained=None)


def test_a_new_model_resolving_does_not_stall_classification(
    settings: Settings, random_model: str
) -> None:
    """Registering with a model that is still resolving (hashing its weights, downloading)
    used to hold the back end's lock, so every classify request waited for it."""
    from zsindex.encoders import load_encoder

    release = threading.Event()
    resolving = threading.Event()

    def slow_for_random(model: str, pretrained: str | None, device: str):  # type: ignore[no-untyped-def]
        if model == random_model:
            resolving.set()
            assert release.wait(30), "the test never released the resolver"
        return load_encoder(model, pretrained, device)

    backend = LocalBackend(settings, encoders=EncoderPool("cpu", resolver=slow_for_random))
    client = Client.from_backend(backend)
    try:
        client.add_labelset("first", ["red", "green", "blue"], model="zsindex-tiny")
        writer = threading.Thread(
            target=client.add_labelset, args=("second", ["a", "b"]), kwargs={"model": random_model}
        )
        writer.start()
        assert resolving.wait(30)
        done: list[object] = []
        reader = threading.Thread(
            target=lambda: done.append(
                client.classify([Image.new("RGB", (40, 40), (250, 0, 0))], labelset="first")
            )
        )
        reader.start()
        reader.join(20)
        finished_while_resolving = not reader.is_alive()
        release.set()
        writer.join(60)
        reader.join(20)
        assert finished_while_resolving, "classify waited for another model's resolution"
        assert done and done[0][0].predictions[0].label == "red"  # type: ignore[index]
        assert client.labelset("second").num_labels == 2
    finally:
        release.set()
        client.close()


def test_escaped_braces_around_a_placeholder_name_encode(settings: Settings) -> None:
    """``"a photo of a {} {{c}}."`` passed validation, then failed while encoding (a textual
    "{c}" test took the escaped literal for a placeholder)."""
    with Client.local(settings=settings) as client:
        info = client.add_labelset(
            "braces", ["red", "blue"], templates=["a photo of a {} {{c}}."], model="zsindex-tiny"
        )
        assert info.templates == ["a photo of a {} {{c}}."]
        [result] = client.classify(embeddings=client.embeddings("braces")[1][:1], labelset="braces")
        assert result.predictions[0].label == "red"


@pytest.mark.parametrize("device", ["mps", "gpu", "cuda:x", ""])
def test_client_local_checks_the_device_as_the_environment_does(
    settings: Settings, device: str
) -> None:
    """``Client.local(device="mps")`` skipped the check that ``ZSINDEX_DEVICE`` gets."""
    with pytest.raises(InvalidInputError, match="auto, cpu, cuda or cuda:N"):
        Client.local(settings=settings, device=device or " ")


def test_float64_embeddings_import_as_float32(settings: Settings) -> None:
    """``labels import`` accepted float64 while its message said fp16/fp32: float64 is taken
    (stored as float32) and the message names all three."""
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((3, 128))
    with Client.local(settings=settings) as client:
        client.import_labelset("f64", matrix, ["a", "b", "c"], model="zsindex-tiny")
        _, stored = client.embeddings("f64")
        assert stored.dtype == np.float32
        expected = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        np.testing.assert_allclose(stored, expected, atol=1e-6)
        with pytest.raises(InvalidInputError, match="float16, float32 or float64"):
            client.import_labelset("ints", matrix.astype(np.int32), ["a", "b", "c"])


@pytest.mark.parametrize("bad", [None, 3, 2.5, {"path": "x.png"}])
def test_images_other_than_paths_bytes_files_or_pil_are_refused(
    settings: Settings, bad: object
) -> None:
    """An ``int`` was taken for a file descriptor (and closed); ``None`` was a TypeError."""
    with Client.local(settings=settings) as client:
        client.add_labelset("c", ["red", "blue"], model="zsindex-tiny")
        with pytest.raises(InvalidInputError, match=r"images\[0\] must be a path, bytes"):
            client.classify([bad], labelset="c")  # type: ignore[list-item]
        assert client.labelsets()[0].name == "c"  # the store is still usable


def test_binary_file_objects_classify_like_their_bytes(settings: Settings, tmp_path: Path) -> None:
    import io

    path = tmp_path / "red.png"
    Image.new("RGB", (50, 30), (240, 10, 10)).save(path)
    with Client.local(settings=settings) as client:
        client.add_labelset("c", ["red", "blue"], model="zsindex-tiny")
        [from_file] = client.classify([io.BytesIO(path.read_bytes())], labelset="c")
        [from_path] = client.classify([path], labelset="c")
        assert from_file.predictions == from_path.predictions
