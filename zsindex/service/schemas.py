"""Pydantic models of the HTTP API; they drive ``/openapi.json``.

Request models forbid unknown fields, so a request cannot smuggle a ``path``, ``file`` or ``url``
field past validation. Fields that name things the server resolves (``model``, ``pretrained``,
``plugin``, a template-set name) must be plain names: never a server-side path or a URL.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zsindex import options
from zsindex.options import MAX_BEAM, MAX_K, LabelNames, LabelSource

# A plain name: letters, digits and . _ - (no '/', '\\', ':', '~', no leading '.').
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def looks_like_path_or_url(value: str) -> bool:
    """Whether ``value`` could name a file, a directory or a URL on the server."""
    if _URL_LIKE.match(value):
        return True
    return (
        "/" in value
        or "\\" in value
        or value.startswith(("~", "."))
        or ".." in value
        or "\x00" in value
    )


def check_plain_name(value: str | None, field: str) -> str | None:
    """``value`` if it is a plain name, else ``ValueError`` (never a path or a URL)."""
    if value is None:
        return None
    if looks_like_path_or_url(value) or not _PLAIN_NAME.fullmatch(value):
        raise ValueError(
            f"{field} must be a plain name (letters, digits, '.', '_', '-'); server-side paths "
            "and URLs are not accepted over HTTP"
        )
    return value


Finite = Annotated[float, Field(allow_inf_nan=False)]
Mode = Literal["flat", "beam", "marginal", "chils", "pruned"]
Activation = Literal["softmax", "sigmoid"]


class Error(BaseModel):
    """Every error answer."""

    code: str = Field(description="Stable machine-readable code, e.g. 'not_found'.")
    message: str = Field(description="One line for people.")


class ClassifyOptions(BaseModel):
    """Options shared by JSON and multipart classify requests."""

    model_config = ConfigDict(extra="forbid")

    labelset: str = Field(
        min_length=1,
        max_length=75,  # a 64-character name, '@' and a 10-digit version
        description="Label set name; NAME@N classifies against exactly version N.",
    )
    k: int = Field(5, ge=1, le=MAX_K, description="Predictions per image.")
    mode: Mode = "flat"
    rank: str | int | None = Field(None, description="Named rank or depth to stop at (trees).")
    beam: int | None = Field(
        None, ge=1, le=MAX_BEAM, description="Nodes kept per level (beam mode)."
    )
    within: str | None = Field(
        None, min_length=1, max_length=1000, description="Restrict to this node's subtree."
    )
    min_confidence: Finite | None = Field(None, ge=0.0, le=1.0)
    reject_below: Finite | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description='"None of these": results whose top probability is below this are marked '
        '"rejected": true (their predictions stay listed).',
    )
    activation: Activation = "softmax"
    fast_decode: bool | None = Field(
        None,
        description="Decode JPEGs at a reduced scale (faster, not bit-exact); default: the "
        "server's ZSINDEX_FAST_DECODE (off).",
    )
    on_error: Literal["raise", "report"] = Field(
        "report",
        description="'report' (default): an image that cannot be read gets a result with "
        "'error' and 'error_code' and no predictions, and the others are classified; 'raise': "
        "the request fails with that image's 413/415/422.",
    )

    @field_validator("rank")
    @classmethod
    def _rank(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if value.isdigit():
                return int(value)
        if isinstance(value, int) and value < 0:
            raise ValueError("rank depth must be at least 0")
        return value

    def to_options(self) -> options.ClassifyOptions:
        """The one options object every layer takes."""
        return options.ClassifyOptions(
            k=self.k,
            mode=self.mode,
            rank=self.rank,
            beam=self.beam,
            within=self.within,
            min_confidence=self.min_confidence,
            activation=self.activation,
            fast_decode=self.fast_decode,
            reject_below=self.reject_below,
        ).check()


class ClassifyJsonRequest(ClassifyOptions):
    """``POST /v1/classify`` as JSON: exactly one of ``images`` or ``embeddings``."""

    images: list[str] | None = Field(
        None,
        min_length=1,
        description="Base64-encoded image files (PNG, JPEG, …) or data:image/...;base64, URLs."
        " Never paths or other URLs.",
    )
    embeddings: list[list[Finite]] | None = Field(
        None, min_length=1, description="L2-normalised image embeddings, one row per image."
    )

    @model_validator(mode="after")
    def _one_input(self) -> ClassifyJsonRequest:
        if (self.images is None) == (self.embeddings is None):
            raise ValueError("give exactly one of 'images' (base64) or 'embeddings'")
        return self


class ClassifyMultipartRequest(BaseModel):
    """``POST /v1/classify`` as ``multipart/form-data`` (documentation only)."""

    labelset: str
    k: int = 5
    mode: Mode = "flat"
    rank: str | None = None
    beam: int | None = None
    within: str | None = None
    min_confidence: float | None = None
    reject_below: float | None = None
    activation: Activation = "softmax"
    fast_decode: bool | None = None
    on_error: Literal["raise", "report"] = "report"
    images: list[bytes] = Field(
        description="One or more image files; each part's filename is echoed as 'image'.",
        json_schema_extra={"items": {"type": "string", "format": "binary"}},
    )


class PredictionOut(BaseModel):
    label: str
    probability: float
    score: float


class PathStepOut(BaseModel):
    rank: str
    label: str
    probability: float


class ClassificationOut(BaseModel):
    """One image's result, shaped like ``zsindex classify --json``."""

    image: str = Field(description="The upload's filename, or the image's index as a string.")
    labelset: str
    version: int = Field(description="The label-set version used (one per response).")
    predictions: list[PredictionOut]
    path: list[PathStepOut] | None = Field(None, description="Hierarchical modes only.")
    exact_probabilities: bool | None = None
    probability_error: float | None = Field(
        None, description="pruned mode: true probabilities lie in [p / (1 + e), p]."
    )
    error: str | None = None
    error_code: str | None = None
    rejected: bool = Field(
        False, description="The top probability fell below reject_below (none of these)."
    )
    probability_bound: float | None = Field(
        None,
        description="Set when the normaliser was bounded (int8 scan copy): every probability is"
        " within this relative error of the exact one (at most 1e-3).",
    )


LabelsValue = list[str] | dict[str, list[str]]


class LabelSetCreate(BaseModel):
    """``POST /v1/labelsets``: one source — ``labels``, ``plugin`` or ``format`` + ``content``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    labels: LabelsValue | None = Field(
        None, description="Label names, or {label: [prompts]} (CuPL)."
    )
    templates: list[str] | str | None = Field(
        None, description="Template strings with {} / {c}, or a named set (e.g. 'simple-7')."
    )
    parents: dict[str, str | None] | None = Field(
        None, description="child label → parent label (makes a tree); null makes a root."
    )
    model: str | None = None
    pretrained: str | None = Field(None, description="A pretrained tag; never a path or URL.")
    plugin: str | None = Field(None, description="An installed label-set plugin's name.")
    format: Literal["text", "csv", "json", "yaml", "taxonomy-csv"] | None = None
    content: str | None = Field(None, description="A label file's text (with 'format').")
    node_text: Literal["name", "path"] = "name"
    allow_duplicates: bool = False
    strict: bool = False
    index: str | None = Field(
        None,
        max_length=200,
        description="Search index for this version (e.g. 'exact', 'ivf1024', 'hnsw32,fp16'); "
        "default: the server's ZSINDEX_INDEX.",
    )

    @field_validator("model", "pretrained", "plugin")
    @classmethod
    def _plain(cls, value: str | None, info: Any) -> str | None:
        return check_plain_name(value, info.field_name)

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str] | str | None) -> list[str] | str | None:
        if isinstance(value, str):
            from zsindex.labels.templates import TEMPLATE_SET_NAMES

            if value not in TEMPLATE_SET_NAMES:  # never a file on the server
                raise ValueError(
                    f"templates must be a list of templates or one of the named sets "
                    f"{', '.join(TEMPLATE_SET_NAMES)}; files on the server are not accepted"
                )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> LabelSetCreate:
        sources = [
            self.labels is not None,
            self.plugin is not None,
            self.content is not None or self.format is not None,
        ]
        if sum(sources) != 1:
            raise ValueError("give exactly one source: labels, plugin, or format with content")
        if (self.content is None) != (self.format is None):
            raise ValueError("'format' and 'content' go together")
        return self

    def to_source(self) -> LabelSource:
        """The label source this request names."""
        parents = self.parents
        if parents is not None and any(p is None for p in parents.values()):
            # null makes a root: the same as leaving the label out of the mapping.
            parents = {child: p for child, p in parents.items() if p is not None}
        return LabelSource(
            labels=self.labels,
            parents=parents,  # type: ignore[arg-type]  # None values were dropped above
            plugin=self.plugin,
            content=self.content,
            format=self.format,
            node_text=self.node_text,
            allow_duplicates=self.allow_duplicates,
        ).check()


class RollbackRequest(BaseModel):
    """``POST /v1/labelsets/{name}/rollback``: publish an old version as a new current one."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, strict=True, description="The version whose content to serve.")


class EmbeddingsImport(BaseModel):
    """``PUT /v1/labelsets/{name}/embeddings`` (extension): register precomputed embeddings."""

    model_config = ConfigDict(extra="forbid")

    names: list[str] | None = Field(None, min_length=1, description="One name per row.")
    parents: list[str | int | None] | None = Field(
        None, description="Per row: the parent's name or row index, null for a root (a tree)."
    )
    names_content: str | None = Field(
        None, description="Instead of names: a names file's text (text, JSON or CSV)."
    )
    names_format: Literal["text", "json", "csv"] | None = None
    embed_internal: Literal["mean", "text"] = "mean"
    index: str | None = Field(None, max_length=200, description="As for POST /v1/labelsets.")
    model: str | None = None
    pretrained: str | None = None
    dtype: Literal["float32", "float16"] = "float32"
    shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=2, max_length=2)
    data: str = Field(description="Base64 of the little-endian matrix, row-major.")

    @model_validator(mode="after")
    def _one_names(self) -> EmbeddingsImport:
        if (self.names is None) == (self.names_content is None):
            raise ValueError("give exactly one of 'names' or 'names_content'")
        return self

    def to_names(self) -> LabelNames:
        """The imported rows' names."""
        return LabelNames(
            names=self.names,
            parents=self.parents,
            content=self.names_content,
            format=self.names_format,
            content_name="names_content",
        ).check()

    @field_validator("model", "pretrained")
    @classmethod
    def _plain(cls, value: str | None, info: Any) -> str | None:
        return check_plain_name(value, info.field_name)


class EmbeddingsOut(BaseModel):
    """``GET /v1/labelsets/{name}/embeddings`` (extension)."""

    name: str
    names: list[str] = Field(description="Each node's own name, in registration order.")
    dtype: Literal["float32"] = "float32"
    shape: list[int]
    data: str = Field(description="Base64 of the little-endian float32 matrix, row-major.")


class LabelTreeOut(BaseModel):
    """``GET /v1/labelsets/{name}/tree``: the structure, row for row with the embeddings."""

    names: list[str]
    parents: list[int] = Field(description="Parent row index per row; -1 for a root.")
    depths: list[int]
    ranks: list[str | None]
    rank_names: list[str] = []


class Limits(BaseModel):
    """``GET /v1/limits``: what one request may carry (clients split larger calls)."""

    max_images_per_request: int
    max_embeddings_per_request: int
    max_body_bytes: int


class LabelSetSummary(BaseModel):
    name: str
    version: int
    num_labels: int
    model: str


class LabelSetDetail(LabelSetSummary):
    pretrained: str | None = None
    templates: list[str] = []
    digest: str = ""
    depth: int = 1
    rank_names: list[str] = []
    dim: int = 0
    num_truncated: int = 0
    created_at: str = ""
    current: bool = True
    index: str = ""
    unchanged: bool = False
    rollback_of: int | None = None
    temperature: float = 1.0
    provenance: dict[str, Any] = {}


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    detail: dict[str, Any] = {}
