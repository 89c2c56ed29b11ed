"""Loading a label-set version for classification (SQL, or a verified on-disk cache)."""

from __future__ import annotations

import logging

from zsindex.classify.loaded import LoadedLabelSet, arrange
from zsindex.config import Settings
from zsindex.store.repository import Store

log = logging.getLogger(__name__)


def load_current(store: Store, name: str, settings: Settings) -> LoadedLabelSet:
    """Load ``name``'s current version: labels, tree (BFS order) and an exact index."""
    from zsindex.index.exact import ExactIndex

    record = store.current(name)
    columns = store.load_labels(record.version_id)
    matrix = store.load_embeddings(record.version_id)
    order, tree = arrange(columns, record.rank_names)
    if tree is not None:
        matrix = matrix[order]
        names = [columns.names[i] for i in order.tolist()]
    else:
        names = columns.names
    index = ExactIndex(matrix, check_finite=False)
    return LoadedLabelSet(record=record, names=names, tree=tree, index=index, order=order)
