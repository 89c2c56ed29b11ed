"""Adaptation routes: ``POST /v1/labelsets/{name}/tune`` and ``/calibrate`` (extensions).

Both take ``multipart/form-data``: the example images as files in ``images`` and, in the same
order, their labels as a JSON list in the field ``labels`` (a label name; for trees a node name
or an ``a/b/c`` path); ``tune`` takes ``alpha`` (a number in [0, 1] or ``auto``), ``calibrate``
an optional ``target_precision``. Writes need an API key; the answer is the new version, as
``GET /v1/labelsets/{name}`` shows it. Bad input is a 4xx and nothing is written.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from zsindex.errors import InvalidInputError, PayloadTooLargeError
from zsindex.service.auth import bearer_scheme, require_write
from zsindex.service.routes_classify import ERROR_RESPONSES, MAX_FIELD_BYTES
from zsindex.service.schemas import LabelSetDetail
from zsindex.service.state import ServiceState, json_response

FIELDS = {"tune": ("alpha",), "calibrate": ("target_precision",)}

ADAPT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["labels", "images"],
                    "properties": {
                        "labels": {
                            "type": "string",
                            "description": "JSON list of labels, one per image, in order.",
                        },
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "alpha": {"type": "string", "description": "tune: [0, 1] or auto"},
                        "target_precision": {"type": "string", "description": "calibrate"},
                    },
                }
            }
        },
    }
}


async def read_examples(
    request: Request, state: ServiceState, action: str
) -> tuple[list[str], list[bytes], list[str], dict[str, str]]:
    """(labels, image bytes, filenames, the action's other fields) of a multipart request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise StarletteHTTPException(
            415,
            f"POST {request.url.path} takes multipart/form-data, not "
            f"{content_type or 'an unspecified content type'}",
        )
    limits = state.limits
    try:
        form: FormData = await request.form(
            max_files=limits.max_images_per_request,
            max_fields=limits.max_form_fields,
            max_part_size=MAX_FIELD_BYTES,
        )
    except StarletteHTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise PayloadTooLargeError(
                f"too many images: at most {limits.max_images_per_request} per request "
                "(ZSINDEX_MAX_IMAGES_PER_REQUEST)"
            ) from None
        raise InvalidInputError(f"malformed multipart body: {exc.detail}") from None
    fields: dict[str, str] = {}
    images: list[bytes] = []
    names: list[str] = []
    allowed = {"labels", *FIELDS[action]}
    try:
        for key, value in form.multi_items():
            if key == "images":
                if not isinstance(value, UploadFile):
                    raise InvalidInputError("'images' must be uploaded files (multipart parts)")
                images.append(await value.read())
                names.append(value.filename or str(len(names)))
            elif isinstance(value, UploadFile):
                raise InvalidInputError(f"field {key!r} must be a plain value, not a file")
            elif key not in allowed:
                raise InvalidInputError(
                    f"unknown field {key!r}: {action} takes {', '.join(sorted(allowed))} and images"
                )
            elif key in fields:
                raise InvalidInputError(f"field {key!r} given more than once")
            else:
                fields[key] = value
    finally:
        await form.close()
    try:
        labels = json.loads(fields.pop("labels", ""))
    except ValueError:
        raise InvalidInputError(
            "field 'labels' must be a JSON list of labels, one per image"
        ) from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise InvalidInputError("field 'labels' must be a JSON list of strings")
    if not images:
        raise InvalidInputError("no images: upload the example files in the 'images' field")
    if len(labels) != len(images):
        raise InvalidInputError(f"{len(labels)} labels for {len(images)} images")
    return labels, images, names, fields


def build_router(state: ServiceState) -> APIRouter:
    router = APIRouter(tags=["labelsets"], responses=ERROR_RESPONSES)
    write = Depends(require_write(state.keys))
    scheme = Depends(bearer_scheme)
    backend = state.backend

    write_then_refresh = state.write_then_refresh

    @router.post(
        "/v1/labelsets/{name}/tune",
        summary="Few-shot: a new version blending text vectors with example-image means",
        status_code=201,
        response_model=LabelSetDetail,
        dependencies=[scheme, write],
        openapi_extra=ADAPT_OPENAPI,
    )
    async def tune_labelset(name: str, request: Request) -> Response:
        labels, images, names, fields = await read_examples(request, state, "tune")
        info = await asyncio.to_thread(
            write_then_refresh,
            backend.tune_labelset,
            name,
            labels,
            images,
            alpha=fields.get("alpha", "auto"),
            image_names=names,
        )
        return json_response(info.to_dict(), status_code=201)

    @router.post(
        "/v1/labelsets/{name}/calibrate",
        summary="Fit a temperature on labelled images, stored in a new version",
        status_code=201,
        response_model=LabelSetDetail,
        dependencies=[scheme, write],
        openapi_extra=ADAPT_OPENAPI,
    )
    async def calibrate_labelset(name: str, request: Request) -> Response:
        labels, images, names, fields = await read_examples(request, state, "calibrate")
        target = fields.get("target_precision")
        try:
            precision = float(target) if target is not None else None
        except ValueError:
            raise InvalidInputError(
                f"target_precision must be a number in (0, 1], got {target!r}"
            ) from None
        info = await asyncio.to_thread(
            write_then_refresh,
            backend.calibrate_labelset,
            name,
            labels,
            images,
            target_precision=precision,
            image_names=names,
        )
        return json_response(info.to_dict(), status_code=201)

    return router
