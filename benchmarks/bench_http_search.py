#!/usr/bin/env python
"""``POST /v1/classify`` with embeddings at batch 1: HTTP + JSON latency vs the in-process call.

Registers two label sets in one SQLite store through the ``labels import`` path
(``LocalBackend.import_labelset`` of a memory-mapped fp16 ``.npy`` and a names file): a small one
(``--small`` labels, default 50) and a large one (``--n``, default 1,000,000) x ``--dim`` (512),
with a random-weight model of that width (embeddings-only requests never run it). Then, for
each set, ``--requests`` batch-1 classify calls with image-like query embeddings:

1. in process: ``Client.local().classify(embeddings=..., labelset=...)``;
2. over HTTP: a real ``python -m zsindex.service`` on 127.0.0.1, one keep-alive httpx client,
   ``POST /v1/classify`` ``{"labelset", "embeddings": [[...]], "k": 5}``, once with
   micro-batching on (the default; a lone request no longer waits for company) and once off.

Prints p50/p99 of both and the HTTP + JSON overhead (p50 difference), plus which index served.

    .venv/bin/python benchmarks/bench_http_search.py                  # 1M + 50 labels
    .venv/bin/python benchmarks/bench_http_search.py --n 200000 --requests 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_set(folder: Path, rows: int, dim: int, seed: int) -> tuple[Path, Path]:
    """A clustered fp16 ``.npy`` (image-like queries have near neighbours) and a names file."""
    from bench_search import clustered

    emb = folder / f"emb-{rows}.npy"
    arr = np.lib.format.open_memmap(emb, mode="w+", dtype=np.float16, shape=(rows, dim))
    step = 131072
    for a in range(0, rows, step):
        b = min(rows, a + step)
        arr[a:b] = clustered(b - a, dim, max(1, min(1000, (b - a) // 10)), seed=seed + a)
    arr.flush()
    del arr
    names = folder / f"names-{rows}.txt"
    names.write_text("".join(f"label {i}\n" for i in range(rows)))
    return emb, names


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def in_process(home: Path, name: str, queries: np.ndarray) -> dict[str, Any]:
    from zsindex import Client
    from zsindex.config import Settings

    with Client.local(settings=Settings(home=home, device="cpu")) as client:
        client.classify(embeddings=queries[:1], labelset=name)  # load (and build) the index
        times = []
        for q in queries:
            t0 = time.perf_counter()
            client.classify(embeddings=q[None, :], labelset=name)
            times.append((time.perf_counter() - t0) * 1e3)
        loaded = client.backend.ready()["loaded"][name]  # type: ignore[attr-defined]
    return {"p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "index": loaded["index"]}


def start_server(home: Path, batching: bool) -> tuple[subprocess.Popen[bytes], str]:
    from zsindex.service.server import free_port

    port = free_port()
    env = {
        **os.environ,
        "ZSINDEX_HOME": str(home),
        "ZSINDEX_DEVICE": "cpu",
        "ZSINDEX_BATCHING": "1" if batching else "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "zsindex.service", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        time.sleep(0.5)
    proc.kill()
    raise TimeoutError("server did not become ready")


def over_http(base: str, name: str, queries: np.ndarray) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=600) as http:
        body = {"labelset": name, "embeddings": [queries[0].tolist()], "k": 5}
        http.post("/v1/classify", json=body).raise_for_status()  # load the index
        times = []
        for q in queries:
            payload = json.dumps({"labelset": name, "embeddings": [q.tolist()], "k": 5})
            t0 = time.perf_counter()
            r = http.post(
                "/v1/classify", content=payload, headers={"content-type": "application/json"}
            )
            r.raise_for_status()
            r.json()
            times.append((time.perf_counter() - t0) * 1e3)
        ready = http.get("/readyz").json()
    index = ready.get("detail", {}).get("loaded", {}).get(name, {}).get("index")
    return {"p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "index": index}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--skip-large", action="store_true", help="only the small set")
    args = parser.parse_args()
    from bench_registration import make_model

    from zsindex.cli.files import names_file, read_npy
    from zsindex.config import Settings
    from zsindex.index.tuner import simulate_image_queries
    from zsindex.local import LocalBackend

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; sets {args.small} and "
          f"{args.n} x {args.dim}; {args.requests} batch-1 requests each")  # fmt: skip
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        model = make_model(tmp / "model", args.dim)
        sets = {"small": args.small} if args.skip_large else {"small": args.small, "large": args.n}
        queries: dict[str, np.ndarray] = {}
        backend = LocalBackend(Settings(home=home, device="cpu"))
        for name, rows in sets.items():
            emb, names = write_set(tmp, rows, args.dim, seed=rows)
            start = time.perf_counter()
            matrix = read_npy(emb)
            backend.import_labelset(name, matrix, names_file(names), model=model)
            print(f"labels import {name}: {rows:,} x {args.dim} fp16 in "
                  f"{time.perf_counter() - start:.1f}s", flush=True)  # fmt: skip
            queries[name], _ = simulate_image_queries(matrix, args.requests, seed=7)
            del matrix
        backend.close()
        for name in sets:
            local = in_process(home, name, queries[name])
            print(f"{name}: in-process p50 {local['p50_ms']:.2f} ms p99 {local['p99_ms']:.2f} ms"
                  f" ({local['index']})", flush=True)  # fmt: skip
            results[name] = {"rows": sets[name], "in_process": local}
        # Micro-batching (the default) holds a lone request up to ZSINDEX_BATCH_MAX_WAIT_MS
        # (4 ms) for company; batching off shows the HTTP + JSON cost alone.
        for batching in (True, False):
            tag = "batching on" if batching else "batching off"
            proc, base = start_server(home, batching)
            try:
                for name in sets:
                    remote = over_http(base, name, queries[name])
                    local = results[name]["in_process"]
                    overhead = remote["p50_ms"] - local["p50_ms"]
                    results[name][tag] = {"http": remote, "overhead_p50_ms": overhead}
                    print(f"{name} ({tag}): HTTP p50 {remote['p50_ms']:.2f} ms p99 "
                          f"{remote['p99_ms']:.2f} ms ({remote['index']}); HTTP + JSON "
                          f"overhead p50 {overhead:+.2f} ms", flush=True)  # fmt: skip
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
