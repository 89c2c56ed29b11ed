"""``POST /v1/classify``: multipart uploads, base64 JSON images, or precomputed embeddings.

Order of work, so the excess is refused cheaply: concurrency slot (503 at once when full) → body
(capped while streaming) → image count (413) → the label set resolved once (one version per
response) → per image: format from magic bytes, pixel count from the header before decoding,
then decoding → model work through the micro-batcher → one JSON list.

An image that cannot be read (unsupported format, too many pixels, corrupt) gets its own result
with ``error`` and ``error_code`` and no predictions, and the others are classified (the
design's rule, as ``zsindex classify`` does); ``on_error=raise`` answers the first such image's
415/413/422 instead. What is wrong with the request itself (body, image count, options, label
set, base64 that does not decode) is always a 4xx.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from zsindex.classify.engine import check_options
from zsindex.classify.inputs import decode_data_url, is_data_url
from zsindex.errors import (
    ImageError,
    InvalidInputError,
    OverloadedError,
    PayloadTooLargeError,
    UnsupportedImageFormatError,
    ZsindexError,
)
from zsindex.service.batching import Job
from zsindex.service.request_log import RequestNote, request_note
from zsindex.service.schemas import (
    ClassificationOut,
    ClassifyJsonRequest,
    ClassifyMultipartRequest,
    ClassifyOptions,
    Error,
    looks_like_path_or_url,
)
from zsindex.service.state import ServiceState, json_response

MAX_FIELD_BYTES = 64 * 1024
INLINE_DECODE_BYTES = 256 * 1024
"""Uploads up to this many bytes in total are decoded on the event loop (if also small in
pixels, see :data:`zsindex.service.state.INLINE_DECODE_PIXELS`)."""


def _ref(model: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


CLASSIFY_OPENAPI: dict[str, Any] = {
    "security": [{"HTTPBearer": []}, {}],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _ref(ClassifyMultipartRequest)},
            "application/json": {"schema": _ref(ClassifyJsonRequest)},
        },
    },
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": text}
    for status, text in {
        401: "Missing or invalid API key",
        404: "Unknown label set or node",
        413: "Body or image count over the limit (an image's pixels: with on_error=raise)",
        415: "Unsupported content type (an image's format: with on_error=raise)",
        422: "Invalid input (an undecodable image: with on_error=raise)",
        503: "Overloaded, timed out, or store unavailable",
    }.items()
}


def _decode_base64(value: str, index: int) -> bytes:
    if is_data_url(value):
        return decode_data_url(value, f"images[{index}]")
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        if looks_like_path_or_url(value):
            raise InvalidInputError(
                f"images[{index}] looks like a path or URL: send the image's bytes, base64-encoded;"
                " the server never opens paths or URLs"
            ) from None
        raise InvalidInputError(f"images[{index}] is not valid base64") from None


async def _read_multipart(
    request: Request, state: ServiceState
) -> tuple[ClassifyOptions, list[tuple[bytes, str]]]:
    limits = state.limits
    try:
        form: FormData = await request.form(
            max_files=limits.max_images_per_request,
            max_fields=limits.max_form_fields,
            max_part_size=MAX_FIELD_BYTES,
        )
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if "Too many files" in detail:
            raise PayloadTooLargeError(
                f"too many images: at most {limits.max_images_per_request} per request "
                "(ZSINDEX_MAX_IMAGES_PER_REQUEST)"
            ) from None
        if "Too many fields" in detail:
            raise PayloadTooLargeError(
                f"too many form fields: at most {limits.max_form_fields}"
            ) from None
        raise InvalidInputError(f"malformed multipart body: {detail}") from None
    try:
        fields: dict[str, str] = {}
        uploads: list[tuple[bytes, str]] = []
        for key, value in form.multi_items():
            if key == "images":
                if not isinstance(value, UploadFile):
                    raise InvalidInputError(
                        "'images' must be uploaded files (multipart parts with a filename); the"
                        " server never opens paths or URLs"
                    )
                data = await value.read()
                uploads.append((data, value.filename or str(len(uploads))))
            elif isinstance(value, UploadFile):
                raise InvalidInputError(f"field {key!r} must be a plain value, not a file")
            elif key in fields:
                raise InvalidInputError(f"field {key!r} given more than once")
            else:
                fields[key] = value
    finally:
        await form.close()
    options = ClassifyOptions.model_validate(fields)
    if not uploads:
        raise InvalidInputError("no images: upload one or more files in the 'images' field")
    return options, uploads


def reports_image_errors(options: ClassifyOptions) -> bool:
    """Whether an unreadable image becomes its own result: unless the request asks for
    ``on_error=raise``. A request that leaves ``on_error`` out reports, whatever default the
    request schema states, so the design's rule holds for every client that does not say."""
    return options.on_error != "raise" or "on_error" not in options.model_fields_set


def _check_count(n: int, limit: int, what: str, env: str) -> None:
    if n > limit:
        raise PayloadTooLargeError(f"too many {what}: {n} > {limit} per request ({env})")


async def _parse(
    request: Request, state: ServiceState, note: RequestNote
) -> tuple[ClassifyOptions, Job]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limits = state.limits
    if content_type == "multipart/form-data":
        options, uploads = await _read_multipart(request, state)
        raw = uploads
        embeddings = None
    elif content_type == "application/json" or content_type.endswith("+json"):
        body = ClassifyJsonRequest.model_validate_json(await request.body())
        options = body
        if body.images is not None:
            _check_count(
                len(body.images),
                limits.max_images_per_request,
                "images",
                "ZSINDEX_MAX_IMAGES_PER_REQUEST",
            )
            raw = [(_decode_base64(s, i), str(i)) for i, s in enumerate(body.images)]
            embeddings = None
        else:
            rows = body.embeddings or []
            _check_count(
                len(rows),
                limits.max_embeddings_per_request,
                "embeddings",
                "ZSINDEX_MAX_EMBEDDINGS_PER_REQUEST",
            )
            if len({len(r) for r in rows}) != 1 or not rows[0]:
                raise InvalidInputError("embeddings must be a non-empty rectangular matrix")
            embeddings = np.asarray(rows, dtype=np.float32)
            raw = []
    else:
        raise UnsupportedImageFormatError(
            "POST /v1/classify takes multipart/form-data or application/json, not "
            f"{content_type or 'an unspecified content type'}"
        )
    note.labelset = options.labelset
    note.images = len(raw) if embeddings is None else int(embeddings.shape[0])
    opts = options.to_options().with_defaults(fast_decode=state.settings.fast_decode)
    if embeddings is not None:
        names = [str(i) for i in range(embeddings.shape[0])]
        loaded = await state.resolve(options.labelset)
        note.labelset, note.labelset_known = loaded.name, True
        job = Job(
            loaded=loaded,
            image_names=names,
            options=opts,
            embeddings=embeddings,
        )
        return options, job
    _check_count(
        len(raw), limits.max_images_per_request, "images", "ZSINDEX_MAX_IMAGES_PER_REQUEST"
    )
    loaded = await state.resolve(options.labelset)
    note.labelset, note.labelset_known = loaded.name, True  # the stored spelling: one series
    # Options the label set cannot take fail the request before any image is read, as in
    # process: otherwise a request whose images all fail would never reach the scoring check.
    check_options(loaded, opts)
    await state.ready_model(loaded)
    fast = bool(opts.fast_decode)
    report = reports_image_errors(options)
    errors: dict[int, ImageError] = {}

    # Each image becomes the model's input right after it is decoded (the pipeline's prepare
    # stage), so a request holds one full-size decoded image at a time, not all of them (64
    # images of 64 M pixels would be ~12 GB).
    def prepare(i: int, inline: bool = False) -> Any:
        data, name = raw[i]
        try:
            return state.prepare(loaded, data, name, fast_decode=fast, inline=inline)
        except ImageError as exc:
            if not report:
                raise
            errors[i] = exc
            return _FAILED

    if sum(len(data) for data, _ in raw) <= INLINE_DECODE_BYTES:
        # Small uploads (the common case) decode on the event loop: cheaper than a thread hop.
        # Their header is checked first, so a small file that claims many pixels still goes
        # to a thread (or is refused) instead of blocking the loop.
        inputs = [prepare(i, inline=True) for i in range(len(raw))]
    else:
        inputs = [None] * len(raw)
    if any(x is None for x in inputs):
        # Only the images left for a worker thread (too large to decode on the loop).
        done = inputs
        inputs = await asyncio.to_thread(
            lambda: [x if x is not None else prepare(i) for i, x in enumerate(done)]
        )
    job = Job(
        loaded=loaded,
        image_names=[name for _, name in raw],
        options=opts,
        images=[x for i, x in enumerate(inputs) if i not in errors],
        errors=errors,
    )
    return options, job


_FAILED = object()
"""Stands for an image that could not be prepared (reported in its own result)."""


async def _classify(
    request: Request, state: ServiceState, note: RequestNote, read_required: bool
) -> list[Any]:
    state.keys.check_query(request)
    if read_required:
        state.keys.check_header(request, purpose="reading")
    try:
        state.limiter.acquire()
    except OverloadedError:
        state.metrics.rejected.labels("overloaded").inc()
        raise
    state.metrics.inflight.inc()
    try:
        async with asyncio.timeout(state.limits.request_timeout_s):
            with state.batcher.arriving():  # a batch being gathered may wait for this one
                _, job = await _parse(request, state, note)
            return list(await state.batcher.submit(job))
    except ZsindexError as exc:
        if exc.http_status == 413:
            state.metrics.rejected.labels("too_large").inc()
        raise
    finally:
        state.metrics.inflight.dec()
        state.limiter.release()


def build_router(state: ServiceState) -> APIRouter:
    router = APIRouter(tags=["classify"])
    # The hot path checks keys directly rather than through FastAPI's dependency injection.
    read_required = state.settings.require_auth_for_reads

    @router.post(
        "/v1/classify",
        summary="Classify images or embeddings against a label set",
        response_model=list[ClassificationOut],
        responses=ERROR_RESPONSES,
        openapi_extra=CLASSIFY_OPENAPI,
    )
    async def classify(request: Request) -> Response:
        """One result per image, in request order, all from one label-set version."""
        start = time.perf_counter()
        note = request_note()
        outcome = "error"
        try:
            results = await _classify(request, state, note, read_required)
            outcome = "ok"
        except TimeoutError:
            outcome = "timeout"
            state.metrics.rejected.labels("timeout").inc()
            raise OverloadedError(
                f"request timed out after {state.limits.request_timeout_s:g} s "
                "(ZSINDEX_REQUEST_TIMEOUT_S); the service is overloaded, retry shortly"
            ) from None
        except ZsindexError as exc:
            outcome = exc.code
            raise
        except ValidationError:
            outcome = "invalid_input"
            raise
        finally:
            # The name is a metric label only once it resolved, so label values stay bounded.
            state.metrics.record_classify(
                note.labelset if note.labelset_known else None,
                outcome,
                note.images,
                time.perf_counter() - start,
            )
        return json_response([r.to_dict() for r in results])

    return router
