"""Stored embeddings in flat modes go from the search's arrays straight to Parquet columns
(``output.flat_table``): the rows must be exactly those built from the per-image results that
``classify`` returns, for every flat option."""

from __future__ import annotations

import numpy as np
import pytest

from zsindex.batch.output import flat_table, prediction_rows, predictions_table
from zsindex.classify.engine import classify_embeddings, flat_columns, prediction_labels
from zsindex.config import Settings
from zsindex.options import ClassifyOptions


@pytest.mark.parametrize(
    ("labelset", "options"),
    [
        ("colors", ClassifyOptions(k=3)),
        ("colors", ClassifyOptions(k=8, activation="sigmoid")),
        ("colors", ClassifyOptions(k=2, reject_below=0.6)),
        ("shapes", ClassifyOptions(k=4, mode="pruned")),
        ("shape-tree", ClassifyOptions(k=5)),
        ("shape-tree", ClassifyOptions(k=3, within="circle", reject_below=0.9)),
    ],
)
def test_flat_table_equals_the_results_rows(
    store: Settings, labelset: str, options: ClassifyOptions
) -> None:
    from zsindex.local import LocalBackend

    backend = LocalBackend(store)
    try:
        loaded = backend.resolve(labelset)
        rng = np.random.default_rng(5)
        # Image-like queries: near a label row (confident) and far from every one (uncertain).
        rows = loaded.matrix.astype(np.float32)
        picks = rows[rng.integers(0, len(rows), size=12)]
        queries = np.concatenate(
            [picks + 0.05 * rng.standard_normal(picks.shape), rng.standard_normal(picks.shape)]
        ).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        names = [f"image-{i}.jpg" for i in range(len(queries))]
        indices = list(range(100, 100 + len(queries)))

        results = classify_embeddings(loaded, queries, names, options)
        expected = predictions_table(prediction_rows(indices, results))
        answer = flat_columns(loaded, queries, options)
        assert answer is not None
        table = flat_table(
            indices,
            names,
            loaded.name,
            loaded.version,
            prediction_labels(loaded),
            answer,
            options.reject_below,
        )
        assert table.schema == expected.schema
        assert table.to_pylist() == expected.to_pylist()
        if options.reject_below is not None:  # both outcomes occur, so the column is tested
            assert set(table.column("rejected").to_pylist()) == {True, False}
    finally:
        backend.close()


def test_tree_modes_are_not_flat(store: Settings) -> None:
    from zsindex.local import LocalBackend

    backend = LocalBackend(store)
    try:
        loaded = backend.resolve("shape-tree")
        query = loaded.matrix[:1].astype(np.float32)
        query /= np.linalg.norm(query)
        assert flat_columns(loaded, query, ClassifyOptions(mode="beam")) is None
    finally:
        backend.close()
