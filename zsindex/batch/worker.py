"""One part of a batch job → its output tables: the same code in every engine.

Images are embedded once per model (``ImagePipeline.embed``: headers checked, decoding
overlapped with batched forward passes) and scored against every pinned label set of that model
(``ImagePipeline.score_embedded``), so a job with three label sets encodes each image once. The
local engine calls :meth:`BatchWorker.run_part` in its own process; each Ray actor holds one
``BatchWorker`` (model and label sets loaded once per actor). Stored embeddings skip the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.batch.output import (
    embeddings_table,
    flat_table,
    merge_columns,
    prediction_rows,
    predictions_table,
)
from zsindex.batch.plan import LabelSetTask
from zsindex.errors import ImageError

if TYPE_CHECKING:
    import pyarrow as pa

    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.classify.pipeline import Embedded
    from zsindex.encoders.images import ImageSource
    from zsindex.local import LocalBackend


@dataclass(frozen=True)
class PartOutput:
    """What one part produced: predictions (and embeddings) tables and its error count."""

    predictions: pa.Table
    embeddings: pa.Table | None
    images: int
    errors: int


class BatchWorker:
    """Classifies parts for a fixed set of pinned label sets.

    Args:
        backend: the local backend (store, encoders, pipeline) of this process.
        tasks: the job's pinned label sets.
        fast_decode: JPEG draft-mode decoding.
        save_embeddings: also return each image's embedding.
    """

    def __init__(
        self,
        backend: LocalBackend,
        tasks: Sequence[LabelSetTask],
        *,
        fast_decode: bool = False,
        save_embeddings: bool = False,
    ) -> None:
        self.backend = backend
        self.tasks = list(tasks)
        self.fast_decode = fast_decode
        self.save_embeddings = save_embeddings
        self.loaded: list[LoadedLabelSet] = [backend.resolve(t.pinned) for t in self.tasks]
        groups: dict[tuple[str, str, str], list[int]] = {}
        for i, task in enumerate(self.tasks):
            groups.setdefault(task.model_key, []).append(i)
        self.groups = list(groups.items())
        """Label sets by model, in first-given order: one encoding per group."""

    def run_part(
        self,
        indices: Sequence[int],
        sources: Sequence[str],
        images: Sequence[ImageSource | ImageError],
    ) -> PartOutput:
        """Classify one part's images (an :class:`ImageError` stands for one that could not be
        read; it gets an error row for every label set)."""
        from zsindex.classify.pipeline import Embedded

        pipeline = self.backend.pipeline
        pending = [i for i, x in enumerate(images) if not isinstance(x, ImageError)]
        read_errors = {i: x for i, x in enumerate(images) if isinstance(x, ImageError)}
        columns: list[dict[str, list[Any]]] = [{} for _ in self.tasks]
        embeddings: pa.Table | None = None
        failed: set[int] = set(read_errors)
        for model_key, members in self.groups:
            first = self.loaded[members[0]]
            part = pipeline.embed(
                first,
                [images[i] for i in pending],  # type: ignore[misc]
                [sources[i] for i in pending],
                fast_decode=self.fast_decode,
                on_error="report",
            )
            embedded = Embedded(
                count=len(images),
                rows={pending[j]: v for j, v in part.rows.items()},
                errors={**read_errors, **{pending[j]: e for j, e in part.errors.items()}},
            )
            failed.update(embedded.errors)
            for t in members:
                columns[t] = self._score(t, indices, sources, embedded)
            if self.save_embeddings and embeddings is None:
                embeddings = embeddings_table(
                    indices, sources, embedded.rows, first.record.dim, model_key
                )
        return PartOutput(
            predictions=predictions_table(merge_columns(columns)),
            embeddings=embeddings,
            images=len(images),
            errors=len(failed),
        )

    def run_embeddings(
        self,
        indices: Sequence[int],
        sources: Sequence[str],
        vectors: np.ndarray,
    ) -> PartOutput:
        """Classify stored image embeddings (one row per source; no encoder). Flat modes go
        from the search's arrays straight to Parquet columns; tree modes through results."""
        import pyarrow as pa

        from zsindex.classify.engine import check_embeddings, flat_columns, prediction_labels
        from zsindex.classify.pipeline import Embedded

        # Every label set of the job has the stored embeddings' dimension (checked at start).
        unit = check_embeddings(vectors, self.loaded[0].record.dim)
        tables = []
        for t, task in enumerate(self.tasks):
            loaded = self.loaded[t]
            options = self.backend.pipeline.options(task.options)
            answer = flat_columns(loaded, unit, options)
            if answer is None:
                embedded = Embedded(count=len(sources), rows=dict(enumerate(vectors)), errors={})
                cols = self._score(t, indices, sources, embedded)
                tables.append(predictions_table(cols))
                continue
            tables.append(
                flat_table(
                    indices,
                    sources,
                    loaded.name,
                    loaded.version,
                    prediction_labels(loaded),
                    answer,
                    options.reject_below,
                )
            )
        return PartOutput(
            predictions=pa.concat_tables(tables),
            embeddings=None,
            images=len(sources),
            errors=0,
        )

    def _score(
        self, task: int, indices: Sequence[int], sources: Sequence[str], embedded: Embedded
    ) -> dict[str, list[Any]]:
        loaded = self.loaded[task]
        options = self.backend.pipeline.options(self.tasks[task].options)
        results = self.backend.pipeline.score_embedded(loaded, embedded, list(sources), options)
        return prediction_rows(indices, results)
