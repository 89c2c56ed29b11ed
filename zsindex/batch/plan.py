"""A batch job's plan: its inputs in order, its parts, and the label-set versions pinned at start.

Each ``--labels`` reference is resolved once, when the job starts, to the version current then
(or the one ``NAME@N`` names); every row names that version and every worker classifies with
``NAME@N``, so a version registered mid-job changes nothing. The manifest is the plan's
identity: a rerun with the same manifest resumes, any other is refused (see
:class:`~zsindex.batch.output.OutputFolder`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from zsindex.batch.inputs import InputItem
from zsindex.errors import InvalidInputError
from zsindex.labels.refs import parse_ref
from zsindex.options import ClassifyOptions

if TYPE_CHECKING:
    from zsindex.local import LocalBackend

FORMAT = "zsindex-batch/1"
DEFAULT_PART_SIZE = 1000
OPTION_KEYS = (
    "k",
    "mode",
    "rank",
    "beam",
    "within",
    "min_confidence",
    "activation",
    "reject_below",
)


@dataclass(frozen=True)
class LabelSetRequest:
    """One ``--labels`` of a job: a reference (``NAME`` or ``NAME@N``) and its options."""

    ref: str
    options: ClassifyOptions = field(default_factory=ClassifyOptions)

    @classmethod
    def parse(cls, text: str, defaults: ClassifyOptions) -> LabelSetRequest:
        """``NAME[@N][:key=value,...]``: options after the colon override ``defaults`` for
        this label set (keys: k, mode, rank, beam, within, min_confidence, activation,
        reject_below)."""
        ref, _, tail = text.partition(":")
        if not ref:
            raise InvalidInputError(f"--labels {text!r}: give a label set name")
        values: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in tail.split(","))):
            key, eq, value = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in OPTION_KEYS:
                raise InvalidInputError(
                    f"--labels {text!r}: {pair!r} is not KEY=VALUE with KEY one of "
                    + ", ".join(OPTION_KEYS)
                )
            values[key] = _option_value(key, value.strip(), text)
        return cls(ref=ref, options=replace(defaults, **values).check())


def _option_value(key: str, value: str, text: str) -> Any:
    try:
        if key in ("k", "beam"):
            return int(value)
        if key in ("min_confidence", "reject_below"):
            return float(value)
        if key == "rank":
            return int(value) if value.isdigit() else value
    except ValueError:
        raise InvalidInputError(
            f"--labels {text!r}: {key} must be a number, got {value!r}"
        ) from None
    return value


@dataclass(frozen=True)
class LabelSetTask:
    """A label set pinned for the job: classify with :attr:`pinned` (``NAME@N``)."""

    name: str
    version: int
    digest: str
    model: str
    pretrained: str
    fingerprint: str
    dim: int
    options: ClassifyOptions

    @property
    def pinned(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def model_key(self) -> tuple[str, str, str]:
        return (self.model, self.pretrained, self.fingerprint)

    def to_manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "model": self.model,
            "pretrained": self.pretrained,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "options": self.options.to_dict(),
        }

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> LabelSetTask:
        return cls(
            name=data["name"],
            version=int(data["version"]),
            digest=data["digest"],
            model=data["model"],
            pretrained=data["pretrained"],
            fingerprint=data["fingerprint"],
            dim=int(data["dim"]),
            options=ClassifyOptions.from_dict(data["options"]),
        )


def pin_labelsets(backend: LocalBackend, requests: Sequence[LabelSetRequest]) -> list[LabelSetTask]:
    """Resolve each request to the version current now (or the one it names), checking its
    options against it."""
    from zsindex.classify.engine import check_options

    if not requests:
        raise InvalidInputError("give at least one --labels NAME")
    tasks: list[LabelSetTask] = []
    seen: set[str] = set()
    for request in requests:
        name, _ = parse_ref(request.ref)
        if name in seen:
            raise InvalidInputError(f"--labels {name} given twice; give each label set once")
        seen.add(name)
        loaded = backend.resolve(request.ref)
        check_options(loaded, request.options)
        model = loaded.model
        tasks.append(
            LabelSetTask(
                name=loaded.name,
                version=loaded.version,
                digest=loaded.record.digest,
                model=model.name,
                pretrained=model.pretrained or "",
                fingerprint=model.weights_sha256,
                dim=loaded.record.dim,
                options=request.options,
            )
        )
    return tasks


@dataclass(frozen=True)
class JobPlan:
    """Everything a job does, fixed at start.

    Attributes:
        items: the images (or stored embeddings), in order.
        tasks: the pinned label sets.
        part_size: inputs per committed part.
        save_embeddings: also write ``DIR/embeddings``.
        fast_decode: JPEG draft-mode decoding for the whole job.
        from_embeddings: the items are stored embeddings, not images.
    """

    items: Sequence[InputItem]
    tasks: Sequence[LabelSetTask]
    part_size: int = DEFAULT_PART_SIZE
    save_embeddings: bool = False
    fast_decode: bool = False
    from_embeddings: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.part_size <= 1_000_000:
            raise InvalidInputError(f"part size must be 1 to 1000000, got {self.part_size}")
        if self.save_embeddings and self.from_embeddings:
            raise InvalidInputError("--save-embeddings needs images, not stored embeddings")

    @property
    def num_parts(self) -> int:
        return -(-len(self.items) // self.part_size)

    def part(self, number: int) -> range:
        start = number * self.part_size
        return range(start, min(len(self.items), start + self.part_size))

    def inputs_digest(self) -> str:
        h = hashlib.sha256()
        for item in self.items:
            h.update(f"{item.source}\0{item.path}\0{item.offset}\0{item.size}\n".encode())
        return h.hexdigest()

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "inputs": {"count": len(self.items), "sha256": self.inputs_digest()},
            "from_embeddings": self.from_embeddings,
            "labelsets": [t.to_manifest() for t in self.tasks],
            "part_size": self.part_size,
            "num_parts": self.num_parts,
            "save_embeddings": self.save_embeddings,
            "fast_decode": self.fast_decode,
        }
