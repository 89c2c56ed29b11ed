"""S1: schemathesis against ``/openapi.json`` — in process (ASGI) and against a live server.

Bounded: a few examples per operation (``SCHEMATHESIS_EXAMPLES``, default 15). Checks: never a
5xx, status codes, content types and bodies as the schema declares.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from svc_backends import MODEL, RecordingBackend  # noqa: E402
from svc_helpers import API_KEY, auth  # noqa: E402

from zsindex.options import LabelSource  # noqa: E402
from zsindex.service.server import BackgroundServer  # noqa: E402

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "15"))
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@pytest.fixture
def backend(backend_under_test: RecordingBackend) -> RecordingBackend:
    """The real backend with ``colors`` and ``string`` (the name schemathesis puts in paths)."""
    backend_under_test.add_labelset("string", LabelSource(labels=["a", "b"]), model=MODEL)
    return backend_under_test


@pytest.fixture
def asgi_app(make_app, backend: RecordingBackend) -> Any:
    app = make_app(backend=backend)
    app.state.zs.follower.warm = True  # no lifespan under schemathesis' ASGI client
    return app


def _run_all(schema: Any, examples: int, **call_kwargs: Any) -> list[str]:
    """Run every operation's generated cases (positive and negative); return the labels run."""
    from hypothesis import given

    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE) | (
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        )

        @given(case=strategy)
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(checks=list(CHECKS), **call_kwargs)

        run()
    return labels


def test_in_process(asgi_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", asgi_app)
    labels = _run_all(schema, EXAMPLES, headers=auth(API_KEY))
    assert "POST /v1/classify" in labels and "POST /v1/labelsets" in labels


def test_in_process_without_key(asgi_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", asgi_app)
    _run_all(schema, max(3, EXAMPLES // 3))


def test_live_server(make_app, backend: RecordingBackend) -> None:
    with BackgroundServer(make_app(backend=backend)) as server:
        schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
        labels = _run_all(schema, max(3, EXAMPLES // 2), headers=auth(API_KEY), timeout=30)
    assert "GET /v1/labelsets/{name}" in labels
