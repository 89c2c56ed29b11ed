"""``HttpBackend``: the :class:`~zsindex.client.Backend` protocol over the HTTP API.

``Client(base_url, api_key=...)`` uses it. Error answers (``{"code", "message"}``) come back as
the same :mod:`zsindex.errors` class the server raised, found by ``code`` in ``ERRORS_BY_CODE``.

Images given as paths are read *here*, by the client; the server never opens paths or URLs.
PIL images are sent as PNG bytes. Precomputed embeddings are sent as JSON.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from zsindex.errors import (
    ERRORS_BY_CODE,
    AuthError,
    ImageError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    StoreError,
    UnsupportedImageFormatError,
    ZsindexError,
)
from zsindex.results import ClassificationResult, LabelSetInfo

_BY_STATUS: dict[int, type[ZsindexError]] = {
    401: AuthError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    415: UnsupportedImageFormatError,
    422: InvalidInputError,
    429: OverloadedError,
    503: OverloadedError,
}


def _error_from_response(response: httpx.Response) -> ZsindexError:
    code: str | None = None
    message = f"HTTP {response.status_code} from {response.request.method} {response.url.path}"
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("code"), str):
            code = data["code"]
        if isinstance(data.get("message"), str):
            message = data["message"]
    cls = ERRORS_BY_CODE.get(code) if code else None
    if cls is None:
        cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = StoreError if response.status_code in (502, 504) else ZsindexError
    return cls(message)


def _image_part(item: Any, index: int) -> tuple[str, bytes, str]:
    """(filename, bytes, content type) of one image given as a path, bytes or a PIL image."""
    if isinstance(item, str | Path):
        path = Path(item)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{item}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{item}: is a directory, not an image") from None
        except OSError as exc:
            raise ImageError(f"{item}: cannot read ({exc.strerror or exc})") from None
        return str(item), data, "application/octet-stream"
    if isinstance(item, bytes | bytearray | memoryview):
        return str(index), bytes(item), "application/octet-stream"
    from PIL import Image

    if isinstance(item, Image.Image):
        buf = io.BytesIO()
        image = item
        if image.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
            image = image.convert("RGB")
        image.save(buf, format="PNG")
        return str(index), buf.getvalue(), "image/png"
    raise InvalidInputError(
        f"images[{index}] must be a path, bytes or a PIL image, not {type(item).__name__}"
    )


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class HttpBackend:
    """The Backend protocol over HTTP.

    Args:
        base_url: URL of a running ``zsindex serve``, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <key>`` (needed for writes, and for reads when
            the server requires it). Never put it in a URL.
        timeout: seconds per request.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, follow_redirects=False
        )

    def __repr__(self) -> str:  # never shows the key
        return f"HttpBackend({self.base_url!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise OverloadedError(f"{method} {url} timed out: {exc}") from None
        except httpx.HTTPError as exc:
            raise StoreError(f"cannot reach zsindex at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ZsindexError(f"{method} {url}: the server did not answer JSON") from None

    @staticmethod
    def _path(name: str) -> str:
        from urllib.parse import quote

        return f"/v1/labelsets/{quote(name, safe='')}"

    # -- label sets -----------------------------------------------------------------------------

    def add_labelset(self, name: str, **options: Any) -> LabelSetInfo:
        body: dict[str, Any] = {"name": name}
        for key, value in options.items():
            if value is None or (key in ("allow_duplicates", "strict") and value is False):
                continue
            if key == "progress":
                continue  # a local-only option
            if key == "labels" and isinstance(value, Mapping):
                value = {str(k): list(v) for k, v in value.items()}
            elif key == "parents" and isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple | list):
                value = list(value)
            body[key] = value
        return LabelSetInfo.from_dict(self._json("POST", "/v1/labelsets", json=body))

    def import_labelset(self, name: str, **options: Any) -> LabelSetInfo:
        matrix = np.asarray(options["embeddings"], dtype=np.float32)
        if matrix.ndim != 2:
            raise InvalidInputError("embeddings must be a 2-D matrix")
        names = [str(n) for n in options["names"]]
        if matrix.shape[0] != len(names) and matrix.shape[1] == len(names):
            matrix = matrix.T  # given as [dim, N]
        arr = np.ascontiguousarray(matrix, dtype="<f4")
        body: dict[str, Any] = {
            "names": names,
            "dtype": "float32",
            "shape": list(arr.shape),
            "data": base64.b64encode(arr.tobytes()).decode("ascii"),
        }
        if options.get("parents") is not None:
            body["parents"] = list(options["parents"])
        if options.get("model") is not None:
            body["model"] = options["model"]
        if options.get("pretrained") is not None:
            body["pretrained"] = options["pretrained"]
        data = self._json("PUT", f"{self._path(name)}/embeddings", json=body)
        return LabelSetInfo.from_dict(data)

    def labelsets(self) -> list[LabelSetInfo]:
        return [LabelSetInfo.from_dict(d) for d in self._json("GET", "/v1/labelsets")]

    def labelset(self, name: str) -> LabelSetInfo:
        return LabelSetInfo.from_dict(self._json("GET", self._path(name)))

    def history(self, name: str) -> list[LabelSetInfo]:
        return [LabelSetInfo.from_dict(d) for d in self._json("GET", f"{self._path(name)}/history")]

    def delete_labelset(self, name: str) -> None:
        self._request("DELETE", self._path(name))

    def embeddings(self, name: str) -> tuple[list[Any], np.ndarray]:
        data = self._json("GET", f"{self._path(name)}/embeddings")
        rows, cols = (int(x) for x in data["shape"])
        raw = base64.b64decode(data["data"])
        matrix = np.frombuffer(raw, dtype="<f4").reshape(rows, cols).astype(np.float32)
        return list(data["names"]), matrix

    # -- classification -------------------------------------------------------------------------

    def classify(self, **options: Any) -> list[ClassificationResult]:
        """``classify(labelset=, images=|embeddings=, image_names=None, k=, mode=, ...)``."""
        labelset: str = options.pop("labelset")
        images: Sequence[Any] | None = options.pop("images", None)
        embeddings: np.ndarray | None = options.pop("embeddings", None)
        image_names: Sequence[str] | None = options.pop("image_names", None)
        if (images is None) == (embeddings is None):
            raise InvalidInputError("give either images or embeddings, not both or neither")
        fields = {k: v for k, v in options.items() if v is not None}
        if embeddings is not None:
            matrix = np.asarray(embeddings, dtype=np.float32)
            if matrix.ndim == 1:
                matrix = matrix[None, :]
            if matrix.ndim != 2:
                raise InvalidInputError("embeddings must be a 2-D matrix [n, dim]")
            if not np.isfinite(matrix).all():
                raise InvalidInputError("embeddings contain NaN or infinite values")
            body = {"labelset": labelset, **fields, "embeddings": matrix.tolist()}
            data = self._json("POST", "/v1/classify", json=body)
        else:
            assert images is not None
            if not images:
                raise InvalidInputError("no images to classify")
            files = []
            for i, item in enumerate(images):
                filename, content, ctype = _image_part(item, i)
                if image_names is not None:
                    filename = str(image_names[i])
                files.append(("images", (filename, content, ctype)))
            form = {"labelset": labelset, **{k: _form_value(v) for k, v in fields.items()}}
            data = self._json("POST", "/v1/classify", data=form, files=files)
        return [ClassificationResult.from_dict(d) for d in data]

    def close(self) -> None:
        self._http.close()
