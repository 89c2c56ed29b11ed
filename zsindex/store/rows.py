"""Row mappings from SQL → the plain records the store hands out (no ORM object leaves)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from zsindex.store.records import ModelRecord, VersionRecord


def iso_utc(value: dt.datetime | None) -> str:
    """A timestamp as naive UTC ISO text (``""`` for none)."""
    # SQLite hands back naive datetimes, PostgreSQL aware ones: compare them as UTC text.
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat()


MODEL_COLUMNS = (
    "id",
    "name",
    "pretrained",
    "weights_sha256",
    "dim",
    "logit_scale",
    "logit_bias",
    "context_length",
)
"""The ``models`` columns a :class:`ModelRecord` is made of."""
MODEL_PREFIX = "m_"
"""How a version query labels its model's columns (``m_dim`` …), apart from the version's."""


def model_record(m: Any, prefix: str = "") -> ModelRecord:
    """A ``models`` row mapping (its columns named ``prefix + column``) as a record."""
    values = {c: m[prefix + c] for c in MODEL_COLUMNS}
    values["pretrained"] = values["pretrained"] or None
    return ModelRecord(**values)


def version_record(m: Any) -> VersionRecord:
    """A row of :meth:`Store._version_query` (version, label set and model columns)."""
    return VersionRecord(
        labelset=m["labelset"],
        version_id=m["id"],
        version=m["version"],
        status=m["status"],
        model=model_record(m, MODEL_PREFIX),
        digest=m["digest"],
        templates=tuple(json.loads(m["templates"])),
        num_labels=m["num_labels"],
        depth=m["depth"],
        rank_names=tuple(json.loads(m["rank_names"])),
        dim=m["dim"],
        dtype=m["dtype"],
        num_truncated=m["num_truncated"],
        source=m["source"],
        created_at=m["created_at"],
        is_current=m["current_version_id"] == m["id"],
        index_spec=m["index_spec"],
        temperature=float(m["temperature"]),
        provenance=m["provenance"] or "",
    )


def version_key(record: VersionRecord) -> tuple[int, str]:
    """The key :meth:`Store.current_version_keys` reports for ``record``."""
    return (record.version_id, iso_utc(record.created_at))
