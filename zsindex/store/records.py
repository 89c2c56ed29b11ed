"""Plain records the store hands out (no ORM object leaves ``zsindex.store``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    """What identifies a model and what classification needs from it without loading it."""

    name: str
    pretrained: str | None
    weights_sha256: str
    dim: int
    logit_scale: float
    logit_bias: float | None = None
    context_length: int = 77


@dataclass(frozen=True)
class ModelRecord(ModelSpec):
    id: int = 0


@dataclass(frozen=True)
class LabelColumns:
    """A version's labels as columns, in position order.

    ``parents[i]`` is the position of label i's parent or -1 for a root; ``depths`` start at 1.
    """

    names: list[str]
    parents: np.ndarray  # int64 [N]
    depths: np.ndarray  # int32 [N]
    ranks: list[str | None]
    prompts: list[tuple[str, ...] | None]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def flat(
        cls, names: list[str], prompts: list[tuple[str, ...] | None] | None = None
    ) -> LabelColumns:
        n = len(names)
        return cls(
            names=list(names),
            parents=np.full(n, -1, dtype=np.int64),
            depths=np.ones(n, dtype=np.int32),
            ranks=[None] * n,
            prompts=list(prompts) if prompts is not None else [None] * n,
        )

    @property
    def is_tree(self) -> bool:
        return bool(len(self.parents)) and bool((self.parents >= 0).any())


@dataclass(frozen=True)
class NewVersion:
    """Everything needed to write one immutable label-set version."""

    labelset: str
    model: ModelSpec
    labels: LabelColumns
    embeddings: np.ndarray  # [N, dim], L2-normalised, float32 or float16
    templates: tuple[str, ...]
    digest: str
    dtype: str = "float16"
    rank_names: tuple[str, ...] = ()
    num_truncated: int = 0
    source: str = ""
    index_spec: str = ""
    temperature: float = 1.0
    provenance: str = ""
    """JSON text (see :mod:`zsindex.catalog.tuning`), or ``""``."""


@dataclass(frozen=True)
class VersionRecord:
    """One label-set version as readers see it."""

    labelset: str
    version_id: int
    version: int
    status: str
    model: ModelRecord
    digest: str
    templates: tuple[str, ...]
    num_labels: int
    depth: int
    rank_names: tuple[str, ...]
    dim: int
    dtype: str
    num_truncated: int
    source: str
    created_at: dt.datetime
    is_current: bool = field(default=False)
    index_spec: str = ""
    """The index asked for at registration (canonical spec), or ``""``: the setting decides."""
    temperature: float = 1.0
    """Divides the model's logit scale in this version's probabilities (``calibrate``)."""
    provenance: str = ""
    """How the version was made, as JSON text (``labels tune``, ``calibrate``), or ``""``."""
