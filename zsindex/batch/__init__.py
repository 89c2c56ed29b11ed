"""Archive-scale batch jobs: ``zsindex batch`` and :func:`zsindex.batch.run`.

Inputs (files, folders, globs, CSV/Parquet lists, WebDataset shards, or stored embeddings) →
label-set versions pinned at start → parts classified on the local engine or Ray Data →
Parquet parts committed atomically (resumable, exactly once) under ``--output DIR``.
Importing this package is light; the engines load what they need when a job runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zsindex.batch.job import BatchSummary, RayOptions, run
    from zsindex.batch.plan import LabelSetRequest

__all__ = ["BatchSummary", "LabelSetRequest", "RayOptions", "run"]


def __getattr__(name: str) -> Any:
    if name in ("BatchSummary", "RayOptions", "run"):
        from zsindex.batch import job

        return getattr(job, name)
    if name == "LabelSetRequest":
        from zsindex.batch.plan import LabelSetRequest

        return LabelSetRequest
    raise AttributeError(name)
