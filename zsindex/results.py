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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "image": self.image,
            "labelset": self.labelset,
            "version": self.version,
            "predictions": [asdict(p) for p in self.predictions],
        }
        if self.path is not None:
            out["path"] = [asdict(s) for s in self.path]
        if not self.exact_probabilities:
            out["exact_probabilities"] = False
        if self.error is not None:
            out["error"] = self.error
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
            )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSetInfo:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
