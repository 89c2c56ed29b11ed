"""The catalogue of label sets: create, import, read, delete, and load for classification.

Everything arrives as content (labels, a file's text, a matrix), never as a path to open: the
CLI reads a user's files itself. Writes end in one atomic version (see
:mod:`zsindex.catalog.registration`); reads hand out plain records and public types.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from zsindex.config import Settings
from zsindex.errors import InvalidInputError, ZsindexError
from zsindex.options import LabelNames, LabelSource
from zsindex.results import LabelTree
from zsindex.store.records import VersionRecord

if TYPE_CHECKING:
    from zsindex.catalog.registration import Progress
    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.encoders.pool import EncoderPool
    from zsindex.encoders.text_worker import TextWorker
    from zsindex.labels.spec import LabelSetSpec
    from zsindex.store.repository import Store

log = logging.getLogger(__name__)

EMBED_INTERNAL = ("mean", "text")


class Catalog:
    """Label-set versions in the store.

    Args:
        store: the store (opened on first use by the caller's accessor).
        encoders: the process's encoders (text embeddings, model identity).
        settings: default model, plugin allow-list, cache folder, device.
        text_worker: load the text tower in a helper process while labels are parsed (the
            one-shot CLI; see :mod:`zsindex.encoders.text_worker`).
        progress: called with (done, total) while labels are embedded.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        encoders: EncoderPool,
        settings: Settings,
        *,
        text_worker: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self._store = store
        self.encoders = encoders
        self.settings = settings
        self.text_worker = text_worker
        self.progress = progress

    @property
    def store(self) -> Store:
        return self._store()

    def model_choice(self, model: str | None, pretrained: str | None) -> tuple[str, str | None]:
        """The caller's model, else the configured default (with its default tag)."""
        if model is None:
            model = self.settings.model
            if pretrained is None:
                pretrained = self.settings.pretrained
        return model, pretrained

    # -- writes -----------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        source: LabelSource,
        *,
        templates: Sequence[str] | str | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        strict: bool = False,
        index: str | None = None,
    ) -> VersionRecord:
        """Register ``name`` from ``source``: a new version if its content (or the index it
        asks for) changed, else the current version unchanged."""
        from zsindex.catalog.registration import register_spec
        from zsindex.labels.source import choose_templates, spec_from_source
        from zsindex.labels.validate import validate_labelset_name

        validate_labelset_name(name)
        index_spec = canonical_index(index)
        model, pretrained = self.model_choice(model, pretrained)
        worker = self._start_text_worker(model, pretrained) if self.text_worker else None
        try:
            # Labels first: a bad file is reported before a model error (and, without a worker,
            # before the model is resolved at all).
            spec = spec_from_source(source, self.settings.plugins)
            chosen = choose_templates(templates, spec)
            runtime = worker or self.encoders.get(model, pretrained)
            return register_spec(
                self.store,
                name,
                spec,
                runtime,
                templates=chosen,
                strict=strict,
                progress=self.progress,
                index_spec=index_spec,
            )
        finally:
            if worker is not None:
                worker.close()

    def _start_text_worker(self, model: str, pretrained: str | None) -> TextWorker | None:
        """A text-encoder worker started now, so its imports overlap parsing; ``None`` where
        it would not pay off or the model does not resolve (that error is raised later, after
        the labels are checked)."""
        from zsindex.encoders.text_worker import start_text_worker

        try:
            encoder = self.encoders.get(model, pretrained)
        except ZsindexError:
            return None
        return start_text_worker(encoder)

    def import_(
        self,
        name: str,
        embeddings: np.ndarray,
        names: LabelNames,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        embed_internal: str = "mean",
        index: str | None = None,
    ) -> VersionRecord:
        """Register precomputed embeddings: one row per name (or per row of a names file)."""
        from zsindex.catalog.importing import check_matrix, import_rows
        from zsindex.labels.validate import validate_labelset_name

        validate_labelset_name(name)
        if embed_internal not in EMBED_INTERNAL:
            raise InvalidInputError(
                f"embed_internal must be 'mean' or 'text', got {embed_internal!r}"
            )
        index_spec = canonical_index(index)
        spec, rows = _names_spec(names.check())
        matrix = check_matrix(embeddings, names.content_name)
        model, pretrained = self.model_choice(model, pretrained)
        return import_rows(
            self.store,
            name,
            spec,
            rows,
            matrix,
            self.encoders.get(model, pretrained),
            names.content_name if names.content is not None else "embeddings",
            embed_internal=embed_internal,
            index_spec=index_spec,
        )

    def delete(self, name: str) -> None:
        """Delete a label set and all its versions."""
        self.store.delete_labelset(name)

    def rollback(self, name: str, number: int) -> VersionRecord:
        """Make version ``number``'s content current again, as a new version that history
        records (see :mod:`zsindex.store.rollback`); the current version unchanged when it
        already holds exactly that content (as a registration of the same content)."""
        from zsindex.catalog.registration import UnchangedVersion
        from zsindex.labels.refs import check_version_number

        check_version_number(number)
        target = self.store.version(name, number)
        current = self.store.current(name)
        if (target.digest, target.index_spec) == (current.digest, current.index_spec):
            return UnchangedVersion.of(current)
        return self.store.rollback(name, number)

    # -- reads ------------------------------------------------------------------------------------

    def current(self, name: str) -> VersionRecord:
        return self.store.current(name)

    def version_of(self, ref: str) -> VersionRecord:
        """The version a reference names: ``NAME`` the current one, ``NAME@N`` version N."""
        from zsindex.labels.refs import parse_ref

        name, number = parse_ref(ref)
        return self.store.current(name) if number is None else self.store.version(name, number)

    def list_current(self) -> list[VersionRecord]:
        return self.store.list_current()

    def history(self, name: str) -> list[VersionRecord]:
        return self.store.history(name)

    def embeddings(self, name: str) -> tuple[list[str], np.ndarray]:
        """Each node's own name and the float32 rows, in registration order (``NAME@N``:
        version N's)."""
        record = self.version_of(name)
        columns = self.store.load_labels(record.version_id)
        matrix = self.store.load_embeddings(record.version_id).astype(np.float32)
        return list(columns.names), matrix

    def tree(self, name: str) -> LabelTree:
        """The current version's structure in registration order (``NAME@N``: version N's)."""
        record = self.version_of(name)
        columns = self.store.load_labels(record.version_id)
        return LabelTree(
            names=list(columns.names),
            parents=[int(p) for p in columns.parents.tolist()],
            depths=[int(d) for d in columns.depths.tolist()],
            ranks=list(columns.ranks),
            rank_names=list(record.rank_names),
        )

    def load(self, name: str) -> LoadedLabelSet:
        """``name``'s current version, loaded for classification (verified cache, else SQL),
        with the search index its settings choose."""
        from zsindex.catalog.loading import load_current

        return load_current(self.store, name, self.settings)

    def load_version(self, name: str, number: int) -> LoadedLabelSet:
        """Version ``number`` of ``name`` loaded for classification (a pinned ``NAME@N``)."""
        from zsindex.catalog.loading import load_version

        return load_version(self.store, name, number, self.settings)


def canonical_index(index: str | None) -> str:
    """The canonical form of an index spec a caller asked for (``""`` for none)."""
    if index is None:
        return ""
    from zsindex.index.types import IndexSpec

    return IndexSpec.parse(index).canonical()


def _names_spec(names: LabelNames) -> tuple[LabelSetSpec, Sequence[int]]:
    """The validated spec of imported rows and each row's node (names may repeat)."""
    from zsindex.labels.build import build_labelset, spec_from_nodes
    from zsindex.labels.names import detect_names_format, parse_names_text, resolve_parent_refs
    from zsindex.labels.spec import LabelNode
    from zsindex.labels.validate import validate_spec

    if names.content is not None:
        fmt = names.format or detect_names_format(names.content_name, names.content)
        parsed = parse_names_text(names.content, fmt, names.content_name, allow_duplicates=True)
        return parsed.spec, parsed.row_nodes
    rows = list(names.names or ())
    if any(not isinstance(n, str) for n in rows):
        raise InvalidInputError("names must be strings, one per embedding row")
    if names.parents is None:
        return build_labelset(rows, allow_duplicates=True), range(len(rows))
    if len(names.parents) != len(rows):
        raise InvalidInputError(f"parents has {len(names.parents)} entries for {len(rows)} names")
    refs = resolve_parent_refs(rows, list(names.parents), lambda i: f"parents[{i}]", "parents")
    nodes = [LabelNode(n, parent=r) for n, r in zip(rows, refs, strict=True)]
    spec = spec_from_nodes(nodes, source="import", allow_duplicates=True)
    return validate_spec(spec, allow_duplicates=True), range(len(rows))
