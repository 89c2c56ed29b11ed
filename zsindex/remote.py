"""``HttpBackend``: the :class:`~zsindex.backend.Backend` protocol over the HTTP API.

``Client(base_url, api_key=...)`` uses it. Every method takes and returns what the in-process
``LocalBackend`` does and raises the same :mod:`zsindex.errors` classes: error answers
(``{"code", "message"}``) come back as the class the server raised; a connection that fails, times
out or answers something that is not zsindex is :class:`~zsindex.errors.TransportError`.

Inputs are checked here before any request, as in process. Images given as paths or files are
read *here*, by the client (the server never opens paths or URLs); PIL images are decoded as in
process (EXIF rotation, RGB) and sent as lossless PNG. Calls larger than one request may carry
(``GET /v1/limits``) are split into several, answered from one label-set version. The request and
answer shapes live in :mod:`zsindex.remote_wire`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import numpy as np

from zsindex import remote_answers as replies
from zsindex import remote_wire as wire
from zsindex.backend import EmbedInternal, ImageInput
from zsindex.classify.pipeline import given_names
from zsindex.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    TransportError,
    ZsindexError,
)
from zsindex.labels.validate import validate_labelset_name
from zsindex.options import ClassifyOptions, LabelNames, LabelSource, OnError
from zsindex.results import ClassificationResult, LabelSetInfo, LabelTree

if TYPE_CHECKING:
    from zsindex.encoders.images import ImageSource

Part = tuple[str, bytes, str]
"""One multipart image: (filename, bytes, content type)."""


class HttpBackend:
    """The Backend protocol over HTTP.

    Args:
        base_url: URL of a running ``zsindex serve``, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <key>`` on every request (needed for writes,
            and for reads where the server requires it); never logged, never in ``repr``.
        timeout: seconds per request (for a client built here).
        http: an ``httpx.Client`` to use as it is (its base URL if it has one, else
            ``base_url``; its transport, proxies and timeouts); it is not closed by
            :meth:`close`.
        transport: an ``httpx`` transport for the client built here.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if http is not None and transport is not None:
            raise InvalidInputError("give an httpx client or a transport, not both")
        self._api_key = api_key or None
        self._timeout: float | None = None
        self._prefix = ""  # prepended to paths when the given client has no base URL
        if http is None:
            self.base_url = wire.check_base_url(base_url)
            self._timeout = timeout
            self._http = httpx.Client(
                base_url=self.base_url, timeout=timeout, transport=transport, follow_redirects=False
            )
        elif str(http.base_url):
            self.base_url = str(http.base_url).rstrip("/")
            self._http = http
        else:
            self.base_url = self._prefix = wire.check_base_url(base_url)
            self._http = http
        self._owns_http = http is None
        self._limits: wire.ServerLimits | None = None
        self._limits_lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"HttpBackend({self.base_url!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        content: bytes | None = None,
        form: dict[str, str] | None = None,
        files: list[tuple[str, Part]] | None = None,
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(
                method,
                self._prefix + path,
                json=json,
                content=content,
                data=form,
                files=files,
                headers=headers,
            )
        except httpx.TimeoutException as exc:
            within = f" within {self._timeout:g} s" if self._timeout is not None else ""
            raise TransportError(
                f"{method} {path} timed out: {self.base_url} did not answer{within} "
                f"({wire.one_line(exc)})"
            ) from None
        except httpx.HTTPError as exc:
            message = f"cannot reach zsindex at {self.base_url}: {wire.one_line(exc)}"
            raise TransportError(message) from None
        status = response.status_code
        if status >= 400:
            raise replies.error_from_response(response)
        if not 200 <= status < 300:
            where = response.headers.get("location")
            raise TransportError(
                f"{method} {path}: HTTP {status}{f' to {where}' if where else ''} is not an "
                f"answer of zsindex; give the service's own URL"
            )
        return response

    def _get(self, path: str) -> Any:
        return self._parse(self._request("GET", path))

    @staticmethod
    def _parse(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            request = response.request
            raise TransportError(
                f"{request.method} {request.url.path}: the answer is not JSON (is "
                f"{request.url.host} a zsindex service?)"
            ) from None

    @staticmethod
    def _write_path(name: str) -> str:
        return f"/v1/labelsets/{quote(validate_labelset_name(name), safe='')}"

    def server_limits(self) -> wire.ServerLimits:
        """What one request may carry, asked once (an older server's 404: the defaults)."""
        with self._limits_lock:
            if self._limits is None:
                try:
                    self._limits = wire.ServerLimits.from_json(self._get("/v1/limits"))
                except NotFoundError:
                    self._limits = wire.DEFAULT_LIMITS
            return self._limits

    # -- label sets -----------------------------------------------------------------------------

    def add_labelset(
        self,
        name: str,
        source: LabelSource,
        *,
        templates: Sequence[str] | str | None = None,
        model: str | None = None,
        pretrained: str | None = None,
        strict: bool = False,
        index: str | None = None,
    ) -> LabelSetInfo:
        validate_labelset_name(name)
        body = wire.labelset_body(name, source, templates, model, pretrained, strict)
        if index is not None:
            body["index"] = index
        return replies.parse_info(self._parse(self._request("POST", "/v1/labelsets", json=body)))

    def import_labelset(
        self,
        name: str,
        embeddings: np.ndarray,
        names: LabelNames,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        embed_internal: EmbedInternal = "mean",
        index: str | None = None,
    ) -> LabelSetInfo:
        path = f"{self._write_path(name)}/embeddings"
        body = wire.import_body(embeddings, names, model, pretrained, embed_internal)
        if index is not None:
            body["index"] = index
        return replies.parse_info(self._parse(self._request("PUT", path, json=body)))

    def labelsets(self) -> list[LabelSetInfo]:
        return replies.parse_infos(self._get("/v1/labelsets"))

    def labelset(self, name: str) -> LabelSetInfo:
        return replies.parse_info(self._get(wire.labelset_path(name, pinnable=True)))

    def history(self, name: str) -> list[LabelSetInfo]:
        return replies.parse_infos(self._get(f"{wire.labelset_path(name)}/history"))

    def delete_labelset(self, name: str) -> None:
        self._request("DELETE", wire.labelset_path(name))

    def rollback(self, name: str, version: int) -> LabelSetInfo:
        path = f"{wire.labelset_path(name)}/rollback"
        return replies.parse_info(
            self._parse(self._request("POST", path, json={"version": version}))
        )

    def embeddings(self, name: str) -> tuple[list[str], np.ndarray]:
        path = f"{wire.labelset_path(name, pinnable=True)}/embeddings"
        return replies.parse_embeddings(self._get(path))

    def tree(self, name: str) -> LabelTree:
        return replies.parse_tree(self._get(f"{wire.labelset_path(name, pinnable=True)}/tree"))

    # -- adaptation -----------------------------------------------------------------------------

    def tune_labelset(
        self,
        name: str,
        labels: Sequence[str],
        images: Sequence[ImageInput],
        *,
        alpha: float | str = "auto",
        image_names: Sequence[str] | None = None,
    ) -> LabelSetInfo:
        from zsindex.catalog.tuning import check_alpha

        fields = {"alpha": str(check_alpha(alpha))}
        return self._adapt(name, "tune", labels, images, image_names, fields)

    def calibrate_labelset(
        self,
        name: str,
        labels: Sequence[str],
        images: Sequence[ImageInput],
        *,
        target_precision: float | None = None,
        image_names: Sequence[str] | None = None,
    ) -> LabelSetInfo:
        fields = {} if target_precision is None else {"target_precision": str(target_precision)}
        return self._adapt(name, "calibrate", labels, images, image_names, fields)

    def _adapt(
        self,
        name: str,
        action: str,
        labels: Sequence[str],
        images: Sequence[ImageInput],
        image_names: Sequence[str] | None,
        fields: dict[str, str],
    ) -> LabelSetInfo:
        """One multipart request: ``labels`` (a JSON list, one per image) and ``images``."""
        import json

        from zsindex.classify.pipeline import as_image_source, image_name

        if len(labels) != len(images):
            raise InvalidInputError(f"{len(labels)} labels for {len(images)} example images")
        if not images:
            raise InvalidInputError("no example images given")
        limit = self.server_limits().max_images_per_request
        if len(images) > limit:
            raise PayloadTooLargeError(
                f"{len(images)} example images is more than the server takes in one request "
                f"({limit}, ZSINDEX_MAX_IMAGES_PER_REQUEST)"
            )
        names = given_names(image_names, len(images)) or [
            image_name(x, i) for i, x in enumerate(images)
        ]
        parts = [
            ("images", wire.encode_image(as_image_source(x, i), names[i]))
            for i, x in enumerate(images)
        ]
        form = {**fields, "labels": json.dumps(list(labels))}
        path = f"{self._write_path(name)}/{action}"
        return replies.parse_info(self._parse(self._request("POST", path, form=form, files=parts)))

    # -- classification -------------------------------------------------------------------------

    def classify(
        self,
        labelset: str,
        *,
        images: Sequence[ImageInput] | None = None,
        embeddings: np.ndarray | None = None,
        image_names: Sequence[str] | None = None,
        options: ClassifyOptions = ClassifyOptions(),  # noqa: B008 - frozen, immutable
        on_error: OnError = "raise",
    ) -> list[ClassificationResult]:
        """Classify images or embeddings; split into requests within the server's limits, all
        answered from one label-set version (the call is redone once if a new version became
        current mid-call, then it is a :class:`ConflictError`)."""
        if (images is None) == (embeddings is None):
            raise InvalidInputError("give either images or embeddings, not both or neither")
        if images is not None:  # the images' types first, as in process
            from zsindex.classify.pipeline import as_image_source, image_name

            sources = [as_image_source(x, i) for i, x in enumerate(images)]
            if not sources:
                raise InvalidInputError("no images to classify")
            names = given_names(image_names, len(sources)) or [
                image_name(x, i) for i, x in enumerate(images)
            ]
            wire.labelset_path(labelset, pinnable=True)
        else:  # the label set first, as in process
            wire.labelset_path(labelset, pinnable=True)
            matrix = self._check_embeddings(labelset, embeddings)
            names = given_names(image_names, len(matrix)) or [str(i) for i in range(len(matrix))]
        for _ in range(2):
            try:
                if images is not None:
                    return self._classify_images(labelset, sources, names, options, on_error)
                return self._classify_rows(labelset, matrix, names, options, on_error)
            except replies.VersionChanged:
                continue
        raise ConflictError(f"label set {labelset} changed during the call; retry")

    def _classify_images(
        self,
        labelset: str,
        sources: list[ImageSource],
        names: list[str],
        options: ClassifyOptions,
        on_error: OnError,
    ) -> list[ClassificationResult]:
        limits = self.server_limits()
        budget = limits.body_budget
        results: dict[int, ClassificationResult | ZsindexError] = {}
        batch: list[tuple[int, Part]] = []
        seen: list[int] = []

        def send() -> None:
            if not batch:
                return
            form = wire.classify_form(labelset, options, on_error)
            files = [("images", part) for _, part in batch]
            try:
                response = self._request("POST", "/v1/classify", form=form, files=files)
            except ZsindexError as exc:
                message = wire.restore_name(exc.message, [names[i] for i, _ in batch])
                if message == exc.message:
                    raise
                raise type(exc)(message) from None
            answers = replies.parse_results(self._parse(response), len(batch))
            replies.same_version(seen, answers[0].version)
            for (i, _), answer in zip(batch, answers, strict=True):
                error = wire.restore_name(answer.error, [names[i]]) if answer.error else None
                results[i] = replace(answer, image=names[i], error=error)
            batch.clear()

        size = 0
        for i, source in enumerate(sources):
            try:
                part = wire.encode_image(source, names[i])
                part_size = wire.image_part_size(part[0], part[1])
                if part_size > budget:
                    raise PayloadTooLargeError(
                        f"{names[i]}: {len(part[1]):,} bytes is more than the server takes in "
                        f"one request ({limits.max_body_bytes:,} bytes, ZSINDEX_MAX_BODY_BYTES)"
                    )
            except ZsindexError as exc:
                if on_error == "raise":
                    send()  # an earlier image's error comes first, as in process
                    raise
                results[i] = exc
                continue
            if batch and (len(batch) >= limits.max_images_per_request or size + part_size > budget):
                send()
                size = 0
            batch.append((i, part))
            size += part_size
        send()
        out: list[ClassificationResult] = []
        for i, name in enumerate(names):  # an image not sent is reported in its place
            result = results[i]
            if isinstance(result, ZsindexError):
                if not seen:  # nothing was sent: the current version
                    seen.append(self.labelset(labelset).version)
                result = replies.error_result(labelset, seen[0], name, result)
            out.append(result)
        return out

    def _rows_per_request(self, dim: int) -> int:
        limits = self.server_limits()
        by_size = limits.body_budget // wire.embedding_row_bytes(dim)
        return max(1, min(limits.max_embeddings_per_request, by_size))

    def _check_embeddings(self, labelset: str, embeddings: object) -> np.ndarray:
        """float32 ``[n, dim]`` rows, checked before any classify request. Where the server
        would see another shape than the one given (one row given as a vector, a split call) or
        the shape is wrong, the width is checked here, naming the shape given, as in process."""
        given, matrix = wire.embedding_rows(embeddings)
        if (
            matrix is None
            or given.ndim == 1
            or len(matrix) > self._rows_per_request(int(matrix.shape[1]))
        ):
            from zsindex.classify.engine import check_embeddings

            check_embeddings(given, self.labelset(labelset).dim)
        if matrix is None:
            raise InvalidInputError("embeddings must be a matrix [n, dim]")
        return matrix

    def _classify_rows(
        self,
        labelset: str,
        matrix: np.ndarray,
        names: list[str],
        options: ClassifyOptions,
        on_error: OnError,
    ) -> list[ClassificationResult]:
        step = self._rows_per_request(matrix.shape[1])
        seen: list[int] = []
        out: list[ClassificationResult] = []
        for start in range(0, len(matrix), step):
            rows = matrix[start : start + step]
            body = wire.classify_json(labelset, options, on_error, rows)
            answers = replies.parse_results(
                self._parse(self._request("POST", "/v1/classify", content=body)), len(rows)
            )
            replies.same_version(seen, answers[0].version)
            out.extend(replace(a, image=names[start + j]) for j, a in enumerate(answers))
        return out

    def close(self) -> None:
        """Close the HTTP client built here (a given ``http`` client stays open)."""
        if self._owns_http:
            self._http.close()


__all__ = ["HttpBackend"]
