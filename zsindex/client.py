"""``Client``: one API for zsindex in process and over HTTP.

``Client.local()`` works on the configured store directly; ``Client(base_url, api_key=...)``
talks to ``zsindex serve``. Both go through the one :class:`~zsindex.backend.Backend` interface,
with the same methods, the same return types and the same :mod:`zsindex.errors` classes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.backend import Backend, ImageInput
from zsindex.config import Settings
from zsindex.errors import InvalidInputError
from zsindex.options import (
    Activation,
    ClassifyOptions,
    LabelNames,
    LabelSource,
    Mode,
    OnError,
)
from zsindex.results import ClassificationResult, LabelSetInfo, LabelTree

if TYPE_CHECKING:
    import httpx


class Client:
    """Register label sets and classify images.

    Args:
        base_url: URL of a running ``zsindex serve`` (e.g. ``http://127.0.0.1:8000``).
        api_key: key sent as ``Authorization: Bearer`` (needed for writes).
        timeout: seconds per HTTP request.
        http: an ``httpx.Client`` to send requests with (its own base URL, transport, proxies
            and timeouts are used as they are; ``api_key`` is still added to each request).
        transport: an ``httpx`` transport for a client built here (e.g. ``httpx.MockTransport``
            or ``httpx.HTTPTransport(retries=3)``).

    Use :meth:`local` for the in-process client.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        from zsindex.remote import HttpBackend

        self._backend: Backend = HttpBackend(
            base_url, api_key=api_key, timeout=timeout, http=http, transport=transport
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
        return cls.from_backend(LocalBackend(base))

    @classmethod
    def from_backend(cls, backend: Backend) -> Client:
        """A client over any :class:`~zsindex.backend.Backend` (e.g. a configured
        ``LocalBackend``)."""
        client = cls.__new__(cls)
        client._backend = backend
        return client

    @property
    def backend(self) -> Backend:
        """The backend this client talks to."""
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
        index: str | None = None,
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
            index: the search index this version asks for (``exact``, ``ivf1024``,
                ``hnsw32,fp16``, …); default: the serving process's ``ZSINDEX_INDEX``.
        """
        source = LabelSource(
            labels=labels,
            parents=parents,
            plugin=plugin,
            content=content,
            format=format,
            allow_duplicates=allow_duplicates,
        ).check()
        return self._backend.add_labelset(
            name,
            source,
            templates=templates,
            model=model,
            pretrained=pretrained,
            strict=strict,
            index=index,
        )

    def import_labelset(
        self,
        name: str,
        embeddings: np.ndarray,
        names: Sequence[str],
        *,
        parents: Sequence[str | int | None] | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        index: str | None = None,
    ) -> LabelSetInfo:
        """Register precomputed label embeddings (``[N, dim]`` or ``[dim, N]``).

        Args:
            names: one name per row.
            parents: per row, the parent's name or row index (``None`` for a root): a tree.
            index: the search index this version asks for (as in :meth:`add_labelset`).
        """
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise InvalidInputError("names must be a list of strings, one per embedding row")
        label_names = LabelNames(
            names=list(names), parents=list(parents) if parents is not None else None
        ).check()
        return self._backend.import_labelset(
            name, embeddings, label_names, model=model, pretrained=pretrained, index=index
        )

    def labelsets(self) -> list[LabelSetInfo]:
        """Every label set's current version."""
        return self._backend.labelsets()

    def labelset(self, name: str) -> LabelSetInfo:
        """One label set's current version, or version N for ``"NAME@N"`` (raises
        NotFoundError)."""
        return self._backend.labelset(name)

    def history(self, name: str) -> list[LabelSetInfo]:
        """All versions of a label set, oldest first."""
        return self._backend.history(name)

    def delete_labelset(self, name: str) -> None:
        """Delete a label set and all its versions."""
        self._backend.delete_labelset(name)

    def rollback(self, name: str, version: int) -> LabelSetInfo:
        """Serve version ``version``'s content again: published atomically as a new current
        version (its ``rollback_of`` is ``version``), so history records it and version
        numbers never go backwards. Nothing new is stored (``unchanged``) when the current
        version already holds that content."""
        from zsindex.labels.refs import check_version_number

        return self._backend.rollback(name, check_version_number(version))

    def embeddings(self, name: str) -> tuple[list[str], np.ndarray]:
        """(names, float32 matrix ``[num_labels, dim]``) in registration order; for trees every
        node, internal ones included, each with its own name (see :meth:`tree`)."""
        return self._backend.embeddings(name)

    def tree(self, name: str) -> LabelTree:
        """The label set's structure, row for row with :meth:`embeddings`: parents as row
        indices (``-1`` for roots), depths and ranks."""
        return self._backend.tree(name)

    # -- adaptation ---------------------------------------------------------------------------

    def tune_labelset(
        self,
        name: str,
        examples: Mapping[str, Sequence[ImageInput]],
        *,
        alpha: float | str = "auto",
    ) -> LabelSetInfo:
        """Few-shot: a new version of ``name`` whose vectors blend each label's text embedding
        with the mean embedding of its example images, ``normalise((1 − alpha)·text + alpha·
        image mean)``; labels without examples keep their text vector. It always starts from
        the text version (tuning again never compounds); its provenance (source version,
        alpha, example counts, image digests) is in :attr:`LabelSetInfo.provenance`.

        Args:
            examples: label (a name; for a tree a node name or an ``a/b/c`` path) → images.
            alpha: the blend in [0, 1], or ``"auto"``: chosen by leave-one-out on the examples.
        """
        labels, images = _flatten_examples(examples)
        return self._backend.tune_labelset(name, labels, images, alpha=alpha)

    def calibrate(
        self,
        name: str,
        examples: Mapping[str, Sequence[ImageInput]],
        *,
        target_precision: float | None = None,
    ) -> LabelSetInfo:
        """Fit a temperature T on labelled images (minimum NLL) and store it in a new version:
        probabilities become softmax(logit_scale / T · cosine), the ranking is unchanged. The
        fit (T, NLL and ECE before and after, a ``reject_below`` suggested per target
        precision, ``target_precision`` included) is ``provenance["calibration"]``.

        Args:
            examples: leaf label → images (at least 10 images in at least 2 labels).
        """
        labels, images = _flatten_examples(examples)
        return self._backend.calibrate_labelset(
            name, labels, images, target_precision=target_precision
        )

    # -- classification -----------------------------------------------------------------------

    def classify(
        self,
        images: Sequence[ImageInput] | ImageInput | None = None,
        *,
        labelset: str,
        embeddings: np.ndarray | None = None,
        k: int = 5,
        mode: Mode = "flat",
        rank: str | int | None = None,
        beam: int | None = None,
        within: str | None = None,
        min_confidence: float | None = None,
        activation: Activation = "softmax",
        fast_decode: bool | None = None,
        reject_below: float | None = None,
        options: ClassifyOptions | None = None,
        on_error: OnError = "raise",
    ) -> list[ClassificationResult]:
        """Classify images (paths, bytes, binary files, PIL images or ``data:image/...;base64,``
        URLs) or precomputed L2-normalised image embeddings against the current version of
        ``labelset``, or exactly version N for ``labelset="NAME@N"``. One image given alone
        (not in a list) is classified as a list of one.

        Args:
            k: predictions per image.
            mode: ``flat`` (leaves of a tree), ``beam``, ``marginal`` or ``chils``.
            rank: named rank or depth to stop at (tree modes).
            beam: nodes kept per level in ``beam`` mode.
            within: restrict to the subtree of this node (trees, any mode).
            min_confidence: in hierarchical modes, stop at the deepest node with at least this
                probability.
            activation: ``softmax`` (single label) or ``sigmoid`` (multi-label, SigLIP-style;
                flat mode). An option where it does not apply is an error
                (:data:`zsindex.options.OPTION_RULES`).
            fast_decode: JPEG draft-mode decoding (faster, not bit-exact); ``None``: the
                ``ZSINDEX_FAST_DECODE`` setting.
            reject_below: "none of these": a result whose top probability is below this is
                marked ``rejected`` (its predictions stay listed).
            options: all of the above as one object (then the keyword options are ignored).
            on_error: ``raise`` the first image error, or ``report`` it in that image's result
                (``result.error``) and go on.
        """
        if (images is None) == (embeddings is None):
            raise InvalidInputError("give either images or embeddings, not both or neither")
        image_list = _image_list(images) if images is not None else None
        if embeddings is not None and _no_rows(embeddings):
            raise InvalidInputError("no embeddings given: pass a matrix [n, dim] with n >= 1")
        if options is None:
            options = ClassifyOptions(
                k=k,
                mode=mode,
                rank=rank,
                beam=beam,
                within=within,
                min_confidence=min_confidence,
                activation=activation,
                fast_decode=fast_decode,
                reject_below=reject_below,
            )
        options = options.check()
        if on_error not in ("raise", "report"):
            raise InvalidInputError(f"on_error must be 'raise' or 'report', got {on_error!r}")
        return self._backend.classify(
            labelset,
            images=image_list,
            embeddings=embeddings,
            options=options,
            on_error=on_error,
        )

    def close(self) -> None:
        """Release the backend's connections and loaded models."""
        self._backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flatten_examples(
    examples: Mapping[str, Sequence[ImageInput]],
) -> tuple[list[str], list[ImageInput]]:
    """(one label per image, the images) from ``{label: images}``."""
    if not isinstance(examples, Mapping):
        raise InvalidInputError("examples must map each label to a list of its images")
    labels: list[str] = []
    images: list[ImageInput] = []
    for label, items in examples.items():
        if not isinstance(label, str) or not label:
            raise InvalidInputError(f"example labels must be non-empty strings, got {label!r}")
        group = _image_list(items)
        labels.extend([label] * len(group))
        images.extend(group)
    if not images:
        raise InvalidInputError("no example images given")
    return labels, images


def _is_one_image(value: Any) -> bool:
    """Whether ``images`` is one image rather than a list of them (a ``str`` is a path or a
    data URL, never a sequence of one-character paths)."""
    if isinstance(value, str | os.PathLike | bytes | bytearray | memoryview):
        return True
    if callable(getattr(value, "read", None)):
        return True
    pil = sys.modules.get("PIL.Image")  # a PIL image exists only once PIL was imported
    return pil is not None and isinstance(value, pil.Image)


def _no_rows(embeddings: Any) -> bool:
    try:
        return bool(np.asarray(embeddings).size == 0)
    except (ValueError, TypeError):  # ragged rows: the backends' own checks name the problem
        return False


def _image_list(images: Any) -> list[Any]:
    if _is_one_image(images):
        return [images]
    if not (isinstance(images, Sequence) or hasattr(images, "__iter__")):
        raise InvalidInputError(
            "images must be an image or a list of them (paths, bytes, files or PIL images), "
            f"not {type(images).__name__}"
        )
    items = list(images)
    if not items:
        raise InvalidInputError(
            "no images given: pass one image or a list of one or more (paths, bytes, files or "
            "PIL images)"
        )
    return items


__all__ = ["Client"]
