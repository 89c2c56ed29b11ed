"""Version pinning (``NAME@N``) and rollback through ``LocalBackend`` on SQLite and PostgreSQL:
a pinned version answers exactly as that version did while current, is held beside the current
one and never swapped, and is dropped when the store no longer has it."""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zsindex import Client
from zsindex.classify import classifier as classifier_module
from zsindex.config import Settings
from zsindex.errors import InvalidInputError, NotFoundError
from zsindex.labels.refs import parse_ref
from zsindex.labels.validate import validate_labelset_name
from zsindex.local import LocalBackend

DIM = 128
V1 = ["a", "b", "c"]
V2 = ["a", "b", "c", "d", "e"]


def _unit(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


QUERY = _unit(4, 99)


def _plain(results: list[Any]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=db_url, device="cpu", model="zsindex-tiny")


def _backend(settings: Settings) -> LocalBackend:
    return LocalBackend(settings)


def test_references_parse_and_names_never_hold_an_at() -> None:
    assert parse_ref("shapes") == ("shapes", None)
    assert parse_ref("shapes@3") == ("shapes", 3)
    assert parse_ref("shapes@03") == ("shapes", 3)
    for bad in ("shapes@", "shapes@x", "shapes@0", "shapes@-1", "shapes@3@4", "shapes@3.0", "s@³"):
        with pytest.raises(InvalidInputError, match="after '@' give a version number from 1"):
            parse_ref(bad)
    with pytest.raises(InvalidInputError, match="invalid label set name"):
        validate_labelset_name("shapes@3")  # so the first '@' always starts the version


def test_a_pinned_version_answers_as_it_did_while_current(settings: Settings) -> None:
    with Client.local(settings=settings) as client:
        client.import_labelset("p", _unit(len(V1), 1), V1)
        then = client.classify(embeddings=QUERY, labelset="p", k=5)
        client.import_labelset("p", _unit(len(V2), 2), V2)
        now = client.classify(embeddings=QUERY, labelset="p", k=5)
        pinned = client.classify(embeddings=QUERY, labelset="p@1", k=5)
        assert {r.version for r in now} == {2} and {r.version for r in pinned} == {1}
        assert _plain(pinned) == _plain(then)
        assert _plain(client.classify(embeddings=QUERY, labelset="p@2", k=5)) == _plain(now)
        assert client.labelset("p@1").num_labels == 3 and not client.labelset("p@1").current
        assert client.embeddings("p@1")[0] == V1 and client.tree("p@1").names == V1
        with pytest.raises(NotFoundError, match=r"'p' has no version 3 \(see `zsindex labels"):
            client.classify(embeddings=QUERY, labelset="p@3")
        with pytest.raises(InvalidInputError, match="'p@x'"):
            client.classify(embeddings=QUERY, labelset="p@x")
        with pytest.raises(NotFoundError, match="'q' does not exist"):
            client.labelset("q@1")


def test_pins_are_held_beside_the_current_version_and_never_swapped(settings: Settings) -> None:
    writer = Client.local(settings=settings)  # another process: the CLI or another replica
    writer.import_labelset("p", _unit(len(V1), 1), V1)
    writer.import_labelset("p", _unit(len(V2), 2), V2)
    backend = _backend(settings)
    try:
        assert backend.resolve("p@1").version == 1 and backend.resolve("p").version == 2
        assert set(backend.classifier.loaded()) == {"p"}
        assert set(backend.classifier.pinned()) == {"p@1"}
        assert backend.classifier.held("p@1") is backend.resolve("p@01")  # one key, one load
        writer.import_labelset("p", _unit(2, 3), ["x", "y"])  # version 3
        report = backend.sync()
        assert report.installed == ["p"] and report.unpinned == [] and not report.removed
        assert backend.resolve("p").version == 3 and backend.resolve("p@1").num_labels == 3
        assert readiness_versions(backend) == {"p": 3}  # readiness names current versions only
    finally:
        backend.close()
        writer.close()


def readiness_versions(backend: LocalBackend) -> dict[str, int]:
    return {name: info["version"] for name, info in backend.ready()["loaded"].items()}


def test_a_pin_is_dropped_when_the_store_no_longer_has_that_version(settings: Settings) -> None:
    writer = Client.local(settings=settings)
    writer.import_labelset("p", _unit(len(V1), 1), V1)
    backend = _backend(settings)
    try:
        assert backend.resolve("p@1").names == V1
        writer.delete_labelset("p")
        writer.import_labelset("p", _unit(2, 5), ["new1", "new2"])  # a new "version 1"
        report = backend.sync()
        assert report.unpinned == ["p@1"]
        assert backend.resolve("p@1").names == ["new1", "new2"]
        writer.delete_labelset("p")
        assert backend.sync().unpinned == ["p@1"]
        with pytest.raises(NotFoundError):
            backend.resolve("p@1")
        # Deleted here: dropped at once, without a sync.
        local = Client.from_backend(backend)
        local.import_labelset("p", _unit(len(V1), 1), V1)
        backend.resolve("p@1")
        local.delete_labelset("p")
        assert backend.classifier.pinned() == {}
    finally:
        backend.close()
        writer.close()


def test_pins_load_once_and_the_least_recently_used_goes_first(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zsindex.catalog.loading as loading

    with Client.local(settings=settings) as client:
        for i in range(3):
            client.import_labelset("p", _unit(3 + i, i), [f"l{j}" for j in range(3 + i)])
    loads: list[tuple[str, int]] = []
    real = loading.load_version

    def counted(store: Any, name: str, number: int, s: Settings) -> Any:
        loads.append((name, number))
        return real(store, name, number, s)

    monkeypatch.setattr(loading, "load_version", counted)
    monkeypatch.setattr(classifier_module, "MAX_PINNED", 2)
    backend = _backend(settings)
    try:
        barrier = threading.Barrier(8)

        def first_request() -> None:
            barrier.wait()
            backend.resolve("p@1")

        threads = [threading.Thread(target=first_request) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert loads == [("p", 1)]  # eight concurrent first requests, one load
        backend.resolve("p@2")
        assert backend.classifier.held("p@1") is not None  # a service hit is a use too:
        # p@2 is now the least recently used
        backend.resolve("p@3")
        assert list(backend.classifier.pinned()) == ["p@1", "p@3"]
        backend.resolve("p@2")
        assert loads == [("p", 1), ("p", 2), ("p", 3), ("p", 2)]
    finally:
        backend.close()


def test_rollback_serves_the_old_content_as_a_new_version_everywhere(settings: Settings) -> None:
    admin = Client.local(settings=settings)
    admin.import_labelset("p", _unit(len(V1), 1), V1)
    then = admin.classify(embeddings=QUERY, labelset="p", k=5)
    admin.import_labelset("p", _unit(len(V2), 2), V2)
    replica = _backend(settings)  # another process already serving version 2
    try:
        assert replica.resolve("p").version == 2
        info = admin.rollback("p", 1)
        assert (info.version, info.current, info.rollback_of, info.unchanged) == (3, True, 1, False)
        assert info.digest == admin.labelset("p@1").digest
        now = admin.classify(embeddings=QUERY, labelset="p", k=5)  # this process: at once
        assert {r.version for r in now} == {3}
        strip = [{**d, "version": 0} for d in _plain(now)]
        assert strip == [{**d, "version": 0} for d in _plain(then)]
        assert replica.sync().installed == ["p"]  # the other: by its next sync, forwards
        assert replica.resolve("p").version == 3
        history = admin.history("p")
        assert [(h.version, h.current, h.rollback_of) for h in history] == [
            (1, False, None),
            (2, False, None),
            (3, True, 1),
        ]
        again = admin.rollback("p", 1)  # already holds that content: nothing new
        assert (again.version, again.unchanged) == (3, True)
        assert len(admin.history("p")) == 3
        assert admin.rollback("p", 2).version == 4
        for bad in (0, -1, True, 1.5, "1"):
            with pytest.raises(InvalidInputError, match="version must be a whole number"):
                admin.rollback("p", bad)  # type: ignore[arg-type]
        with pytest.raises(NotFoundError, match="has no version 9"):
            admin.rollback("p", 9)
        with pytest.raises(NotFoundError, match="does not exist"):
            admin.rollback("missing", 1)
    finally:
        replica.close()
        admin.close()
