"""Public result types shared by the in-process client, the HTTP client and the service.

Each type converts to and from the JSON shapes of DESIGN.md §3, so a result read over HTTP is
equal to the one computed in process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """One candidate label: ``score`` is the cosine similarity, ``probability`` its softmax
    (or sigmoid) probability."""

    label: str
    probability: float
    score: float


@dataclass(frozen=True)
class PathStep:
    """One level of a hierarchical prediction."""

    rank: str
    label: str
    probability: float


@dataclass(frozen=True)
class ClassificationResult:
    """The classification of one image against one label-set version."""

    image: str
    labelset: str
    version: int
    predictions: list[Prediction]
    path: list[PathStep] | None = None
    exact_probabilities: bool = True
    error: str | None = None
    error_code: str | None = None
    rejected: bool = False
    """"None of these": the top probability fell below ``reject_below`` (the predictions
    stay listed, so users see what fell short)."""
    probability_bound: float | None = None
    """Set when the softmax normaliser was bounded, not summed (the int8 scan copy): every
    probability is within this relative error of the exact one (at most 1e-3)."""
    probability_error: float | None = None
    """``pruned`` mode: ``e`` such that each true probability lies in ``[p / (1 + e), p]``
    (0 when the normaliser is exact)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "image": self.image,
            "labelset": self.labelset,
            "version": self.version,
            "predictions": [asdict(p) for p in self.predictions],
            "rejected": self.rejected,
        }
        if self.path is not None:
            out["path"] = [asdict(s) for s in self.path]
        if not self.exact_probabilities:
            out["exact_probabilities"] = False
        if self.probability_bound is not None:
            out["probability_bound"] = self.probability_bound
        if self.probability_error is not None:
            out["probability_error"] = self.probability_error
        if self.error is not None:
            out["error"] = self.error
            out["error_code"] = self.error_code
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassificationResult:
        path = data.get("path")
        return cls(
            image=data["image"],
            labelset=data["labelset"],
            version=int(data["version"]),
            predictions=[Prediction(**p) for p in data["predictions"]],
            path=[PathStep(**s) for s in path] if path is not None else None,
            exact_probabilities=bool(data.get("exact_probabilities", True)),
            error=data.get("error"),
            error_code=data.get("error_code"),
            rejected=bool(data.get("rejected", False)),
            probability_bound=data.get("probability_bound"),
            probability_error=(
                float(data["probability_error"])
                if data.get("probability_error") is not None
                else None
            ),
        )


@dataclass(frozen=True)
class LabelSetInfo:
    """A label set's current (or a historical) version."""

    name: str
    version: int
    num_labels: int
    model: str
    pretrained: str | None = None
    templates: list[str] = field(default_factory=list)
    digest: str = ""
    depth: int = 1
    rank_names: list[str] = field(default_factory=list)
    dim: int = 0
    num_truncated: int = 0
    created_at: str = ""
    current: bool = True
    index: str = ""
    """The search index this version asked for (``""``: the serving setting decides)."""
    unchanged: bool = False
    """Set on the answer to a registration whose content was already current: nothing new was
    stored and this is that version (``to_dict`` has the key only then)."""
    rollback_of: int | None = None
    """The version whose content this one serves again (``labels rollback``), else ``None``."""
    model_fingerprint: str = ""
    """The SHA-256 of the model's weights: stored image embeddings must come from the same."""
    temperature: float = 1.0
    """Divides the model's logit scale in this version's probabilities (``calibrate``)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """How the version was made: ``tune`` (source version, alpha, example counts, image
    digests) and ``calibration`` (temperature, fit, suggested ``reject_below``); empty for a
    plain registration."""

    def to_dict(self, *, detail: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "num_labels": self.num_labels,
            "model": self.model,
        }
        if detail:
            out.update(
                pretrained=self.pretrained,
                templates=list(self.templates),
                digest=self.digest,
                depth=self.depth,
                rank_names=list(self.rank_names),
                dim=self.dim,
                num_truncated=self.num_truncated,
                created_at=self.created_at,
                current=self.current,
                index=self.index,
                rollback_of=self.rollback_of,
                model_fingerprint=self.model_fingerprint,
                temperature=self.temperature,
                provenance=self.provenance,
            )
        if self.unchanged:
            out["unchanged"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSetInfo:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class LabelTree:
    """The structure of a label-set version, row for row with :meth:`Client.embeddings`.

    Attributes:
        names: each node's own name.
        parents: each node's parent as a row index, ``-1`` for a root (all ``-1``: a flat set).
        depths: 1 for roots, 2 for their children, ...
        ranks: each node's rank name, or ``None``.
        rank_names: rank names by depth (``rank_names[0]`` names depth 1), possibly empty.
    """

    names: list[str]
    parents: list[int]
    depths: list[int]
    ranks: list[str | None]
    rank_names: list[str] = field(default_factory=list)

    @property
    def is_tree(self) -> bool:
        """Whether any node has a parent."""
        return any(p >= 0 for p in self.parents)

    def children(self, row: int) -> list[int]:
        """Rows whose parent is ``row``."""
        return [i for i, p in enumerate(self.parents) if p == row]

    def leaves(self) -> list[int]:
        """Rows without children, in row order (every row of a flat set)."""
        has_child = set(self.parents)
        return [i for i in range(len(self.names)) if i not in has_child]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelTree:
        return cls(
            names=list(data["names"]),
            parents=[int(p) for p in data["parents"]],
            depths=[int(d) for d in data["depths"]],
            ranks=list(data["ranks"]),
            rank_names=list(data.get("rank_names", [])),
        )
