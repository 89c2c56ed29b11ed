"""Stored image embeddings: what ``batch --save-embeddings`` wrote, or a ``.npy`` matrix.

``zsindex classify --embeddings`` and ``zsindex batch --embeddings`` read them and classify at
search speed. Parquet embeddings carry their model's name and fingerprint (its weights'
SHA-256): a label set of another model is refused, as is a dimension that differs. A ``.npy``
matrix carries no model, so only its dimension is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsindex.errors import InvalidInputError


@dataclass(frozen=True)
class StoredEmbeddings:
    """Image embeddings read from files, one row per image.

    Attributes:
        sources: each image's name (its ``source``; a ``.npy`` row: its index).
        vectors: float32 ``[n, dim]``.
        model: the model's name (``None`` for ``.npy``).
        pretrained: the model's pretrained tag or path (``""`` when none).
        fingerprint: the model's weights SHA-256 (``None`` for ``.npy``).
        origin: how messages name the files.
        skipped: rows without an embedding (images that could not be read when they were
            saved), not in ``vectors``.
    """

    sources: list[str]
    vectors: np.ndarray
    model: str | None
    pretrained: str
    fingerprint: str | None
    origin: str
    skipped: int = 0

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def check_model(self, labelset: str, model: str, fingerprint: str, dim: int) -> None:
        """Refuse a label set whose model is not the embeddings' own."""
        if self.dim != dim:
            raise InvalidInputError(
                f"{self.origin}: embeddings of dimension {self.dim}, but label set {labelset} "
                f"has dimension {dim} (model {model}); embed the images with that model"
            )
        if self.fingerprint is not None and self.fingerprint != fingerprint:
            raise InvalidInputError(
                f"{self.origin}: embeddings of model {self.model} (fingerprint "
                f"{self.fingerprint[:12]}), but label set {labelset} uses model {model} "
                f"(fingerprint {fingerprint[:12]}); re-embed the images with "
                "`zsindex batch --save-embeddings` for that label set"
            )


def parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*.parquet")
            if not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
        )
        if not files:
            raise InvalidInputError(f"{path}: no Parquet files of embeddings in this folder")
        return files
    return [path]


def read_stored(path: Path) -> StoredEmbeddings:
    """Read ``.npy`` or Parquet embeddings (a file, or a folder of parts in name order).

    Raises:
        InvalidInputError: missing, unreadable, not a matrix, missing columns, mixed models.
    """
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file or folder of embeddings")
    if path.is_file() and path.suffix.lower() == ".npy":
        return _read_npy(path)
    return _read_parquet(path)


def _read_npy(path: Path) -> StoredEmbeddings:
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not a readable .npy matrix ({exc})") from None
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InvalidInputError(f"{path}: expected a matrix [n, dim], got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise InvalidInputError(f"{path}: expected floating-point embeddings, got {matrix.dtype}")
    vectors = np.ascontiguousarray(matrix, dtype=np.float32)
    return StoredEmbeddings(
        sources=[str(i) for i in range(len(vectors))],
        vectors=vectors,
        model=None,
        pretrained="",
        fingerprint=None,
        origin=str(path),
    )


def _read_parquet(path: Path) -> StoredEmbeddings:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sources: list[str] = []
    blocks: list[np.ndarray] = []
    models: set[tuple[str, str, str]] = set()
    skipped = 0
    for file in parquet_files(path):
        try:
            table = pq.read_table(file)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise InvalidInputError(f"{file}: not a readable Parquet file ({exc})") from None
        missing = [c for c in ("source", "embedding") if c not in table.column_names]
        if missing:
            raise InvalidInputError(
                f"{file}: no column {', '.join(missing)}; give embeddings written by "
                "`zsindex batch --save-embeddings` (or a .npy matrix)"
            )
        column = table.column("embedding").combine_chunks()
        if not pa.types.is_fixed_size_list(column.type) and not pa.types.is_list(column.type):
            raise InvalidInputError(f"{file}: column 'embedding' is not a list of floats")
        valid = np.asarray(column.is_valid())
        skipped += int((~valid).sum())
        kept = column.filter(pa.array(valid))
        if len(kept):
            values = np.asarray(kept.flatten(), dtype=np.float32)
            if values.size % len(kept):
                raise InvalidInputError(f"{file}: embeddings of different lengths")
            blocks.append(values.reshape(len(kept), -1))
        src = table.column("source").to_pylist()
        sources.extend(s for s, ok in zip(src, valid, strict=True) if ok)
        if "fingerprint" in table.column_names:
            cols = [
                table.column(c).to_pylist() if c in table.column_names else [""] * len(table)
                for c in ("model", "pretrained", "fingerprint")
            ]
            models.update(
                (m or "", p or "", f or "") for m, p, f, ok in zip(*cols, valid, strict=True) if ok
            )
    if not blocks:
        raise InvalidInputError(f"{path}: no embeddings (every row is empty)")
    if len({b.shape[1] for b in blocks}) > 1:
        raise InvalidInputError(f"{path}: embeddings of different dimensions")
    if len(models) > 1:
        raise InvalidInputError(
            f"{path}: embeddings of {len(models)} different models; give one model's at a time"
        )
    name, pretrained, fingerprint = models.pop() if models else (None, "", None)
    return StoredEmbeddings(
        sources=sources,
        vectors=np.concatenate(blocks),
        model=name,
        pretrained=pretrained,
        fingerprint=fingerprint,
        origin=str(path),
        skipped=skipped,
    )
