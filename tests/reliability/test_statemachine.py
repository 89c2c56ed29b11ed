"""K3: a Hypothesis state machine over register / re-register / delete / classify / restart.

Each example starts on a fresh store (a new SQLite file, or a new PostgreSQL schema) and runs
random steps against ``Client.local`` with the shipped ``zsindex-tiny`` model, next to a plain
model of what must be true:

- ``register``: ``add_labelset`` with labels from a small vocabulary; the same content again is
  the same version, anything else the next version (back to 1 after a delete);
- ``import_rows``: ``import_labelset`` of random unit rows (always a new version);
- ``delete``: ``delete_labelset`` (``NotFoundError`` for a name that is not there);
- ``classify_embeddings`` / ``classify_image``: answers name the current version and only its
  labels; a label's own embedding comes back as its top prediction with score 1;
- ``restart``: close and reopen the client on the same store, sometimes dropping the on-disk
  index cache;
- ``observe``: a second, long-lived client (like the service) refreshes and must serve the
  current version — also after a delete and re-create, when SQLite reuses the deleted version's
  row id (``test_refresh_sees_delete_and_recreate``).

After every step: ``check_store(strict=True)`` is clean, the index cache verifies, and the
client's label sets, versions, names and embeddings equal the model's.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from PIL import Image

from zsindex import Client
from zsindex.catalog.caches import check_caches
from zsindex.config import Settings
from zsindex.errors import NotFoundError
from zsindex.store.check import check_store
from zsindex.store.repository import Store

MODEL = "zsindex-tiny"
DIM = 128
NAMES = ("alpha", "beta", "gamma")
VOCAB = ("cat", "dog", "red car", "blue sky", "oak tree", "house", "parrot", "goldfish")
TEMPLATES = {"plain": ["{}"], "photo": ["a photo of a {}.", "a picture of a {}."]}
COLORS = ((220, 20, 20), (20, 200, 40), (30, 30, 220), (240, 240, 240))


@dataclass(frozen=True)
class Expected:
    version: int
    labels: tuple[str, ...]
    content: tuple[Any, ...]  # what decides whether a re-registration is a no-op
    rows: np.ndarray | None = None  # imported (normalised) rows


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), color).save(buf, format="PNG")
    return buf.getvalue()


class StoreMachine(RuleBasedStateMachine):
    """Configured per test through class attributes (see :func:`_machine`)."""

    backend: str = "sqlite"
    workdir: Path
    pg_admin: Any = None
    pg_base_url: str = ""
    observer_enabled: bool = False
    stats: dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        tag = uuid.uuid4().hex[:10]
        self.home = self.workdir / f"home-{tag}"
        self.schema: str | None = None
        if self.backend == "sqlite":
            self.url = f"sqlite:///{self.workdir / f'k3-{tag}.sqlite3'}"
        else:
            from sqlalchemy import text

            self.schema = f"zt_k3_{tag}"
            with self.pg_admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
            self.url = f"{self.pg_base_url}?options=-csearch_path%3D{self.schema}"
        self.client = self._open()
        self.store = Store(self.url)
        self.observer: Client | None = None
        self.model: dict[str, Expected] = {}
        self.stats["examples"] += 1

    def _open(self) -> Client:
        return Client.local(database_url=self.url, home=self.home, device="cpu")

    def teardown(self) -> None:
        for c in (self.client, self.observer):
            if c is not None:
                c.close()
        self.store.close()
        if self.schema is not None:
            from sqlalchemy import text

            with self.pg_admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        shutil.rmtree(self.home, ignore_errors=True)

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _next_version(self, name: str) -> int:
        current = self.model.get(name)
        return current.version + 1 if current is not None else 1

    # -- writes --------------------------------------------------------------------------------

    @rule(
        name=st.sampled_from(NAMES),
        labels=st.lists(st.sampled_from(VOCAB), min_size=1, max_size=4, unique=True),
        templates=st.sampled_from(sorted(TEMPLATES)),
    )
    def register(self, name: str, labels: list[str], templates: str) -> None:
        content = ("text", tuple(labels), templates)
        current = self.model.get(name)
        same = current is not None and current.content == content
        expected = current.version if same and current else self._next_version(name)
        info = self.client.add_labelset(name, labels, templates=TEMPLATES[templates], model=MODEL)
        assert info.version == expected, (name, info.version, expected, same)
        assert info.num_labels == len(labels) and info.dim == DIM
        assert info.templates == TEMPLATES[templates]
        self.model[name] = Expected(info.version, tuple(labels), content)
        self._count("register_same" if same else "register")

    @rule(
        name=st.sampled_from(NAMES),
        n=st.integers(1, 5),
        seed=st.integers(0, 2**16),
        fp16=st.booleans(),
    )
    def import_rows(self, name: str, n: int, seed: int, fp16: bool) -> None:
        rng = np.random.default_rng(seed)
        rows = rng.standard_normal((n, DIM)).astype(np.float16 if fp16 else np.float32)
        names = [f"{VOCAB[i % len(VOCAB)]} #{seed % 7}-{i}" for i in range(n)]
        info = self.client.import_labelset(name, rows, names, model=MODEL)
        expected = self._next_version(name)
        assert info.version == expected, (name, info.version, expected)
        unit = rows.astype(np.float32)
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        digest = hashlib.sha256(unit.tobytes()).hexdigest()
        self.model[name] = Expected(info.version, tuple(names), ("import", digest), unit)
        self._count("import")

    def _existing(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.model)), label="name")

    def _missing(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from([n for n in NAMES if n not in self.model]), label="name")

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = self._existing(data)
        self.client.delete_labelset(name)
        del self.model[name]
        self._count("delete")

    @precondition(lambda self: len(self.model) < len(NAMES))
    @rule(data=st.data())
    def missing_names(self, data: st.DataObject) -> None:
        """Every operation on a name that is not there is a NotFoundError (and writes nothing)."""
        name = self._missing(data)
        with pytest.raises(NotFoundError):
            self.client.delete_labelset(name)
        with pytest.raises(NotFoundError):
            self.client.classify(embeddings=np.ones((1, DIM), np.float32), labelset=name)
        with pytest.raises(NotFoundError):
            self.client.labelset(name)
        self._count("missing_names")

    @rule(drop_cache=st.booleans())
    def restart(self, drop_cache: bool) -> None:
        self.client.close()
        if drop_cache:
            shutil.rmtree(self.home / "cache", ignore_errors=True)
        self.client = self._open()
        self._count("restart_drop_cache" if drop_cache else "restart")

    # -- reads ---------------------------------------------------------------------------------

    def _check_answers(self, results: list[Any], name: str, n: int) -> None:
        exp = self.model[name]
        assert len(results) == n
        for r in results:
            assert r.labelset == name and r.version == exp.version, (r.version, exp.version)
            labels = [p.label for p in r.predictions]
            assert set(labels) <= set(exp.labels), (labels, exp.labels)
            assert len(labels) == min(5, len(exp.labels))
            total = sum(p.probability for p in r.predictions)
            if len(exp.labels) <= 5:  # all labels returned: softmax over all of them
                assert abs(total - 1.0) < 1e-4, total

    @precondition(lambda self: self.model)
    @rule(data=st.data(), pick=st.integers(0, 10))
    def classify_embeddings(self, data: st.DataObject, pick: int) -> None:
        name = self._existing(data)
        exp = self.model[name]
        _, matrix = self.client.embeddings(name)
        i = pick % len(exp.labels)
        results = self.client.classify(embeddings=matrix[i : i + 1], labelset=name, k=5)
        self._check_answers(results, name, 1)
        top = results[0].predictions[0]
        assert top.label == exp.labels[i], (top, exp.labels[i])
        assert abs(top.score - 1.0) < 1e-4, top.score
        self._count("classify_embeddings")

    @precondition(lambda self: self.model)
    @rule(data=st.data(), colors=st.lists(st.sampled_from(COLORS), min_size=1, max_size=3))
    def classify_image(self, data: st.DataObject, colors: list[tuple[int, int, int]]) -> None:
        name = self._existing(data)
        images = [_png(c) for c in colors]
        self._check_answers(self.client.classify(images, labelset=name, k=5), name, len(images))
        self._count("classify_image")

    @precondition(lambda self: self.observer_enabled)
    @rule(name=st.sampled_from(NAMES))
    def observe(self, name: str) -> None:
        """A long-lived second client (like the service): after refresh() it serves the
        current version, whatever happened in between."""
        if self.observer is None:
            self.observer = self._open()
        self.observer.backend.refresh()  # type: ignore[attr-defined]
        if name not in self.model:
            with pytest.raises(NotFoundError):
                self.observer.classify(embeddings=np.ones((1, DIM), np.float32), labelset=name)
            return
        exp = self.model[name]
        _, matrix = self.client.embeddings(name)
        results = self.observer.classify(embeddings=matrix[:1], labelset=name, k=5)
        self._check_answers(results, name, 1)
        assert results[0].predictions[0].label == exp.labels[0]
        self._count("observe")

    # -- after every step ------------------------------------------------------------------------

    @invariant()
    def store_index_and_model_agree(self) -> None:
        report = check_store(self.store, strict=True)
        assert report.ok, report.problems
        settings_ = Settings(home=self.home, database_url=self.url)
        assert check_caches(settings_, self.store) == []
        listed = {i.name: i for i in self.client.labelsets()}
        assert set(listed) == set(self.model), (sorted(listed), sorted(self.model))
        for name, exp in self.model.items():
            info = listed[name]
            assert info.version == exp.version and info.num_labels == len(exp.labels)
            assert info.model == MODEL
            names, matrix = self.client.embeddings(name)
            assert tuple(names) == exp.labels
            assert matrix.shape == (len(exp.labels), DIM) and matrix.dtype == np.float32
            if exp.rows is not None:
                assert np.allclose(matrix, exp.rows, atol=1e-3)


def _machine(backend: str, workdir: Path, observer: bool, **extra: Any) -> type[StoreMachine]:
    attrs = {
        "backend": backend,
        "workdir": workdir,
        "observer_enabled": observer,
        "stats": {"examples": 0},
        **extra,
    }
    return type(f"StoreMachine_{backend}", (StoreMachine,), attrs)


def _run(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    examples: int,
    steps: int,
    derandomize: bool,
) -> None:
    extra: dict[str, Any] = {}
    if backend == "postgresql":
        request.applymarker(pytest.mark.postgres)
        pg_url = request.getfixturevalue("pg_url")
        extra = {
            "pg_admin": request.getfixturevalue("pg_admin_engine"),
            "pg_base_url": pg_url.split("?")[0],
        }
    # The observer step is what found SQLite's id reuse under refresh()
    # (test_refresh_sees_delete_and_recreate is its deterministic regression test).
    machine = _machine(backend, tmp_path, observer=True, **extra)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=derandomize,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print(f"K3 {backend}: {machine.stats}")
    stats = machine.stats
    assert stats["examples"] >= examples
    assert stats.get("register", 0) + stats.get("import", 0) >= examples
    assert stats.get("classify_image", 0) + stats.get("classify_embeddings", 0) > 0


@pytest.fixture(scope="module", autouse=True)
def _warm_model() -> None:
    """Load zsindex-tiny once, so the first example's steps are not charged for it."""
    from zsindex.encoders import load_encoder

    load_encoder(MODEL, None, "cpu").load()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_state_machine(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # Derandomised in the fast tier (the same examples every run); the slow tier explores.
    # PostgreSQL's checker (schema drift by reflection) costs ~0.1 s a step: fewer steps there.
    examples, steps = (12, 25) if backend == "sqlite" else (8, 20)
    _run(backend, request, tmp_path, examples=examples, steps=steps, derandomize=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_state_machine_long(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    _run(backend, request, tmp_path, examples=50, steps=40, derandomize=False)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_refresh_sees_delete_and_recreate(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A long-lived backend's refresh() after another process deleted and re-created a label
    set: SQLite hands the new version the deleted one's row id (what the ``observe`` step
    found); the new labels must be served, not the cached old ones."""
    if backend == "postgresql":
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'reuse.sqlite3'}"
    rng = np.random.default_rng(0)
    reader = Client.local(database_url=url, home=tmp_path / "reader", device="cpu")
    writer = Client.local(database_url=url, home=tmp_path / "writer", device="cpu")
    try:
        old = rng.standard_normal((3, DIM)).astype(np.float32)
        writer.import_labelset("x", old, ["a", "b", "c"], model=MODEL)
        assert reader.classify(embeddings=old[:1], labelset="x")[0].predictions[0].label == "a"
        writer.delete_labelset("x")
        new = rng.standard_normal((2, DIM)).astype(np.float32)
        writer.import_labelset("x", new, ["dog", "cat"], model=MODEL)
        reader.backend.refresh()  # type: ignore[attr-defined]
        [r] = reader.classify(embeddings=new[:1], labelset="x", k=5)
        assert {p.label for p in r.predictions} == {"dog", "cat"}, r.predictions
    finally:
        reader.close()
        writer.close()
