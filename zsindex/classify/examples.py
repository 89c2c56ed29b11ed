"""Labelled example images → unit embeddings and content digests (``labels tune``,
``calibrate``), through the one image pipeline (same decoding and preprocessing as classify).

Every image is checked (format, pixel count) before the model loads, so a bad file fails
fast with its name and nothing is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zsindex.errors import ImageError, InvalidInputError

if TYPE_CHECKING:
    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.classify.pipeline import ImagePipeline
    from zsindex.encoders.images import ImageSource

BATCH = 32


def image_digest(source: ImageSource, name: str) -> str:
    """SHA-256 of an image's file bytes (a PIL image: of its mode, size and pixels)."""
    if isinstance(source, str | Path):
        try:
            return hashlib.sha256(Path(source).read_bytes()).hexdigest()
        except OSError as exc:
            raise ImageError(f"{name}: cannot read the file ({exc.strerror or exc})") from None
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(bytes(source)).hexdigest()
    digest = hashlib.sha256(f"{source.mode}:{source.size}:".encode())
    digest.update(source.tobytes())
    return digest.hexdigest()


def check_model(loaded: LoadedLabelSet, weights_sha256: str, dim: int) -> None:
    """Refuse examples encoded by another model than the one the label set's vectors belong
    to (their embeddings would live in another space)."""
    model = loaded.model
    if weights_sha256 != model.weights_sha256 or dim != loaded.record.dim:
        raise InvalidInputError(
            f"label set {loaded.name!r} holds embeddings of model {model.name!r} (weights "
            f"{model.weights_sha256[:12]}, dim {loaded.record.dim}) but its images would be "
            f"encoded by weights {weights_sha256[:12]} (dim {dim}); register it again with the "
            "model you have"
        )


def embed_examples(
    pipeline: ImagePipeline,
    loaded: LoadedLabelSet,
    sources: Sequence[ImageSource],
    names: Sequence[str],
) -> tuple[np.ndarray, list[str]]:
    """(unit embeddings [n, dim] by ``loaded``'s own model, SHA-256 of each image).

    Raises:
        ImageError: an image cannot be read (the message names it).
        InvalidInputError: no images, or the model is not the one ``loaded``'s vectors belong
            to.
    """
    if not sources:
        raise InvalidInputError("no example images given")
    for source, name in zip(sources, names, strict=True):
        pipeline.check(source, name)
    digests = [image_digest(s, n) for s, n in zip(sources, names, strict=True)]
    encoder = pipeline.encoder(loaded)
    info = encoder.info
    check_model(loaded, info.weights_sha256, info.dim)
    encoder.load()
    parts = []
    for start in range(0, len(sources), BATCH):
        chunk = range(start, min(start + BATCH, len(sources)))
        inputs = [pipeline.prepare(loaded, sources[i], names[i], fast_decode=False) for i in chunk]
        parts.append(pipeline.encode(loaded, inputs))
    return np.concatenate(parts).astype(np.float32), digests
