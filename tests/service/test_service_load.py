"""L1 (bounded): steady classify load at concurrency 4/8/16 over the real LocalBackend through a
live server — no errors, every answer complete, and concurrent requests do share forwards.
Latency percentiles are printed (``-s``); the timed comparison is ``benchmarks/bench_service.py``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from svc_helpers import API_KEY, needs_local, png_bytes

from zsindex.client import Client
from zsindex.config import Settings

pytestmark = needs_local

PER_LEVEL = 24
TIME_CAP_S = 20.0


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory, model_name: str) -> Iterator[str]:
    from zsindex.local import LocalBackend
    from zsindex.service.app import create_app
    from zsindex.service.server import BackgroundServer

    root: Path = tmp_path_factory.mktemp("l1")
    settings = Settings(
        home=root / "home",
        database_url=f"sqlite:///{root / 'l1.sqlite3'}",
        model=model_name,
        pretrained=None,
        device="cpu",
        api_keys=(API_KEY,),
    )
    with Client.local(settings=settings) as admin:
        admin.add_labelset(
            "shapes", ["circle", "square", "star"], model=model_name, templates=["a {}"]
        )
    app = create_app(settings, LocalBackend(settings), batching=True)
    with BackgroundServer(app) as server:
        yield server.base_url


def _level(base: str, concurrency: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(PER_LEVEL))
    deadline = time.monotonic() + TIME_CAP_S
    images = [png_bytes((i * 40 % 256, 90, 200 - i * 10), size=(40, 40)) for i in range(8)]

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                r = http.post(
                    "/v1/classify",
                    data={"labelset": "shapes", "k": "2"},
                    files=[("images", (f"{i}.png", images[i % 8], "image/png"))],
                )
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}: {r.text[:120]}")
                    elif r.json()[0]["image"] != f"{i}.png" or len(r.json()[0]["predictions"]) != 2:
                        errors.append(f"wrong answer for {i}: {r.text[:120]}")
                    else:
                        latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIME_CAP_S + 30)
    return latencies, errors


def test_steady_load_has_no_errors_and_batches(server_url: str) -> None:
    for concurrency in (4, 8, 16):
        latencies, errors = _level(server_url, concurrency)
        assert not errors, errors[:3]
        assert latencies
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        print(
            f"L1 c={concurrency}: n={len(latencies)} p50 {p50:.0f} p95 {p95:.0f} p99 {p99:.0f} ms"
        )
    metrics = httpx.get(f"{server_url}/metrics").text
    total = float(re.search(r"^zsindex_batch_images_sum (\S+)$", metrics, re.M).group(1))
    count = float(re.search(r"^zsindex_batch_images_count (\S+)$", metrics, re.M).group(1))
    assert total >= 3 * PER_LEVEL * 0.5
    assert total / count > 1.0, "concurrent requests never shared a forward"
