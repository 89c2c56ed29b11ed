"""The one typed interface behind :class:`zsindex.Client`.

Two implementations: :class:`zsindex.local.LocalBackend` (this process: store, encoders, the
image → prediction pipeline) and :class:`zsindex.remote.HttpBackend` (a ``zsindex serve`` over
HTTP). The CLI and the HTTP service use the local one through the same methods, so every entry
point gives one image one answer and the same exceptions (``tests/client/test_parity.py`` runs
every method against both).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Protocol, TypeAlias

import numpy as np

from zsindex.options import ClassifyOptions, LabelNames, LabelSource, OnError
from zsindex.results import ClassificationResult, LabelSetInfo, LabelTree

if TYPE_CHECKING:
    from PIL import Image

ImageInput: TypeAlias = (
    "str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image"
)
"""An image: a file path, encoded bytes, a binary file object, or a PIL image."""

EmbedInternal: TypeAlias = str
"""How imported tree nodes without a row are embedded: ``mean`` (of their descendants) or
``text`` (the model's text embedding of the node's name)."""


class Backend(Protocol):
    """What a :class:`zsindex.Client` needs from where zsindex runs."""

    def add_labelset(
        self,
        name: str,
        source: LabelSource,
        *,
        templates: Sequence[str] | str | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        strict: bool = False,
        index: str | None = None,
    ) -> LabelSetInfo:
        """Register ``name`` (a new version when its content changed)."""
        ...

    def import_labelset(
        self,
        name: str,
        embeddings: np.ndarray,
        names: LabelNames,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        embed_internal: EmbedInternal = "mean",
        index: str | None = None,
    ) -> LabelSetInfo:
        """Register precomputed label embeddings, one row per name."""
        ...

    def labelsets(self) -> list[LabelSetInfo]:
        """Every label set's current version."""
        ...

    def labelset(self, name: str) -> LabelSetInfo:
        """One label set's current version (``NAME@N``: version N)."""
        ...

    def history(self, name: str) -> list[LabelSetInfo]:
        """Every version of a label set, oldest first."""
        ...

    def delete_labelset(self, name: str) -> None:
        """Delete a label set and its versions."""
        ...

    def rollback(self, name: str, version: int) -> LabelSetInfo:
        """Publish version ``version``'s content as a new current version (history records
        it); the current version, ``unchanged``, when it already holds that content."""
        ...

    def embeddings(self, name: str) -> tuple[list[str], np.ndarray]:
        """Each node's own name and the float32 matrix, in registration order (``NAME@N``:
        version N's)."""
        ...

    def tree(self, name: str) -> LabelTree:
        """The structure of the current version, or of version N of ``NAME@N`` (parents as row
        indices, ranks)."""
        ...

    def tune_labelset(
        self,
        name: str,
        labels: Sequence[str],
        images: Sequence[ImageInput],
        *,
        alpha: float | str = "auto",
        image_names: Sequence[str] | None = None,
    ) -> LabelSetInfo:
        """A few-shot version of ``name`` from labelled example images (one label per
        image); ``alpha`` in [0, 1] or ``"auto"``."""
        ...

    def calibrate_labelset(
        self,
        name: str,
        labels: Sequence[str],
        images: Sequence[ImageInput],
        *,
        target_precision: float | None = None,
        image_names: Sequence[str] | None = None,
    ) -> LabelSetInfo:
        """A new version of ``name`` with a temperature fitted on labelled images."""
        ...

    def classify(
        self,
        labelset: str,
        *,
        images: Sequence[ImageInput] | None = None,
        embeddings: np.ndarray | None = None,
        image_names: Sequence[str] | None = None,
        options: ClassifyOptions = ClassifyOptions(),  # noqa: B008 - frozen, immutable
        on_error: OnError = "raise",
    ) -> list[ClassificationResult]:
        """Classify images or precomputed embeddings against the current version (``NAME@N``:
        exactly version N)."""
        ...

    def close(self) -> None:
        """Release connections and loaded models."""
        ...


__all__ = ["Backend", "EmbedInternal", "ImageInput"]
