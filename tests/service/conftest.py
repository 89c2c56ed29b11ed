"""Fixtures of the service tests: apps over the real ``LocalBackend``, live loopback servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from svc_backends import COLORS, RecordingBackend, recording_backend
from svc_helpers import API_KEY, OTHER_KEY, build_random_model, has_tiny_model

from zsindex.config import Settings
from zsindex.service.app import create_app
from zsindex.service.limits import ServiceLimits
from zsindex.service.server import BackgroundServer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'svc.sqlite3'}",
        model="zsindex-tiny",
        pretrained=None,
        device="cpu",
        api_keys=(API_KEY, OTHER_KEY),
    )


@pytest.fixture
def backend_under_test(settings: Settings) -> Iterator[RecordingBackend]:
    """The real ``LocalBackend`` (SQLite, ``zsindex-tiny``) with ``colors`` registered."""
    backend = recording_backend(settings, colors=COLORS)
    yield backend
    backend.close()


AppFactory = Callable[..., Any]


@pytest.fixture
def make_app(settings: Settings, backend_under_test: RecordingBackend) -> AppFactory:
    """``make_app(**overrides)`` → a FastAPI app over ``backend_under_test`` (no refresh loop)."""

    def factory(
        *,
        backend: Any = None,
        limits: ServiceLimits | None = None,
        batching: Any = True,
        refresh_interval_s: float = 0.0,
        **settings_changes: Any,
    ) -> Any:
        s = settings
        if settings_changes:
            from dataclasses import replace

            s = replace(settings, **settings_changes)
        return create_app(
            s,
            backend if backend is not None else backend_under_test,
            limits=limits or ServiceLimits(),
            batching=batching,
            refresh_interval_s=refresh_interval_s,
        )

    return factory


@pytest.fixture
def client(make_app: AppFactory) -> Iterator[TestClient]:
    """A TestClient (lifespan run) over ``backend_under_test`` with default limits."""
    with TestClient(make_app(), raise_server_exceptions=False) as tc:
        yield tc


@pytest.fixture
def live(make_app: AppFactory) -> Callable[..., BackgroundServer]:
    """``live(app=None, **make_app_kwargs)`` → a started uvicorn server on 127.0.0.1."""
    servers: list[BackgroundServer] = []

    def start(app: Any = None, **kwargs: Any) -> BackgroundServer:
        server = BackgroundServer(app if app is not None else make_app(**kwargs)).start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def model_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``zsindex-tiny`` when shipped, else a random-weight stand-in built once per session."""
    if has_tiny_model():
        return "zsindex-tiny"
    return build_random_model(tmp_path_factory.mktemp("random-model") / "model")
