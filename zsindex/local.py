"""``LocalBackend``: zsindex in this process, behind the one :class:`~zsindex.backend.Backend`.

It only wires parts with one job each: the :class:`~zsindex.catalog.catalog.Catalog` (label-set
versions in the store), the :class:`~zsindex.classify.classifier.Classifier` (which version each
label set serves, hot-swapped), the :class:`~zsindex.encoders.pool.EncoderPool` (one encoder per
model) and the :class:`~zsindex.classify.pipeline.ImagePipeline` (images → predictions).
``Client.local()``, the CLI and the HTTP service all use it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.backend import EmbedInternal, ImageInput
from zsindex.config import Settings, validate_device
from zsindex.errors import InvalidInputError
from zsindex.options import ClassifyOptions, LabelNames, LabelSource, OnError
from zsindex.results import ClassificationResult, LabelSetInfo, LabelTree

if TYPE_CHECKING:
    from zsindex.catalog.catalog import Catalog
    from zsindex.catalog.registration import Progress
    from zsindex.classify.classifier import Classifier, SyncReport
    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.classify.pipeline import ImagePipeline
    from zsindex.encoders.pool import EncoderPool
    from zsindex.store.repository import Store


class LocalBackend:
    """zsindex in this process.

    Args:
        settings: where the store is, which model, device and index to use by default.
        text_worker: label sets are embedded with the text tower loading in a helper process
            while labels are parsed (a one-shot command: the CLI).
        progress: called with (done, total) while labels are embedded.
        encoders: the encoder pool to use (default: a new one for ``settings.device``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        text_worker: bool = False,
        progress: Progress | None = None,
        encoders: EncoderPool | None = None,
    ) -> None:
        from zsindex.catalog.catalog import Catalog
        from zsindex.classify.classifier import Classifier
        from zsindex.encoders.pool import EncoderPool
        from zsindex.store.rows import version_key

        validate_device(settings.device)
        self.settings = settings
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self.encoders: EncoderPool = encoders or EncoderPool(
            settings.device, network=settings.network
        )
        self.catalog: Catalog = Catalog(
            lambda: self.store,
            self.encoders,
            settings,
            text_worker=text_worker,
            progress=progress,
        )
        self.classifier: Classifier = Classifier(
            self.catalog.load,
            lambda: dict(self.store.current_version_keys()),
            lambda loaded: version_key(loaded.record),
            load_version=self.catalog.load_version,
            version_keys=lambda names: self.store.version_keys(names),
        )

    @cached_property
    def pipeline(self) -> ImagePipeline:
        """Images → predictions (built on first use: commands that classify nothing never
        import the image stack)."""
        from zsindex.classify.pipeline import ImagePipeline

        return ImagePipeline(
            self.encoders,
            fast_decode=self.settings.fast_decode,
            beam_tolerance=self.settings.beam_tolerance,
        )

    @property
    def store(self) -> Store:
        """The store, opened on first use; reading never creates one (see :meth:`open_store`)."""
        return self.open_store(create=False)

    def open_store(self, *, create: bool) -> Store:
        """Open the store once. Only with ``create`` (a write, or a server that will take
        writes) may a missing SQLite file (and its folder) be created; without it that is a
        :class:`~zsindex.errors.NotFoundError` naming the path. An existing database without
        zsindex's tables gets them either way (nothing new appears on disk).
        """
        with self._store_lock:
            if self._store is None:
                from zsindex.store.engine import require_existing_sqlite
                from zsindex.store.repository import Store

                url = self.settings.resolved_database_url
                if not create:
                    require_existing_sqlite(url)
                self._store = Store(url)
            return self._store

    def close(self) -> None:
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
        self.classifier.clear()

    # -- label sets (Backend) -------------------------------------------------------------------

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
        from zsindex.catalog.convert import version_info

        self.open_store(create=True)  # a write may create the store
        record = self.catalog.add(
            name,
            source,
            templates=templates,
            model=model,
            pretrained=pretrained,
            strict=strict,
            index=index,
        )
        self.classifier.forget(name)
        return version_info(record)

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
        from zsindex.catalog.convert import version_info

        self.open_store(create=True)  # a write may create the store
        record = self.catalog.import_(
            name,
            embeddings,
            names,
            model=model,
            pretrained=pretrained,
            embed_internal=embed_internal,
            index=index,
        )
        self.classifier.forget(name)
        return version_info(record)

    def labelsets(self) -> list[LabelSetInfo]:
        from zsindex.catalog.convert import version_info

        return [version_info(v) for v in self.catalog.list_current()]

    def labelset(self, name: str) -> LabelSetInfo:
        from zsindex.catalog.convert import version_info

        return version_info(self.catalog.version_of(name))

    def history(self, name: str) -> list[LabelSetInfo]:
        from zsindex.catalog.convert import version_info

        return [version_info(v) for v in self.catalog.history(name)]

    def delete_labelset(self, name: str) -> None:
        self.catalog.delete(name)
        self.classifier.forget(name)
        self.classifier.unpin(name)

    def rollback(self, name: str, version: int) -> LabelSetInfo:
        from zsindex.catalog.convert import version_info

        record = self.catalog.rollback(name, version)
        self.classifier.forget(name)
        return version_info(record)

    def embeddings(self, name: str) -> tuple[list[str], np.ndarray]:
        return self.catalog.embeddings(name)

    def tree(self, name: str) -> LabelTree:
        return self.catalog.tree(name)

    # -- adaptation (Backend) -------------------------------------------------------------------

    def tune_labelset(
        self,
        name: str,
        labels: Sequence[str],
        images: Sequence[ImageInput],
        *,
        alpha: float | str = "auto",
        image_names: Sequence[str] | None = None,
    ) -> LabelSetInfo:
        """A few-shot version of ``name``: example ``images`` with their ``labels``, blended
        into the text vectors by ``alpha`` (see :mod:`zsindex.catalog.adapt`)."""
        from zsindex.catalog.adapt import resolve_labels, text_base, write_tuned
        from zsindex.catalog.convert import version_info
        from zsindex.catalog.tuning import check_alpha

        alpha = check_alpha(alpha)
        sources, names = self._examples(name, labels, images, image_names)
        base = text_base(self.store, self.catalog.current(name))
        base_loaded = self.catalog.load_version(name, base.version)
        rows = resolve_labels(base_loaded, labels)  # every label checked before any image
        embedded, digests = self._embed(base_loaded, sources, names)
        record = write_tuned(self.store, base_loaded, rows, embedded, digests, alpha)
        self.classifier.forget(name)
        return version_info(record)

    def calibrate_labelset(
        self,
        name: str,
        labels: Sequence[str],
        images: Sequence[ImageInput],
        *,
        target_precision: float | None = None,
        image_names: Sequence[str] | None = None,
    ) -> LabelSetInfo:
        """A new version of ``name`` with a temperature fitted on labelled ``images`` (see
        :mod:`zsindex.catalog.calibration`)."""
        from zsindex.catalog.adapt import resolve_labels, write_calibrated
        from zsindex.catalog.convert import version_info

        if target_precision is not None and not (
            isinstance(target_precision, int | float) and 0.0 < float(target_precision) <= 1.0
        ):
            raise InvalidInputError(
                f"target_precision must be within (0, 1], got {target_precision!r}"
            )
        sources, names = self._examples(name, labels, images, image_names)
        record = self.catalog.current(name)
        loaded = self.catalog.load_version(name, record.version)
        rows = resolve_labels(loaded, labels)
        embedded, digests = self._embed(loaded, sources, names)
        written = write_calibrated(self.store, loaded, rows, embedded, digests, target_precision)
        self.classifier.forget(name)
        return version_info(written)

    def _examples(
        self,
        name: str,
        labels: Sequence[str],
        images: Sequence[ImageInput],
        image_names: Sequence[str] | None,
    ) -> tuple[list[Any], list[str]]:
        from zsindex.classify.pipeline import as_image_source, given_names, image_name
        from zsindex.labels.refs import parse_ref

        if parse_ref(name)[1] is not None:
            raise InvalidInputError(
                f"{name!r}: tune and calibrate write a new version of the current one; give "
                "the label set's name without @N"
            )
        if len(labels) != len(images):
            raise InvalidInputError(f"{len(labels)} labels for {len(images)} example images")
        if not images:
            raise InvalidInputError("no example images given")
        if any(not isinstance(label, str) or not label for label in labels):
            raise InvalidInputError("each example's label must be a non-empty string")
        sources = [as_image_source(x, i) for i, x in enumerate(images)]
        names = given_names(image_names, len(sources)) or [
            image_name(x, i) for i, x in enumerate(images)
        ]
        return sources, names

    def _embed(
        self, loaded: LoadedLabelSet, sources: list[Any], names: list[str]
    ) -> tuple[np.ndarray, list[str]]:
        from zsindex.classify.examples import embed_examples

        return embed_examples(self.pipeline, loaded, sources, names)

    # -- classification (Backend) ---------------------------------------------------------------

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
        """Classify images (paths, bytes, binary files, PIL) or precomputed embeddings."""
        from zsindex.classify.pipeline import as_image_source, given_names, image_name

        options = self.pipeline.options(options)  # bad options fail before any work
        if (images is None) == (embeddings is None):
            raise InvalidInputError("give either images or embeddings, not both or neither")
        if images is not None:
            sources = [as_image_source(x, i) for i, x in enumerate(images)]
            if not sources:
                raise InvalidInputError("no images to classify")
            names = given_names(image_names, len(sources)) or [
                image_name(x, i) for i, x in enumerate(images)
            ]
            loaded = self.resolve(labelset)
            return self.pipeline.run(loaded, sources, names, options, on_error=on_error)
        if embeddings is None:  # pragma: no cover - excluded by the check above
            raise InvalidInputError("give either images or embeddings")
        count = len(np.atleast_2d(np.asarray(embeddings)))
        names = given_names(image_names, count) or [str(i) for i in range(count)]
        return self.pipeline.score(self.resolve(labelset), embeddings, names, options)

    # -- serving --------------------------------------------------------------------------------

    def resolve(self, labelset: str) -> LoadedLabelSet:
        """The loaded current version of ``labelset``, or version N of ``NAME@N`` (one
        immutable version per request)."""
        return self.classifier.resolve(labelset)

    def refresh(self) -> list[str]:
        """Bring loaded label sets to their current versions in the store (hot swap, warm)."""
        return self.classifier.refresh()

    def sync(self, names: Iterable[str] | None = None, *, preload: bool = False) -> SyncReport:
        """Converge to the store (see :meth:`Classifier.sync`); with ``preload``, also load the
        label sets ``settings.serving.preload`` names (all by default) that are not loaded."""
        eager = self.settings.serving.preloads if preload else None
        return self.classifier.sync(names, eager=eager)

    def ready(self) -> dict[str, Any]:
        """Store reachable; which label sets are loaded, at which version, on which index."""
        ids = self.store.current_version_ids()
        loaded = {
            name: {
                "version": ls.version,
                "index": ls.index_backend,
                "device": ls.index_device,
                "exact": ls.index_exact,
            }
            for name, ls in self.classifier.loaded().items()
        }
        return {"store": "ok", "labelsets": len(ids), "loaded": loaded}
