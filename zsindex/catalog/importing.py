"""``labels import``: precomputed embeddings (e.g. a taxonomy embedded on a GPU cluster)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zsindex.catalog.convert import spec_to_columns
from zsindex.catalog.registration import model_spec, normalise_rows, tree_mean_fill
from zsindex.errors import InvalidInputError
from zsindex.labels.spec import LabelSetSpec
from zsindex.labels.validate import validate_labelset_name
from zsindex.store.records import NewVersion, VersionRecord
from zsindex.store.repository import Store

if TYPE_CHECKING:
    from zsindex.encoders import Encoder

INTERNAL_TEMPLATES = ("a photo of a {}.",)
IMPORT_BLOCK = 65_536


def check_matrix(matrix: object, source: str) -> np.ndarray:
    """A 2-D float matrix of embeddings: float16 stays float16 (an imported fp16 array is stored
    as fp16), float32 as is, float64 is taken as float32; anything else is an error."""
    arr = matrix if isinstance(matrix, np.ndarray) else np.asarray(matrix)
    if arr.ndim != 2 or 0 in arr.shape:
        raise InvalidInputError(
            f"{source}: embeddings must be a 2-D matrix [rows, dim], got shape {list(arr.shape)}"
        )
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise InvalidInputError(
            f"{source}: embeddings of dtype {arr.dtype} are not float16, float32 or float64"
        )
    return arr


def orient(matrix: np.ndarray, rows: int, dim: int, source: str) -> np.ndarray:
    """Accept ``[rows, dim]`` or ``[dim, rows]``; anything else is an error naming both."""
    if matrix.shape == (rows, dim):
        return matrix
    if matrix.shape == (dim, rows):
        return matrix.T
    raise InvalidInputError(
        f"{source}: shape {list(matrix.shape)} does not match {rows} names × the model's "
        f"dimension {dim} (expected [{rows}, {dim}] or [{dim}, {rows}])"
    )


def import_rows(
    store: Store,
    name: str,
    spec: LabelSetSpec,
    row_nodes: Sequence[int],
    matrix: np.ndarray,
    encoder: Encoder,
    source: str,
    *,
    embed_internal: str = "mean",
    index_spec: str = "",
) -> VersionRecord:
    """Store ``matrix`` rows as the embeddings of ``spec``'s nodes ``row_nodes``.

    Tree nodes without a row get the re-normalised mean of their descendants' rows
    (``embed_internal="mean"``) or their text embedding from the model (``"text"``).
    """
    validate_labelset_name(name)
    if embed_internal not in ("mean", "text"):
        raise InvalidInputError(f"embed_internal must be 'mean' or 'text', got {embed_internal!r}")
    info = encoder.info
    rows = orient(matrix, len(row_nodes), info.dim, source)
    n = len(spec)
    columns = spec_to_columns(spec)
    full = np.zeros((n, info.dim), dtype=np.float32)
    has_row = np.zeros(n, dtype=bool)
    node_ids = np.asarray(row_nodes, dtype=np.int64)
    # Copy and normalise block by block: the input may be a huge read-only memory map.
    for a in range(0, len(node_ids), IMPORT_BLOCK):
        block = normalise_rows(rows[a : a + IMPORT_BLOCK], source, offset=a)
        full[node_ids[a : a + IMPORT_BLOCK]] = block
    has_row[node_ids] = True
    if not has_row.all():
        if not columns.is_tree:
            raise InvalidInputError(f"{source}: {int((~has_row).sum())} labels have no row")
        if embed_internal == "text":
            missing = np.flatnonzero(~has_row)
            texts = [spec.text_of(int(i)) for i in missing]
            full[missing] = encoder.encode_labels(texts, INTERNAL_TEMPLATES).embeddings
        else:
            full = tree_mean_fill(full, has_row, columns)
    model = model_spec(info)
    digest = hashlib.sha256(
        spec.digest(info.fingerprint).encode() + hashlib.sha256(full.tobytes()).digest()
    ).hexdigest()
    return store.create_version(
        NewVersion(
            labelset=name,
            model=model,
            labels=columns,
            embeddings=full,
            templates=(),
            digest=digest,
            # Keep the precision the user gave: fp16 input stays fp16, anything else fp32.
            dtype="float16" if matrix.dtype == np.float16 else "float32",
            rank_names=spec.rank_names,
            source=f"import:{Path(source).name}"[:200],
            index_spec=index_spec,
        )
    )
