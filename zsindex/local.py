"""The in-process backend of :class:`zsindex.Client`: store, encoders and loaded label sets.

One ``LocalBackend`` serves the CLI, ``Client.local()`` and the HTTP service. Loaded label sets
are cached and swapped atomically when a new version becomes current (:meth:`refresh`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.config import Settings
from zsindex.errors import InvalidInputError
from zsindex.results import ClassificationResult, LabelSetInfo

if TYPE_CHECKING:
    from PIL import Image

    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.encoders import Encoder
    from zsindex.encoders.text_worker import TextWorker
    from zsindex.labels.spec import LabelSetSpec
    from zsindex.store.repository import Store

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE_SET = "simple-7"


class LocalBackend:
    """zsindex in this process.

    Args:
        settings: where the store is, which model and device to use by default.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None
        self._encoders: dict[tuple[str, str | None], Encoder] = {}
        self._loaded: dict[str, LoadedLabelSet] = {}
        self._lock = threading.RLock()
        self._load_locks: dict[str, threading.Lock] = {}

    # -- plumbing -------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                from zsindex.store.repository import Store

                self._store = Store(self.settings.resolved_database_url)
            return self._store

    def encoder(self, model: str, pretrained: str | None) -> Encoder:
        """The (lazily loading) encoder for a model, shared within this process."""
        key = (model, pretrained)
        with self._lock:
            enc = self._encoders.get(key)
            if enc is None:
                from zsindex.encoders import load_encoder

                enc = load_encoder(model, pretrained, self.settings.device)
                self._encoders[key] = enc
            return enc

    def _model_choice(self, model: str | None, pretrained: str | None) -> tuple[str, str | None]:
        if model is None:
            model = self.settings.model
            if pretrained is None:
                pretrained = self.settings.pretrained
        return model, pretrained

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._loaded.clear()

    # -- label sets -----------------------------------------------------------------------

    def build_spec(
        self,
        *,
        labels: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        parents: Mapping[str, str] | None = None,
        plugin: str | None = None,
        content: str | None = None,
        format: str | None = None,
        file: str | Path | None = None,
        inline: str | None = None,
        node_text: str = "name",
        allow_duplicates: bool = False,
        spec: LabelSetSpec | None = None,
    ) -> LabelSetSpec:
        """Parse and validate exactly one label source (nothing is written)."""
        given = [x for x in (labels, plugin, content, file, inline, spec) if x is not None]
        if len(given) != 1:
            raise InvalidInputError(
                "give exactly one label source: labels, plugin, content (with format) or a file"
            )
        if spec is not None:
            from zsindex.labels.validate import validate_spec

            return validate_spec(spec)
        if plugin is not None:
            from zsindex.labels.plugins import load_plugin

            return load_plugin(plugin, self.settings.plugins)
        if file is not None:
            from zsindex.labels.formats import parse_labels_file

            return parse_labels_file(
                file,
                format,
                allow_duplicates=allow_duplicates,
                node_text=node_text,  # type: ignore[arg-type]
            )
        if inline is not None:
            from zsindex.labels.formats import parse_inline

            return parse_inline(inline, allow_duplicates=allow_duplicates)
        if content is not None:
            if format is None:
                raise InvalidInputError(
                    "content needs a format (text, csv, json, yaml, taxonomy-csv)"
                )
            from zsindex.labels.formats import parse_labels_text

            return parse_labels_text(
                content,
                format,
                "content",
                allow_duplicates=allow_duplicates,
                node_text=node_text,  # type: ignore[arg-type]
            )
        from zsindex.labels.build import build_labelset

        if isinstance(labels, Mapping):
            return build_labelset(
                list(labels), prompts=labels, parents=parents, allow_duplicates=allow_duplicates
            )
        return build_labelset(labels, parents=parents, allow_duplicates=allow_duplicates)

    def add_labelset(
        self,
        name: str,
        *,
        templates: Sequence[str] | str | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        strict: bool = False,
        progress: Callable[[int, int], None] | None = None,
        template_files: bool = False,
        text_worker: bool = False,
        **source: Any,
    ) -> LabelSetInfo:
        """Register ``name`` from one source (see :meth:`build_spec`); a new version if it
        exists and its content changed, else the current version unchanged.

        ``templates`` may name a template file only with ``template_files=True`` (the CLI):
        remote callers must never make this process open a path.

        ``text_worker=True`` (the one-shot CLI) loads the text tower in a child process while
        this one parses and tokenizes, where that pays off (see
        :mod:`zsindex.encoders.text_worker`)."""
        from zsindex.labels.validate import validate_labelset_name

        validate_labelset_name(name)
        model, pretrained = self._model_choice(model, pretrained)
        worker = self._start_text_worker(model, pretrained) if text_worker else None
        try:
            from zsindex.catalog.convert import version_info
            from zsindex.catalog.registration import register_spec

            # Labels first: a bad file is reported before a model error (and, without a worker,
            # before the model is resolved or downloaded at all).
            spec = self.build_spec(**source)
            chosen = self._resolve_templates(templates, spec, allow_files=template_files)
            record = register_spec(
                self.store,
                name,
                spec,
                worker or self.encoder(model, pretrained),
                templates=chosen,
                strict=strict,
                progress=progress,
            )
        finally:
            if worker is not None:
                worker.close()
        self._forget(name)
        return version_info(record)

    def _start_text_worker(self, model: str, pretrained: str | None) -> TextWorker | None:
        """A text-encoder worker started now, so its imports overlap parsing; ``None`` where
        it would not pay off or the model does not resolve (that error is raised later, after
        the labels are checked)."""
        from zsindex.encoders.text_worker import start_text_worker
        from zsindex.errors import ZsindexError

        try:
            encoder = self.encoder(model, pretrained)
        except ZsindexError:
            return None
        return start_text_worker(encoder)

    def _resolve_templates(
        self, templates: Sequence[str] | str | None, spec: LabelSetSpec, *, allow_files: bool
    ) -> tuple[str, ...]:
        from zsindex.labels.templates import resolve_templates, template_set, validate_templates

        if templates is None:
            return spec.templates or template_set(DEFAULT_TEMPLATE_SET)
        if isinstance(templates, str):
            return resolve_templates(templates, allow_files=allow_files)
        return validate_templates(list(templates))

    def import_labelset(
        self,
        name: str,
        *,
        embeddings: np.ndarray,
        names: Sequence[str],
        parents: Sequence[str | int | None] | None = None,
        model: str | None = None,
        pretrained: str | None = None,
    ) -> LabelSetInfo:
        """Register precomputed embeddings: one row per name. ``parents`` make a tree: per row
        the parent's name, its row index (needed when names repeat), or ``None`` for a root."""
        from zsindex.catalog.convert import version_info
        from zsindex.catalog.importing import import_rows

        model, pretrained = self._model_choice(model, pretrained)
        spec = _names_spec(list(names), parents)
        rows = list(range(len(names)))
        record = import_rows(
            self.store, name, spec, rows, embeddings, self.encoder(model, pretrained), "embeddings"
        )
        self._forget(name)
        return version_info(record)

    def import_files(
        self,
        name: str,
        *,
        embeddings_path: Path,
        names_path: Path,
        model: str,
        pretrained: str | None = None,
        embed_internal: str = "mean",
    ) -> LabelSetInfo:
        """``labels import``: a ``.npy`` matrix and a names file (text, JSON, CSV, TreeOfLife)."""
        from zsindex.catalog.convert import version_info
        from zsindex.catalog.importing import import_rows, read_npy
        from zsindex.labels.names import parse_names_file
        from zsindex.labels.validate import validate_labelset_name

        validate_labelset_name(name)
        parsed = parse_names_file(names_path, allow_duplicates=True)
        matrix = read_npy(embeddings_path)
        record = import_rows(
            self.store,
            name,
            parsed.spec,
            list(parsed.row_nodes),
            matrix,
            self.encoder(model, pretrained),
            str(embeddings_path),
            embed_internal=embed_internal,
        )
        self._forget(name)
        return version_info(record)

    def labelsets(self) -> list[LabelSetInfo]:
        from zsindex.catalog.convert import version_info

        return [version_info(v) for v in self.store.list_current()]

    def labelset(self, name: str) -> LabelSetInfo:
        from zsindex.catalog.convert import version_info

        return version_info(self.store.current(name))

    def history(self, name: str) -> list[LabelSetInfo]:
        from zsindex.catalog.convert import version_info

        return [version_info(v) for v in self.store.history(name)]

    def delete_labelset(self, name: str) -> None:
        self.store.delete_labelset(name)
        self._forget(name)

    def embeddings(self, name: str) -> tuple[list[Any], np.ndarray]:
        """Names (or ``{"name", "parent"}`` for trees) and float32 rows in registration order."""
        record = self.store.current(name)
        columns = self.store.load_labels(record.version_id)
        matrix = self.store.load_embeddings(record.version_id).astype(np.float32)
        if not columns.is_tree:
            return list(columns.names), matrix
        counts = Counter(columns.names)
        # A parent is named, or given by row index where its name is not unique.
        names: list[Any] = [
            {
                "name": n,
                "parent": None
                if p < 0
                else columns.names[p]
                if counts[columns.names[p]] == 1
                else p,
            }
            for n, p in zip(columns.names, columns.parents.tolist(), strict=True)
        ]
        return names, matrix

    # -- loading and hot swap ------------------------------------------------------------------

    def resolve(self, labelset: str) -> LoadedLabelSet:
        """The loaded current version of ``labelset`` (loaded on first use, then cached)."""
        with self._lock:
            loaded = self._loaded.get(labelset)
            if loaded is not None:
                return loaded
            lock = self._load_locks.setdefault(labelset, threading.Lock())
        with lock:  # one loader per label set; others wait for its result
            with self._lock:
                loaded = self._loaded.get(labelset)
            if loaded is not None:
                return loaded
            from zsindex.catalog.loading import load_current

            loaded = load_current(self.store, labelset, self.settings)
            with self._lock:
                self._loaded[labelset] = loaded
            return loaded

    def _forget(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)

    def refresh(self) -> None:
        """Drop loaded label sets whose current version changed in the store (hot swap)."""
        from zsindex.store.repository import version_key

        current = self.store.current_version_keys()
        with self._lock:
            for name, loaded in list(self._loaded.items()):
                if current.get(name) != version_key(loaded.record):
                    del self._loaded[name]

    def ready(self) -> dict[str, Any]:
        """Store reachable and which label sets are loaded."""
        ids = self.store.current_version_ids()
        with self._lock:
            loaded = {n: ls.version for n, ls in self._loaded.items()}
        return {"store": "ok", "labelsets": len(ids), "loaded": loaded}

    # -- images and classification -------------------------------------------------------------

    def check_image(self, source: str | Path | bytes, name: str) -> None:
        """Validate format (magic bytes) and pixel count without decoding."""
        from zsindex.encoders.images import check_image

        check_image(source, name_for_errors=name)

    def load_image(self, source: Any, name: str, *, max_pixels: int | None = None) -> Image.Image:
        """Decode one image to RGB (EXIF applied, alpha on white) with the safety checks."""
        from zsindex.encoders.images import DEFAULT_MAX_PIXELS, load_image

        return load_image(source, name_for_errors=name, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)

    def image_preprocess(self, loaded: LoadedLabelSet) -> Callable[[Image.Image], Any]:
        """The label set's model input transform (decoded image → tensor); loads the model."""
        model = loaded.record.model
        return self.encoder(model.name, model.pretrained).preprocess

    def encode_images(self, loaded: LoadedLabelSet, images: list[Any]) -> np.ndarray:
        """L2-normalised image embeddings with the label set's own model (decoded images, or
        model inputs from :meth:`image_preprocess`)."""
        model = loaded.record.model
        return self.encoder(model.name, model.pretrained).encode_images(images)

    def classify_embeddings(
        self,
        loaded: LoadedLabelSet,
        embeddings: np.ndarray,
        image_names: list[str],
        **opts: Any,
    ) -> list[ClassificationResult]:
        from zsindex.classify.engine import ClassifyOptions, check_embeddings, classify_embeddings

        emb = check_embeddings(embeddings, loaded.record.dim)
        return classify_embeddings(loaded, emb, image_names, ClassifyOptions(**opts))

    def classify(
        self,
        *,
        labelset: str,
        images: Sequence[Any] | None = None,
        embeddings: np.ndarray | None = None,
        image_names: Sequence[str] | None = None,
        **opts: Any,
    ) -> list[ClassificationResult]:
        """Classify images (paths, bytes, PIL) or precomputed embeddings."""
        from zsindex.classify.engine import ClassifyOptions

        ClassifyOptions(**opts).check()  # bad options fail before any decoding or loading
        loaded = self.resolve(labelset)
        if embeddings is not None:
            count = len(np.atleast_2d(np.asarray(embeddings)))
            names = list(image_names) if image_names else [str(i) for i in range(count)]
            return self.classify_embeddings(loaded, embeddings, names, **opts)
        assert images is not None
        names = (
            list(image_names) if image_names else [_image_name(x, i) for i, x in enumerate(images)]
        )
        from PIL import Image

        from zsindex.encoders.images import DEFAULT_MAX_PIXELS, check_image

        # Every header first (format, pixel limit): a bad file fails before the model loads.
        for img, name in zip(images, names, strict=True):
            if not isinstance(img, Image.Image):
                check_image(img, max_pixels=DEFAULT_MAX_PIXELS, name_for_errors=name)
        # Then one image at a time: decoded, turned into the model's input, and let go, so
        # memory does not grow with the number of images.
        preprocess = self.image_preprocess(loaded)
        inputs = []
        for img, name in zip(images, names, strict=True):
            decoded = self.load_image(img, name)
            inputs.append(preprocess(decoded))
            if decoded is not img:
                decoded.close()
        emb = self.encode_images(loaded, inputs)
        return self.classify_embeddings(loaded, emb, names, **opts)

    def classify_files(
        self, items: Sequence[tuple[str, Path]], *, labelset: str, **opts: Any
    ) -> list[ClassificationResult]:
        """Classify files in order; a file that fails becomes a result with ``error`` set.

        Decoding (JPEG draft mode, parallel workers) overlaps the encoder's forward passes.
        """
        loaded = self.resolve(labelset)
        model = loaded.record.model
        encoding = self.encoder(model.name, model.pretrained).try_encode_images(
            [path for _, path in items]
        )
        ok = np.flatnonzero(encoding.ok).tolist()
        answers = iter(
            self.classify_embeddings(
                loaded, encoding.embeddings[ok], [items[i][0] for i in ok], **opts
            )
            if len(ok)
            else []
        )
        results = []
        for i, (name, _) in enumerate(items):
            error = encoding.errors.get(i)
            if error is None:
                results.append(next(answers))
            else:
                results.append(
                    ClassificationResult(
                        image=name,
                        labelset=loaded.name,
                        version=loaded.version,
                        predictions=[],
                        error=error.message,
                    )
                )
        return results


def _names_spec(names: list[str], parents: Sequence[str | int | None] | None) -> LabelSetSpec:
    """A validated spec for imported rows (names may repeat; they are identified by row)."""
    from zsindex.labels.build import build_labelset, spec_from_nodes
    from zsindex.labels.names import resolve_parent_refs
    from zsindex.labels.spec import LabelNode
    from zsindex.labels.validate import validate_spec

    if parents is None:
        return build_labelset(names, allow_duplicates=True)
    if len(parents) != len(names):
        raise InvalidInputError(f"parents has {len(parents)} entries for {len(names)} names")
    refs = resolve_parent_refs(names, list(parents), lambda i: f"parents[{i}]", "parents")
    nodes = [LabelNode(n, parent=r) for n, r in zip(names, refs, strict=True)]
    return validate_spec(spec_from_nodes(nodes, source="import", allow_duplicates=True))


def _image_name(source: Any, index: int) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return str(index)
