"""``Client``: one API for zsindex in process and over HTTP.

``Client.local()`` works on the configured store directly; ``Client(base_url, api_key=...)``
talks to ``zsindex serve``. Both expose the same methods with the same return types, and errors
arrive as the same :mod:`zsindex.errors` classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from zsindex.config import Settings
from zsindex.results import ClassificationResult, LabelSetInfo

if TYPE_CHECKING:
    pass

ImageInput = "str | Path | bytes | Image.Image"


class Backend(Protocol):
    """What a client needs from its transport (in-process engine or HTTP)."""

    def add_labelset(self, name: str, **options: Any) -> LabelSetInfo: ...
    def import_labelset(self, name: str, **options: Any) -> LabelSetInfo: ...
    def labelsets(self) -> list[LabelSetInfo]: ...
    def labelset(self, name: str) -> LabelSetInfo: ...
    def history(self, name: str) -> list[LabelSetInfo]: ...
    def delete_labelset(self, name: str) -> None: ...
    def embeddings(self, name: str) -> tuple[list[Any], np.ndarray]: ...
    def classify(self, **options: Any) -> list[ClassificationResult]: ...
    def close(self) -> None: ...


class Client:
    """Register label sets and classify images.

    Args:
        base_url: URL of a running ``zsindex serve`` (e.g. ``http://127.0.0.1:8000``).
        api_key: key sent as ``Authorization: Bearer`` (needed for writes).
        timeout: seconds per HTTP request.

    Use :meth:`local` for the in-process client.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0):
        from zsindex.remote import HttpBackend

        self._backend: Backend = cast(
            Backend, HttpBackend(base_url, api_key=api_key, timeout=timeout)
        )

    @classmethod
    def local(
        cls,
        database_url: str | None = None,
        device: str | None = None,
        *,
        home: str | Path | None = None,
        settings: Settings | None = None,
    ) -> Client:
        """An in-process client; with no arguments it reads the ``ZSINDEX_*`` environment."""
        from zsindex.local import LocalBackend

        base = settings or Settings.from_env()
        base = base.with_overrides(
            database_url=database_url, device=device, home=Path(home) if home else None
        )
        client = cls.__new__(cls)
        client._backend = cast(Backend, LocalBackend(base))
        return client

    @property
    def backend(self) -> Backend:
        return self._backend

    # -- label sets ---------------------------------------------------------------------------

    def add_labelset(
        self,
        name: str,
        labels: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        *,
        templates: Sequence[str] | str | None = None,
        parents: Mapping[str, str] | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        plugin: str | None = None,
        content: str | None = None,
        format: str | None = None,
        allow_duplicates: bool = False,
        strict: bool = False,
    ) -> LabelSetInfo:
        """Register (or re-register as a new version) label set ``name``.

        Give exactly one source: ``labels`` (a list of names, or a ``{label: [prompts]}`` dict),
        optionally with ``parents`` (child → parent) for a tree; ``plugin`` (a plugin name); or
        ``content`` with ``format`` (a label file's text).

        Args:
            templates: template strings with ``{}``/``{c}``, or a named set (``simple-7``,
                ``openai-imagenet-80``, ``photo``); default: the plugin's own, else ``simple-7``.
            model, pretrained: encoder (default: the configured model).
            allow_duplicates: keep duplicate names (labels are identified by position).
            strict: prompts longer than the model's context are an error, not a warning.
        """
        return self._backend.add_labelset(
            name,
            labels=labels,
            templates=templates,
            parents=parents,
            model=model,
            pretrained=pretrained,
            plugin=plugin,
            content=content,
            format=format,
            allow_duplicates=allow_duplicates,
            strict=strict,
        )

    def import_labelset(
        self,
        name: str,
        embeddings: np.ndarray,
        names: Sequence[str],
        *,
        parents: Sequence[str | None] | None = None,
        model: str | None = None,
        pretrained: str | None = None,
    ) -> LabelSetInfo:
        """Register precomputed label embeddings (``[N, dim]`` or ``[dim, N]``)."""
        return self._backend.import_labelset(
            name,
            embeddings=embeddings,
            names=list(names),
            parents=list(parents) if parents is not None else None,
            model=model,
            pretrained=pretrained,
        )

    def labelsets(self) -> list[LabelSetInfo]:
        """Every label set's current version."""
        return self._backend.labelsets()

    def labelset(self, name: str) -> LabelSetInfo:
        """One label set's current version (raises NotFoundError)."""
        return self._backend.labelset(name)

    def history(self, name: str) -> list[LabelSetInfo]:
        """All versions of a label set, oldest first."""
        return self._backend.history(name)

    def delete_labelset(self, name: str) -> None:
        """Delete a label set and all its versions."""
        self._backend.delete_labelset(name)

    def embeddings(self, name: str) -> tuple[list[Any], np.ndarray]:
        """(names, float32 matrix ``[num_labels, dim]``) in registration order; for trees every
        node, with each node's own name."""
        return self._backend.embeddings(name)

    # -- classification -----------------------------------------------------------------------

    def classify(
        self,
        images: Sequence[Any] | None = None,
        *,
        labelset: str,
        embeddings: np.ndarray | None = None,
        k: int = 5,
        mode: str = "flat",
        rank: str | int | None = None,
        beam: int | None = None,
        within: str | None = None,
        min_confidence: float | None = None,
        activation: str = "softmax",
    ) -> list[ClassificationResult]:
        """Classify images (paths, bytes or PIL images) or precomputed L2-normalised image
        embeddings against the current version of ``labelset``.

        Args:
            k: predictions per image.
            mode: ``flat`` (leaves of a tree), ``beam``, ``marginal`` or ``chils``.
            rank: named rank or depth to stop at (trees).
            beam: nodes kept per level in ``beam`` mode.
            within: restrict to the subtree of this node.
            min_confidence: in hierarchical modes, stop at the deepest node with at least this
                probability.
            activation: ``softmax`` (single label) or ``sigmoid`` (multi-label, SigLIP-style).
        """
        if (images is None) == (embeddings is None):
            from zsindex.errors import InvalidInputError

            raise InvalidInputError("give either images or embeddings, not both or neither")
        return self._backend.classify(
            images=list(images) if images is not None else None,
            embeddings=embeddings,
            labelset=labelset,
            k=k,
            mode=mode,
            rank=rank,
            beam=beam,
            within=within,
            min_confidence=min_confidence,
            activation=activation,
        )

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
