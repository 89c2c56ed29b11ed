"""The job's output folder: Parquet parts written atomically, and the manifest.

Layout of ``--output DIR``::

    DIR/_manifest.json              what job this is (inputs digest, pinned versions, options)
    DIR/predictions/part-00000.parquet   one row per (image, label set), long format
    DIR/embeddings/part-00000.parquet    with --save-embeddings: one row per image
    DIR/_summary.json               written when every part is committed

A part is written to a temporary name, fsynced and renamed, so it is either whole or absent; its
predictions file is renamed last and is the part's commit record (a rerun skips committed parts
and rewrites the others). Names starting with ``_`` or ``.`` are ignored by Parquet readers, so
``pandas.read_parquet("DIR/predictions")`` reads the whole result.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.errors import ConflictError, InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from zsindex.classify.engine import FlatAnswer
    from zsindex.results import ClassificationResult

MANIFEST = "_manifest.json"
SUMMARY = "_summary.json"
PREDICTIONS = "predictions"
EMBEDDINGS = "embeddings"
OWN_ENTRIES = (MANIFEST, SUMMARY, PREDICTIONS, EMBEDDINGS)


def prediction_schema() -> pa.Schema:
    """Columns of ``DIR/predictions``: DESIGN.md's ``source``, ``labelset``, ``version``,
    ``labels``, ``probabilities``, ``scores``, ``error`` (+ ``path`` for tree modes), and the
    input's position in the job (``input_index``), whether the probabilities are exact, and
    ``rejected`` (``reject_below``: the top probability fell below it)."""
    import pyarrow as pa

    step = pa.struct([("rank", pa.string()), ("label", pa.string()), ("probability", pa.float64())])
    return pa.schema(
        [
            ("source", pa.string()),
            ("input_index", pa.int64()),
            ("labelset", pa.string()),
            ("version", pa.int32()),
            ("labels", pa.list_(pa.string())),
            ("probabilities", pa.list_(pa.float64())),
            ("scores", pa.list_(pa.float64())),
            ("path", pa.list_(step)),
            ("exact_probabilities", pa.bool_()),
            ("rejected", pa.bool_()),
            ("error", pa.struct([("code", pa.string()), ("message", pa.string())])),
        ]
    )


def embedding_schema(dim: int) -> pa.Schema:
    """Columns of ``DIR/embeddings``: ``source``, ``embedding`` (float32 × dim, null for an
    image that could not be read), the model's ``model``, ``pretrained`` and ``fingerprint``
    (its weights' SHA-256), and ``input_index``."""
    import pyarrow as pa

    return pa.schema(
        [
            ("source", pa.string()),
            ("input_index", pa.int64()),
            ("embedding", pa.list_(pa.float32(), dim)),
            ("model", pa.string()),
            ("pretrained", pa.string()),
            ("fingerprint", pa.string()),
        ]
    )


def prediction_rows(
    indices: Sequence[int], results: Sequence[ClassificationResult]
) -> dict[str, list[Any]]:
    """Columns for one label set's results, one row per image (``indices``: input
    positions)."""
    cols: dict[str, list[Any]] = {name: [] for name in prediction_schema().names}
    for index, r in zip(indices, results, strict=True):
        cols["source"].append(r.image)
        cols["input_index"].append(int(index))
        cols["labelset"].append(r.labelset)
        cols["version"].append(r.version)
        cols["labels"].append([p.label for p in r.predictions])
        cols["probabilities"].append([p.probability for p in r.predictions])
        cols["scores"].append([p.score for p in r.predictions])
        cols["path"].append(
            None
            if r.path is None
            else [{"rank": s.rank, "label": s.label, "probability": s.probability} for s in r.path]
        )
        cols["exact_probabilities"].append(r.exact_probabilities)
        cols["rejected"].append(r.rejected)
        cols["error"].append(
            None if r.error is None else {"code": r.error_code, "message": r.error}
        )
    return cols


def flat_table(
    indices: Sequence[int],
    sources: Sequence[str],
    labelset: str,
    version: int,
    labels: Sequence[str],
    answer: FlatAnswer,
    reject_below: float | None,
) -> pa.Table:
    """The rows of one label set's flat-mode answer, built column by column from its arrays
    (no result object per image: stored embeddings classify at search speed). The same rows
    as :func:`prediction_rows` of the results built from ``answer``."""
    import pyarrow as pa

    n, k = answer.ids.shape
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    names = pa.array(list(labels), pa.string())
    top = answer.probabilities[:, 0] if k else np.zeros(n, dtype=np.float32)
    rejected = (
        np.zeros(n, dtype=bool) if reject_below is None else top.astype(np.float64) < reject_below
    )

    def floats(values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(
            offsets, pa.array(values.astype(np.float64).reshape(-1), pa.float64())
        )

    schema = prediction_schema()
    columns = {
        "source": pa.array(list(sources), pa.string()),
        "input_index": pa.array(np.asarray(indices, dtype=np.int64)),
        "labelset": pa.array([labelset] * n, pa.string()),
        "version": pa.array(np.full(n, version, dtype=np.int32)),
        "labels": pa.ListArray.from_arrays(offsets, names.take(answer.ids.reshape(-1))),
        "probabilities": floats(answer.probabilities),
        "scores": floats(answer.scores),
        "path": pa.nulls(n, schema.field("path").type),
        "exact_probabilities": pa.array(answer.exact, pa.bool_()),
        "rejected": pa.array(rejected, pa.bool_()),
        "error": pa.nulls(n, schema.field("error").type),
    }
    return pa.table(columns, schema=schema)


def merge_columns(parts: Sequence[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {name: [] for name in prediction_schema().names}
    for cols in parts:
        for name, values in cols.items():
            out[name].extend(values)
    return out


def predictions_table(cols: dict[str, list[Any]]) -> pa.Table:
    import pyarrow as pa

    return pa.table(cols, schema=prediction_schema())


def embeddings_table(
    indices: Sequence[int],
    sources: Sequence[str],
    rows: dict[int, np.ndarray],
    dim: int,
    model: tuple[str, str, str],
) -> pa.Table:
    """One row per image: ``rows`` maps a position in ``indices`` to its embedding."""
    import pyarrow as pa

    name, pretrained, fingerprint = model
    flat = np.zeros((len(indices), dim), dtype=np.float32)
    valid = np.zeros(len(indices), dtype=bool)
    for pos, vector in rows.items():
        flat[pos] = vector
        valid[pos] = True
    values = pa.array(flat.reshape(-1), type=pa.float32())
    embedding = pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~valid))
    n = len(indices)
    return pa.table(
        {
            "source": pa.array(list(sources), pa.string()),
            "input_index": pa.array([int(i) for i in indices], pa.int64()),
            "embedding": embedding,
            "model": pa.array([name] * n, pa.string()),
            "pretrained": pa.array([pretrained] * n, pa.string()),
            "fingerprint": pa.array([fingerprint] * n, pa.string()),
        },
        schema=embedding_schema(dim),
    )


def part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


class OutputFolder:
    """``--output DIR``: refuses another job's parts, commits parts atomically.

    Args:
        root: the folder (created when missing).
        manifest: this job's identity (see :class:`~zsindex.batch.plan.JobPlan`).
        overwrite: replace what an earlier, different job left in ``root``.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], *, overwrite: bool) -> None:
        self.root = root
        self.manifest = manifest
        self.overwrite = overwrite

    def open(self) -> set[int]:
        """Prepare the folder; return the parts already committed by this same job."""
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInputError(f"--output {self.root}: is a file, not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        existing = self._read_manifest()
        if existing is not None and existing != self.manifest:
            if not self.overwrite:
                why = _difference(existing, self.manifest)
                raise ConflictError(
                    f"--output {self.root} holds another job's parts ({why}); "
                    "give a new folder, or --overwrite to replace them"
                )
            self._clear()
            existing = None
        elif existing is None:
            foreign = [p.name for p in self.root.iterdir() if p.name in (PREDICTIONS, EMBEDDINGS)]
            if foreign and not self.overwrite:
                raise ConflictError(
                    f"--output {self.root} holds parts without a job manifest; give a new "
                    "folder, or --overwrite to replace them"
                )
            self._clear()
        (self.root / PREDICTIONS).mkdir(exist_ok=True)
        if self.manifest.get("save_embeddings"):
            (self.root / EMBEDDINGS).mkdir(exist_ok=True)
        if existing is None:
            write_json_atomic(self.root / MANIFEST, self.manifest)
        return self.committed()

    def committed(self) -> set[int]:
        done = set()
        for path in (self.root / PREDICTIONS).glob("part-*.parquet"):
            stem = path.name[len("part-") : -len(".parquet")]
            if stem.isdigit():
                done.add(int(stem))
        return done

    def commit(self, part: int, predictions: pa.Table, embeddings: pa.Table | None) -> None:
        """Write one part; its predictions file, renamed last, is the commit."""
        import pyarrow.parquet as pq

        if embeddings is not None:
            _write_atomic(self.root / EMBEDDINGS / part_name(part), embeddings, pq)
        _write_atomic(self.root / PREDICTIONS / part_name(part), predictions, pq)

    def finish(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.root / SUMMARY, summary)

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{path}: unreadable job manifest ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidInputError(f"{path}: not a zsindex batch manifest")
        return data

    def _clear(self) -> None:
        for name in OWN_ENTRIES:
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    old_sets = {s["name"]: s for s in old.get("labelsets", [])}
    for s in new.get("labelsets", []):
        before = old_sets.get(s["name"])
        if before is None:
            return f"it has no label set {s['name']!r}"
        if before.get("version") != s["version"]:
            return (
                f"{s['name']} version {before.get('version')}, this job: version {s['version']}; "
                f"resume it with --labels {s['name']}@{before.get('version')}"
            )
    for key in ("inputs", "labelsets", "save_embeddings", "part_size", "fast_decode"):
        if old.get(key) != new.get(key):
            return f"its {key} differ"
    return "its manifest differs"


def _write_atomic(path: Path, table: pa.Table, pq: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    _fsync_and_rename(tmp, path)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _fsync_and_rename(tmp, path)


def _fsync_and_rename(tmp: Path, path: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
