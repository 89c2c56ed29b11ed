"""K1 over HTTP: a label set is re-registered alternately as version A and B (by another
``LocalBackend``, as the CLI or another replica would) while 8 clients classify through a live
server. Every response's labels belong to exactly the version it names, there is no 5xx, and a
client never sees versions go backwards. Fast run: 30 swaps; ``-m slow``: 120 swaps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from svc_helpers import API_KEY, needs_local, unit_rows

from zsindex.client import Client
from zsindex.config import Settings

pytestmark = needs_local

CLIENTS = 8
LABELS_A = [f"a{i}" for i in range(5)]
LABELS_B = [f"b{i}" for i in range(6)]


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, model_name: str
) -> Iterator[tuple[Settings, str, int]]:
    root = tmp_path_factory.mktemp("k1")
    model = model_name
    settings = Settings(
        home=root / "home",
        database_url=f"sqlite:///{root / 'k1.sqlite3'}",
        model=model,
        pretrained=None,
        device="cpu",
        api_keys=(API_KEY,),
    )
    with Client.local(settings=settings) as admin:
        dim = int(admin.add_labelset("probe", ["x"], model=model, templates=["{}"]).dim)
    yield settings, model, dim


def _run(setup: tuple[Settings, str, int], swaps: int, tmp_path: Path) -> None:
    from zsindex.local import LocalBackend
    from zsindex.service.app import create_app
    from zsindex.service.server import BackgroundServer

    settings, model, dim = setup
    name = f"k1-{swaps}"
    a_rows, b_rows = unit_rows(len(LABELS_A), dim, 1), unit_rows(len(LABELS_B), dim, 2)
    writer = Client.local(settings=settings)  # a separate backend: the "CLI"
    first = writer.import_labelset(name, a_rows, LABELS_A, model=model)
    base = first.version  # versions base, base+2, ... are A; base+1, base+3, ... are B

    app = create_app(settings, LocalBackend(settings), refresh_interval_s=0.05)
    stop = threading.Event()
    failures: list[str] = []
    seen: dict[int, list[int]] = {i: [] for i in range(CLIENTS)}
    counts = {"ok": 0, "5xx": 0, "other": 0}
    lock = threading.Lock()

    def classify_loop(index: int, base_url: str) -> None:
        emb = unit_rows(2, dim, seed=100 + index).tolist()
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/v1/classify", json={"labelset": name, "k": 3, "embeddings": emb})
                with lock:
                    if r.status_code >= 500:
                        counts["5xx"] += 1
                        failures.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    if r.status_code != 200:
                        counts["other"] += 1
                        failures.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    counts["ok"] += 1
                for result in r.json():
                    version = result["version"]
                    expected = LABELS_A if (version - base) % 2 == 0 else LABELS_B
                    labels = {p["label"] for p in result["predictions"]}
                    if not labels <= set(expected):
                        failures.append(f"v{version}: {sorted(labels)} not in {expected}")
                versions = {res["version"] for res in r.json()}
                if len(versions) != 1:
                    failures.append(f"mixed versions in one response: {versions}")
                seen[index].append(max(versions))

    with BackgroundServer(app) as server:
        threads = [
            threading.Thread(target=classify_loop, args=(i, server.base_url), daemon=True)
            for i in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 240
        try:
            for swap in range(swaps):
                rows, labels = (b_rows, LABELS_B) if swap % 2 == 0 else (a_rows, LABELS_A)
                writer.import_labelset(name, rows, labels, model=model)
                time.sleep(0.01)
                if time.monotonic() > deadline:
                    break
            time.sleep(0.3)  # let clients see the last version
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    writer.close()

    assert counts["5xx"] == 0, failures[:5]
    assert counts["other"] == 0, failures[:5]
    assert not failures, failures[:5]
    assert counts["ok"] >= CLIENTS
    for index, versions in seen.items():
        assert versions == sorted(versions), f"client {index} went backwards: {versions}"
    final = base + swaps
    assert max(max(v) for v in seen.values() if v) == final  # the last swap became visible
    distinct = {v for vs in seen.values() for v in vs}
    assert len(distinct) >= 3  # the clients did run across swaps


def test_hot_swap_under_load(setup: tuple[Settings, str, int], tmp_path: Path) -> None:
    _run(setup, swaps=30, tmp_path=tmp_path)


@pytest.mark.slow
def test_hot_swap_under_load_long(setup: tuple[Settings, str, int], tmp_path: Path) -> None:
    _run(setup, swaps=120, tmp_path=tmp_path)
