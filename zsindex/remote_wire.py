"""The HTTP wire format of :class:`zsindex.remote.HttpBackend`, in one place.

Requests (``?`` marks a key sent only when it differs from its default):

- ``GET /v1/limits`` → ``{"max_images_per_request", "max_embeddings_per_request",
  "max_body_bytes"}`` (404 from an older server: :data:`DEFAULT_LIMITS`).
- ``POST /v1/labelsets`` ← ``{"name", "labels"?, "parents"?, "plugin"?, "content"?, "format"?,
  "allow_duplicates"?, "node_text"?, "templates"?, "model"?, "pretrained"?, "strict"?,
  "index"?}``.
- ``PUT /v1/labelsets/{name}/embeddings`` ← ``{"names"?, "parents"?, "names_content"?,
  "names_format"?, "embed_internal"?, "dtype": "float32" | "float16", "shape": [rows, cols],
  "data": base64 of the little-endian row-major matrix, "model"?, "pretrained"?, "index"?}``.
- ``GET /v1/labelsets/{name}/embeddings`` → ``{"names": [str], "shape", "dtype", "data"}``;
  ``GET /v1/labelsets/{name}/tree`` → :meth:`LabelTree.to_dict`. ``{name}`` may be a pinned
  ``NAME@N`` (``@`` sent as ``%40``) in these two and ``GET /v1/labelsets/{name}``.
- ``POST /v1/labelsets/{name}/rollback`` ← ``{"version": N}`` → the new current version.
- ``POST /v1/classify`` ← multipart (one ``images`` part per image, its filename the image's
  name; fields ``labelset``, each non-default option of :meth:`ClassifyOptions.to_dict` as a
  string, booleans ``true``/``false``, and ``on_error``, always), or JSON ``{"labelset",
  **options, "on_error"?, "embeddings": [[...], ...]}`` → a list of
  :meth:`ClassificationResult.to_dict`.
- Every error answer is ``{"code", "message"}``; the code names the :mod:`zsindex.errors` class.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import numpy as np

from zsindex.errors import InvalidInputError, NotFoundError, TransportError
from zsindex.options import ClassifyOptions, LabelNames, LabelSource, OnError

if TYPE_CHECKING:
    from zsindex.encoders.images import ImageSource

MIB = 1024 * 1024
PART_OVERHEAD = 320
"""Multipart bytes per image besides its data and filename (boundary, part headers)."""
FLOAT_CHARS = 24
"""Most characters of one float32 value in JSON with its separator: ``-1.1754943508222875e-38,``."""


@dataclass(frozen=True)
class ServerLimits:
    """What one request may carry (``GET /v1/limits``)."""

    max_images_per_request: int = 64
    max_embeddings_per_request: int = 4096
    max_body_bytes: int = 32 * MIB

    @classmethod
    def from_json(cls, data: object) -> ServerLimits:
        """Limits from the route's answer; a missing or unusable value keeps its default."""
        if not isinstance(data, Mapping):
            raise TransportError("GET /v1/limits: the answer is not a JSON object")
        values: dict[str, int] = {}
        for key in ("max_images_per_request", "max_embeddings_per_request", "max_body_bytes"):
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                values[key] = value
        return cls(**values)

    @property
    def body_budget(self) -> int:
        """Bytes a request body is packed to: the limit less a margin for form fields."""
        return self.max_body_bytes - min(16 * 1024, self.max_body_bytes // 4)


DEFAULT_LIMITS = ServerLimits()


def labelset_path(ref: str, *, pinnable: bool = False) -> str:
    """A label set's URL path for a read (``pinnable``: ``NAME@N`` too); a name no label set
    can have is not found, with the store's own message, and a bad ``@`` is invalid, as in
    process."""
    from zsindex.labels.refs import parse_ref, pinned_key
    from zsindex.labels.validate import validate_labelset_name

    name, number = parse_ref(ref) if pinnable else (ref, None)
    try:
        validate_labelset_name(name)
    except InvalidInputError:
        raise NotFoundError(
            f"label set {name!r} does not exist (see `zsindex labels list`)"
        ) from None
    return "/v1/labelsets/" + quote(name if number is None else pinned_key(name, number), safe="")


def check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash, if it is an http(s) URL with a host."""
    try:
        url: httpx.URL | None = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise InvalidInputError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
    return base_url.rstrip("/")


def image_part_size(filename: str, data: bytes) -> int:
    """An upper bound of one image part's multipart bytes (a quoted name may triple)."""
    return PART_OVERHEAD + 3 * len(filename.encode()) + len(data)


def embedding_row_bytes(dim: int) -> int:
    """An upper bound of one embedding row's bytes in the compact classify JSON."""
    return FLOAT_CHARS * dim + 2


# -- requests ---------------------------------------------------------------------------------


def labelset_body(
    name: str,
    source: LabelSource,
    templates: Sequence[str] | str | None,
    model: str | None,
    pretrained: str | None,
    strict: bool,
) -> dict[str, Any]:
    """``POST /v1/labelsets``; ``content_name`` names a local file and is not sent."""
    if templates is not None and not isinstance(templates, str):
        templates = list(templates)
    labels = source.labels
    if isinstance(labels, Mapping):
        labels = {k: v if isinstance(v, str) else list(v) for k, v in labels.items()}
    elif labels is not None:
        labels = list(labels)
    body: dict[str, Any] = {
        "name": name,
        "labels": labels,
        "parents": dict(source.parents) if source.parents is not None else None,
        "plugin": source.plugin,
        "content": source.content,
        "format": source.format,
        "allow_duplicates": source.allow_duplicates or None,
        "node_text": source.node_text if source.node_text != "name" else None,
        "templates": templates,
        "model": model,
        "pretrained": pretrained,
        "strict": strict or None,
    }
    return {k: v for k, v in body.items() if v is not None}


def _parent_ref(value: object, index: int) -> str | int | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    raise InvalidInputError(
        f"parents[{index}] must be a parent's name, its row index or None, "
        f"not {type(value).__name__}"
    )


def import_body(
    embeddings: object,
    names: LabelNames,
    model: str | None,
    pretrained: str | None,
    embed_internal: str,
) -> dict[str, Any]:
    """``PUT /v1/labelsets/{name}/embeddings``: the matrix as given (either orientation)."""
    matrix = np.asarray(embeddings)
    if matrix.dtype.kind not in "fiu":
        raise InvalidInputError(f"embeddings must be numbers, got {matrix.dtype}")
    if matrix.ndim != 2:
        raise InvalidInputError(
            "embeddings must be a 2-D matrix ([N, dim] or [dim, N]), "
            f"got shape {list(matrix.shape)}"
        )
    dtype = "float16" if matrix.dtype == np.float16 else "float32"
    data = np.ascontiguousarray(matrix, dtype="<f2" if dtype == "float16" else "<f4")
    body: dict[str, Any] = {
        "names_content": names.content,
        "names_format": names.format,
        "embed_internal": embed_internal if embed_internal != "mean" else None,
        "dtype": dtype,
        "shape": list(data.shape),
        "data": base64.b64encode(data.tobytes()).decode("ascii"),
        "model": model,
        "pretrained": pretrained,
    }
    if names.names is not None:
        for i, n in enumerate(names.names):
            if not isinstance(n, str):
                raise InvalidInputError(f"names[{i}] must be a string, not {type(n).__name__}")
        body["names"] = list(names.names)
    if names.parents is not None:
        body["parents"] = [_parent_ref(p, i) for i, p in enumerate(names.parents)]
    return {k: v for k, v in body.items() if v is not None}


def embedding_rows(embeddings: object) -> tuple[np.ndarray, np.ndarray | None]:
    """``(the array given, its float32 [n, dim] rows)``: the rows are sent as given (the server
    normalises them once, as in process) and their values are checked here by the in-process
    check (numbers, finite, no all-zero row). The rows are ``None`` for a wrong shape, whose
    in-process message names the label set's dimension."""
    from zsindex.classify.engine import check_embeddings

    try:
        given = np.asarray(embeddings)
    except (ValueError, TypeError):
        raise InvalidInputError(
            "embeddings must be a matrix of numbers (rows of one length)"
        ) from None
    rows = given[None, :] if given.ndim == 1 else given
    if rows.ndim != 2 or 0 in rows.shape:
        return given, None
    check_embeddings(given, int(rows.shape[1]))
    return given, rows.astype(np.float32)


_FORM_ESCAPES = {'"': "%22", **{chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}}
"""What httpx escapes in a multipart filename (HTML5 form encoding); the server keeps them."""


def restore_name(message: str, names: Sequence[str]) -> str:
    """``message`` with an image's name as the server read it (``a%22b.png`` for ``a"b.png``)
    put back as given, where the message starts with it."""
    for name in names:
        seen = "".join(_FORM_ESCAPES.get(c, c) for c in name)
        if seen != name and message.startswith(f"{seen}:"):
            return name + message[len(seen) :]
    return message


def encode_image(source: ImageSource, name: str) -> tuple[str, bytes, str]:
    """One image's multipart part ``(filename, bytes, content type)``: a file is read here with
    the in-process messages; a PIL image is decoded as in process (EXIF orientation, RGB with
    alpha on white) and sent as lossless PNG."""
    from zsindex.encoders.images import load_image, open_source

    if isinstance(source, bytes | bytearray | memoryview):
        return name, bytes(source), "application/octet-stream"
    if isinstance(source, str | Path):
        with open_source(source, name) as fh:
            return name, fh.read(), "application/octet-stream"
    rgb = load_image(source, name_for_errors=name)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    rgb.close()
    return name, buf.getvalue(), "image/png"


def one_line(exc: BaseException) -> str:
    """An exception as one line, ``Type: text``."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _wire_options(options: ClassifyOptions, on_error: OnError) -> dict[str, Any]:
    fields = options.to_dict()
    if on_error != "raise":
        fields["on_error"] = on_error
    return fields


def classify_form(labelset: str, options: ClassifyOptions, on_error: OnError) -> dict[str, str]:
    """The form fields of a multipart ``POST /v1/classify``; ``on_error`` always, since the
    service reports an unreadable image in its result when a request does not say."""
    form = {"labelset": labelset}
    for key, value in _wire_options(options, on_error).items():
        form[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    form["on_error"] = on_error
    return form


def classify_json(
    labelset: str, options: ClassifyOptions, on_error: OnError, rows: np.ndarray
) -> bytes:
    """The compact JSON body of ``POST /v1/classify`` with precomputed embeddings."""
    body = {"labelset": labelset, **_wire_options(options, on_error), "embeddings": rows.tolist()}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


__all__ = [
    "DEFAULT_LIMITS",
    "ServerLimits",
    "check_base_url",
    "classify_form",
    "classify_json",
    "embedding_row_bytes",
    "embedding_rows",
    "encode_image",
    "image_part_size",
    "import_body",
    "labelset_body",
    "one_line",
    "restore_name",
]
