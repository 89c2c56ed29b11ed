"""Fixtures shared by the whole suite: real SQLite and real PostgreSQL stores.

Every store test runs on both backends. PostgreSQL tests each get a schema of their own in the
local server's ``test`` database, so concurrent runs never collide. With
``ZSINDEX_REQUIRE_POSTGRES=1`` (set by ``make test``) an unreachable server fails the tests instead
of skipping them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get(
    "ZSINDEX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("ZSINDEX_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required but unavailable: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def pg_admin_engine() -> Iterator[object]:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        _pg_unavailable(str(exc).splitlines()[0])
    yield engine
    engine.dispose()


def _pg_schema_url(schema: str) -> str:
    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL schema, dropped after the test."""
    from sqlalchemy import text

    engine = request.getfixturevalue("pg_admin_engine")
    schema = f"zt_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield _pg_schema_url(schema)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'zsindex.sqlite3'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh empty database on each backend (the test runs once per backend)."""
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
        return str(request.getfixturevalue("pg_url"))
    return str(request.getfixturevalue("sqlite_url"))


@pytest.fixture
def zs_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated ZSINDEX_HOME with every other ZSINDEX_* variable cleared."""
    for key in list(os.environ):
        if key.startswith("ZSINDEX_") and key != "ZSINDEX_REQUIRE_POSTGRES":
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("ZSINDEX_HOME", str(home))
    return home


RANDOM_MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight open_clip CLIP saved in open_clip's local-dir layout."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("random-clip")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**RANDOM_MODEL_CFG)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    (folder / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": RANDOM_MODEL_CFG,
                "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
            }
        )
    )
    return folder


@pytest.fixture(scope="session")
def random_model(random_model_dir: Path) -> str:
    """The ``--model`` value of :func:`random_model_dir`."""
    return f"local-dir:{random_model_dir}"


# -- the CLI, run in process through its real entry point ---------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def zs(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    from zsindex.cli.main import main

    def run(*args: str) -> Run:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
