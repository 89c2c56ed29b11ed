"""The registry swaps versions atomically: readers never see a mix, versions never go back."""

from __future__ import annotations

import threading
import time

import numpy as np

from zsindex.index import ExactIndex, IndexRegistry
from zsindex.index.registry import Entry


def _index_for(version: int, n: int = 64) -> ExactIndex:
    """An index whose every label points at axis ``version % 8``: answers name their version."""
    m = np.zeros((n, 8), np.float32)
    m[:, version % 8] = 1.0
    m[0] = 0.0
    m[0, (version + 1) % 8] = 1.0
    return ExactIndex(m)


def test_swap_under_threads_never_mixes() -> None:
    registry = IndexRegistry()
    registry.swap("pets", 0, _index_for(0), {"names": ["v0"]})
    stop = threading.Event()
    errors: list[str] = []
    seen: list[int] = []

    def reader() -> None:
        last = -1
        while not stop.is_set():
            entry = registry.get("pets")
            assert entry is not None
            if entry.version < last:
                errors.append(f"version went back {last} -> {entry.version}")
            last = entry.version
            axis = np.zeros((1, 8), np.float32)
            axis[0, entry.version % 8] = 1.0
            for _ in range(3):  # several searches against one held entry
                res = entry.index.search(axis, 1, logit_scale=100.0)
                if res.scores[0, 0] != 1.0 or entry.info["names"] != [f"v{entry.version}"]:
                    errors.append(f"entry {entry.version} answered like another version")
            seen.append(entry.version)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for version in range(1, 120):
        registry.swap("pets", version, _index_for(version), {"names": [f"v{version}"]})
        time.sleep(0.0005)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(seen)) > 5
    current = registry.get("pets")
    assert current is not None and current.version == 119


def test_older_int_version_not_installed() -> None:
    registry = IndexRegistry()
    registry.swap("a", 5, _index_for(5))
    old = registry.swap("a", 4, _index_for(4))
    assert old.version == 4  # the caller still gets what it asked for
    current = registry.get("a")
    assert current is not None and current.version == 5
    registry.swap("a", "digest-b", _index_for(6))  # string versions always replace
    current = registry.get("a")
    assert current is not None and current.version == "digest-b"


def test_get_or_load_is_single_flight() -> None:
    registry = IndexRegistry()
    calls: list[int] = []
    gate = threading.Barrier(8)

    def loader() -> ExactIndex:
        calls.append(1)
        time.sleep(0.05)
        return _index_for(3)

    results: list[Entry] = []

    def worker() -> None:
        gate.wait()
        results.append(registry.get_or_load("x", 3, loader))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(e) for e in results}) == 1
    entry = registry.get_or_load("x", 4, lambda: (_index_for(4), {"k": 1}))
    assert entry.version == 4 and entry.info == {"k": 1} and len(calls) == 1


def test_remove_and_names() -> None:
    registry = IndexRegistry()
    registry.swap("b", 1, _index_for(1))
    registry.swap("a", 1, _index_for(1))
    assert registry.names() == ["a", "b"]
    removed = registry.remove("a")
    assert removed is not None and registry.get("a") is None
    registry.clear()
    assert registry.names() == []
