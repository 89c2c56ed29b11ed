"""Operational routes: ``/healthz``, ``/readyz``, ``/metrics`` and the web page at ``/``."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.encoders import jsonable_encoder
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import HTMLResponse, Response

from zsindex.service.auth import bearer_scheme, require_read
from zsindex.service.schemas import Error, Health, Limits, Readiness
from zsindex.service.state import ServiceState, json_response

log = logging.getLogger("zsindex.service")

READY_TIMEOUT_S = 5.0


def _ready_flag(detail: dict[str, Any]) -> bool:
    """Interpret ``backend.ready()``: an explicit ``ready``/``ok`` flag, else a reachable store."""
    for key in ("ready", "ok"):
        if key in detail:
            return bool(detail[key])
    store = detail.get("store")
    if isinstance(store, bool):
        return store
    if isinstance(store, dict) and "reachable" in store:
        return bool(store["reachable"])
    if "store_reachable" in detail:
        return bool(detail["store_reachable"])
    return True


def index_html() -> str:
    return resources.files("zsindex.service").joinpath("static/index.html").read_text("utf-8")


def build_router(state: ServiceState) -> APIRouter:
    router = APIRouter(tags=["operations"])
    read = Depends(require_read(state.keys, state.settings.require_auth_for_reads))

    @router.get(
        "/v1/limits",
        summary="What one request may carry (clients split larger calls)",
        response_model=Limits,
        dependencies=[Depends(bearer_scheme), read],
    )
    async def limits() -> dict[str, int]:
        return {
            "max_images_per_request": state.limits.max_images_per_request,
            "max_embeddings_per_request": state.limits.max_embeddings_per_request,
            "max_body_bytes": state.limits.max_body_bytes,
        }

    @router.get("/healthz", summary="The process is alive", response_model=Health)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Store reachable and label sets loaded",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready"}},
    )
    async def readyz() -> Response:
        detail: dict[str, Any] = {}
        reason = ""
        if state.draining:  # answer at once: the load balancer must stop sending now
            body = {
                "status": "unavailable",
                "code": "draining",
                "message": "shutting down: finishing the requests in flight",
                "detail": {"draining": True},
            }
            return json_response(body, status_code=503)
        try:
            detail = await asyncio.wait_for(asyncio.to_thread(state.backend.ready), READY_TIMEOUT_S)
            detail = dict(jsonable_encoder(detail)) if isinstance(detail, dict) else {}
            ok = _ready_flag(detail)
            if not ok:
                reason = "the backend reports it is not ready"
        except TimeoutError:
            ok, reason = False, f"the store did not answer within {READY_TIMEOUT_S:g} s"
        except Exception as exc:
            ok, reason = False, f"the store is unreachable: {type(exc).__name__}"
            log.warning("readiness check failed: %s", exc)
        detail.update(state.follower.detail())
        code = "store_unavailable"
        if ok and not state.follower.warm:
            ok, code, reason = False, "not_ready", "label sets are still loading"
        if ok:
            return json_response({"status": "ready", "detail": detail})
        body = {"status": "unavailable", "code": code, "message": reason, "detail": detail}
        return json_response(body, status_code=503)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            401: {"model": Error, "description": "Missing or invalid API key"},
        },
        dependencies=[Depends(bearer_scheme), read],
    )
    async def metrics() -> Response:
        payload = await asyncio.to_thread(generate_latest, state.metrics.registry)
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

    @router.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html())

    return router
