"""Label-set routes: list, register, show, delete, plus the history/embeddings extensions.

Writes need an API key. Backend calls run in a worker thread; after a write the backend is
refreshed so the next request in this process sees the new version at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from zsindex.errors import InvalidInputError
from zsindex.service.auth import bearer_scheme, require_read, require_write
from zsindex.service.routes_classify import ERROR_RESPONSES
from zsindex.service.schemas import (
    EmbeddingsImport,
    EmbeddingsOut,
    LabelSetCreate,
    LabelSetDetail,
    LabelTreeOut,
    RollbackRequest,
)
from zsindex.service.state import ServiceState, json_response


def _info(info: Any) -> dict[str, Any]:
    return dict(info.to_dict())


def encode_matrix(matrix: np.ndarray) -> tuple[list[int], str]:
    """(shape, base64 of little-endian float32 row-major bytes)."""
    arr = np.ascontiguousarray(matrix, dtype="<f4")
    return list(arr.shape), base64.b64encode(arr.tobytes()).decode("ascii")


def decode_matrix(shape: list[int], data: str, dtype: str = "float32") -> np.ndarray:
    """Inverse of :func:`encode_matrix` (float16 too); InvalidInputError on a size mismatch."""
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("data is not valid base64") from None
    rows, cols = shape
    wire = np.dtype("<f2") if dtype == "float16" else np.dtype("<f4")
    if len(raw) != rows * cols * wire.itemsize:
        raise InvalidInputError(
            f"data holds {len(raw)} bytes; shape {rows}x{cols} {dtype} needs "
            f"{rows * cols * wire.itemsize}"
        )
    native = np.float16 if dtype == "float16" else np.float32
    return np.frombuffer(raw, dtype=wire).reshape(rows, cols).astype(native)


async def require_json(request: Request) -> None:
    """415 ``unsupported_media_type`` (as ``/v1/classify`` answers) for a non-JSON body.

    Runs after the key check, so an anonymous caller still learns 401 first.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return
    raise StarletteHTTPException(
        415,
        f"{request.method} {request.url.path} takes application/json, not "
        f"{content_type or 'an unspecified content type'}",
    )


def build_router(state: ServiceState) -> APIRouter:
    router = APIRouter(tags=["labelsets"], responses=ERROR_RESPONSES)
    read = Depends(require_read(state.keys, state.settings.require_auth_for_reads))
    write = Depends(require_write(state.keys))
    scheme = Depends(bearer_scheme)
    json_body = Depends(require_json)
    backend = state.backend

    write_then_refresh = state.write_then_refresh

    @router.get(
        "/v1/labelsets",
        summary="List label sets (current versions)",
        response_model=list[LabelSetDetail],
        dependencies=[scheme, read],
    )
    async def list_labelsets() -> Response:
        infos = await asyncio.to_thread(backend.labelsets)
        return json_response([_info(i) for i in infos])

    @router.post(
        "/v1/labelsets",
        summary="Register a label set (or a new version of it)",
        status_code=201,
        response_model=LabelSetDetail,
        dependencies=[scheme, write, json_body],
    )
    async def create_labelset(body: LabelSetCreate) -> Response:
        source = body.to_source()
        info = await asyncio.to_thread(
            write_then_refresh,
            backend.add_labelset,
            body.name,
            source,
            templates=body.templates,
            model=body.model,
            pretrained=body.pretrained,
            strict=body.strict,
            index=body.index,
        )
        return json_response(_info(info), status_code=201)

    @router.get(
        "/v1/labelsets/{name}",
        summary="Show a label set's current version (NAME@N: version N)",
        response_model=LabelSetDetail,
        dependencies=[scheme, read],
    )
    async def show_labelset(name: str) -> Response:
        info = await asyncio.to_thread(backend.labelset, name)
        return json_response(_info(info))

    @router.delete(
        "/v1/labelsets/{name}",
        summary="Delete a label set and all its versions",
        status_code=204,
        response_class=Response,
        dependencies=[scheme, write],
    )
    async def delete_labelset(name: str) -> Response:
        await asyncio.to_thread(write_then_refresh, backend.delete_labelset, name)
        return Response(status_code=204)

    @router.post(
        "/v1/labelsets/{name}/rollback",
        summary="Serve an old version's content again, as a new current version (extension)",
        status_code=201,
        response_model=LabelSetDetail,
        dependencies=[scheme, write, json_body],
    )
    async def rollback_labelset(name: str, body: RollbackRequest) -> Response:
        info = await asyncio.to_thread(write_then_refresh, backend.rollback, name, body.version)
        return json_response(_info(info), status_code=201)

    @router.get(
        "/v1/labelsets/{name}/history",
        summary="All versions of a label set, oldest first (extension)",
        response_model=list[LabelSetDetail],
        dependencies=[scheme, read],
    )
    async def labelset_history(name: str) -> Response:
        infos = await asyncio.to_thread(backend.history, name)
        return json_response([_info(i) for i in infos])

    @router.get(
        "/v1/labelsets/{name}/embeddings",
        summary="Label names and embedding matrix of the current version (NAME@N: version N)",
        response_model=EmbeddingsOut,
        dependencies=[scheme, read],
    )
    async def labelset_embeddings(name: str) -> Response:
        names, matrix = await asyncio.to_thread(backend.embeddings, name)
        shape, data = encode_matrix(matrix)
        out = {"name": name, "names": list(names), "dtype": "float32", "shape": shape, "data": data}
        return json_response(out)

    @router.get(
        "/v1/labelsets/{name}/tree",
        summary="The current (or NAME@N) version's structure: parents as row indices, ranks",
        response_model=LabelTreeOut,
        dependencies=[scheme, read],
    )
    async def labelset_tree(name: str) -> Response:
        tree = await asyncio.to_thread(backend.tree, name)
        return json_response(tree.to_dict())

    @router.put(
        "/v1/labelsets/{name}/embeddings",
        summary="Register precomputed label embeddings as a new version (extension)",
        status_code=201,
        response_model=LabelSetDetail,
        dependencies=[scheme, write, json_body],
    )
    async def import_embeddings(name: str, body: EmbeddingsImport) -> Response:
        matrix = decode_matrix(body.shape, body.data, body.dtype)
        info = await asyncio.to_thread(
            write_then_refresh,
            backend.import_labelset,
            name,
            matrix,
            body.to_names(),
            model=body.model,
            pretrained=body.pretrained,
            embed_internal=body.embed_internal,
            index=body.index,
        )
        return json_response(_info(info), status_code=201)

    return router
