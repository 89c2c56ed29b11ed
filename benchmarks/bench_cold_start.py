"""Cold start of a replica with a large label set stored in PostgreSQL (issue 16, part 6).

One run measures, each case in a fresh Python process, zsindex next to its baseline:

- ``psycopg``: a plain psycopg 3 read of the same bytes (``SELECT data FROM embedding_chunks
  WHERE version_id = … ORDER BY chunk_index``, binary, streamed into one preallocated numpy
  buffer) — the floor for a cold start is ≤ 2× this.
- ``cold``: ``LocalBackend(settings).resolve(name)`` with a fresh, empty ``ZSINDEX_HOME`` (no
  local cache): the current version read from PostgreSQL, names and matrix, ready to search,
  then one batch-1 classify of a stored embedding. ``cache_s`` is when the local cache file was
  complete (written in the background; the child waits for it before it exits).
- ``np.load``: ``numpy.load`` of the ``[N, dim]`` float32 ``.npy`` — the floor for a second
  start with the local cache is ≤ 1.5× this.
- ``warm``: the same as ``cold`` in the ``ZSINDEX_HOME`` that ``cold`` just filled.
- ``serve-cold`` / ``serve-warm`` (``--serve``): spawning ``zsindex serve`` until ``/readyz``
  answers 200, fresh home then the filled one; peak RSS is the server's ``VmHWM``.

Import costs are measured separately (``python -c pass`` and ``import …`` in fresh processes) so
the table shows where a replica's time goes. Every clock in a child starts after its imports.
Peak memory is the child's ``VmHWM`` from ``/proc/self/status`` (``ru_maxrss`` may carry the
parent's RSS across ``exec``); it counts the memory-mapped cache pages a warm start touches.
The page cache is warm for every case (PostgreSQL's files and the ``.npy`` are read just before
by the cases around them): this measures the replica's own work, not the disk.

The label set (``cold1m``: 1M labels "label number i", 512 dims float32, unit rows, in its own
schema) is created once through ``Store.create_version`` (timed and printed) and reused while it
is intact (same shape, digest and model as recorded next to the ``.npy``). Its model is a random
512-d open_clip CLIP with tiny towers saved in local-dir layout (``zsindex serve`` loads a
version's model before ``/readyz`` says ready; offline, ViT-B-32's weights are not here)::

    .venv/bin/python benchmarks/bench_cold_start.py                  # 1M x 512, 2 rounds
    .venv/bin/python benchmarks/bench_cold_start.py --serve          # + zsindex serve → /readyz
    .venv/bin/python benchmarks/bench_cold_start.py --drop           # drop the schema and files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

NAME = "cold1m"
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CASES = ("psycopg", "cold", "np.load", "warm")
SERVE_CASES = ("serve-cold", "serve-warm")
IMPORTS = {
    "python -c pass": "pass",
    "import zsindex.local + loading path": (
        "import zsindex.local, zsindex.catalog.loading, zsindex.classify.classifier, "
        "zsindex.index.exact, zsindex.store.repository, psycopg"
    ),
    "import zsindex.service.app": "import zsindex.service.app",
    "import torch, open_clip (serve loads the model)": "import torch, open_clip",
}


def peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def store_url(schema: str) -> str:
    return f"{PG_BASE}?options=-csearch_path%3D{schema}"


# -- children ---------------------------------------------------------------------------------


def child_psycopg(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    meta = json.loads((Path(args.dir) / "meta.json").read_text())
    start = time.perf_counter()
    with psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test", options=f"-csearch_path={args.schema}"
    ) as conn:
        n, dim = conn.execute(
            "SELECT num_labels, dim FROM labelset_versions WHERE id = %s", (meta["version_id"],)
        ).fetchone()  # type: ignore[misc]
        out = np.empty((n, dim), np.float32)
        flat = out.reshape(-1).view(np.uint8)
        offset = 0
        with conn.cursor() as cur:
            for (data,) in cur.stream(
                "SELECT data FROM embedding_chunks WHERE version_id = %s ORDER BY chunk_index",
                (meta["version_id"],),
                binary=True,
            ):
                flat[offset : offset + len(data)] = np.frombuffer(data, np.uint8)
                offset += len(data)
    elapsed = time.perf_counter() - start
    assert offset == out.nbytes, (offset, out.nbytes)
    return {"seconds": elapsed, "check": float(out[-1, :4].sum())}


def child_npload(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    matrix = np.load(Path(args.dir) / "matrix.npy")
    elapsed = time.perf_counter() - start
    assert matrix.dtype == np.float32
    return {"seconds": elapsed, "check": float(matrix[-1, :4].sum())}


def child_zsindex(args: argparse.Namespace) -> dict[str, Any]:
    from zsindex.catalog import loading
    from zsindex.config import Settings
    from zsindex.local import LocalBackend

    settings = Settings.from_env()
    query = np.load(Path(args.dir) / "query.npy")
    start = time.perf_counter()
    backend = LocalBackend(settings)
    loaded = backend.resolve(NAME)
    ready = time.perf_counter() - start
    result = backend.classify(NAME, embeddings=query)
    first = time.perf_counter() - start
    assert loading.wait_for_cache_writes()
    cached = time.perf_counter() - start
    top = result[0].predictions[0]
    assert top.label == "label number 999999", top
    return {
        "seconds": ready,
        "first_classify_s": first,
        "cache_s": cached,
        "labels": loaded.num_labels,
    }


def child(args: argparse.Namespace) -> None:
    run = {"psycopg": child_psycopg, "np.load": child_npload}.get(args.child, child_zsindex)
    row = run(args)
    row["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(row))


# -- the label set ----------------------------------------------------------------------------


def matrix_for(n: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    matrix = np.empty((n, dim), np.float32)
    for a in range(0, n, 65536):
        block = rng.standard_normal((min(n, a + 65536) - a, dim)).astype(np.float32)
        matrix[a : a + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return matrix


def make_model(folder: Path, dim: int) -> str:
    """A random-weight open_clip CLIP with ``dim``-wide embeddings in local-dir layout: small
    towers (the service loads a version's model before it is ready), real weights file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": dim,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1,
                     "layers": 1},
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return f"local-dir:{folder.resolve()}"


def intact(directory: Path, schema: str, n: int, dim: int) -> bool:
    from zsindex.errors import NotFoundError
    from zsindex.store.repository import Store

    meta_path = directory / "meta.json"
    if not meta_path.exists() or not (directory / "matrix.npy").exists():
        return False
    meta = json.loads(meta_path.read_text())
    store = Store(store_url(schema))
    try:
        record = store.current(NAME)
    except NotFoundError:
        return False
    finally:
        store.close()
    shape = np.load(directory / "matrix.npy", mmap_mode="r").shape
    model_dir = directory / "model" / "open_clip_model.safetensors"
    return bool(
        model_dir.exists()
        and record.model.name == meta.get("model")
        and record.version_id == meta["version_id"]
        and record.digest == meta["digest"]
        and (record.num_labels, record.dim) == (n, dim) == tuple(shape)
        and meta["schema"] == schema
    )


def prepare(directory: Path, schema: str, n: int, dim: int) -> None:
    from sqlalchemy import create_engine, text

    from zsindex.store.records import LabelColumns, NewVersion
    from zsindex.store.repository import Store

    directory.mkdir(parents=True, exist_ok=True)
    admin = create_engine(PG_BASE)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    admin.dispose()
    if intact(directory, schema, n, dim):
        print(f"reusing label set {NAME!r} in schema {schema} ({n} x {dim})")
        return
    print(f"creating label set {NAME!r}: {n} x {dim} float32 in schema {schema} …")
    matrix = matrix_for(n, dim)
    np.save(directory / "matrix.npy", matrix)
    np.save(directory / "query.npy", matrix[-1:])
    names = [f"label number {i}" for i in range(n)]
    digest = hashlib.sha256(matrix.tobytes()).hexdigest()
    from zsindex.catalog.registration import model_spec
    from zsindex.encoders.pool import EncoderPool

    model = model_spec(EncoderPool("cpu").get(make_model(directory / "model", dim), None).info)
    new = NewVersion(
        labelset=NAME,
        model=model,
        labels=LabelColumns.flat(names),
        embeddings=matrix,
        templates=(),
        digest=digest,
        dtype="float32",
        source="bench_cold_start",
    )
    store = Store(store_url(schema))
    if NAME in {r.labelset for r in store.list_current()}:
        store.delete_labelset(NAME)  # one version only: the schema holds one 2 GB matrix
    start = time.perf_counter()
    record = store.create_version(new)
    elapsed = time.perf_counter() - start
    store.close()
    print(f"Store.create_version: {elapsed:.1f} s ({n / elapsed:,.0f} rows/s)")
    (directory / "meta.json").write_text(
        json.dumps(
            {
                "version_id": record.version_id,
                "digest": record.digest,
                "model": record.model.name,
                "schema": schema,
                "create_version_s": elapsed,
            }
        )
    )


def drop(directory: Path, schema: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_BASE)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()
    shutil.rmtree(directory, ignore_errors=True)
    print(f"dropped schema {schema} and {directory}")


# -- the parent -------------------------------------------------------------------------------


def child_env(home: Path, schema: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(
        ZSINDEX_HOME=str(home),
        ZSINDEX_DATABASE_URL=store_url(schema),
        ZSINDEX_DEVICE="cpu",
        ZSINDEX_OFFLINE="1",
    )
    return env


def run_child(case: str, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, "--dir", args.dir, "--schema", args.schema],
        capture_output=True,
        text=True,
        env=child_env(home, args.schema),
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{case} failed:\n{out.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def run_serve(home: Path, args: argparse.Namespace, port: int) -> dict[str, Any]:
    """Spawn ``zsindex serve`` and poll ``/readyz`` until 200; the server's VmHWM on the way."""
    zsindex = Path(sys.executable).with_name("zsindex")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(zsindex), "serve", "--port", str(port)],
        env=child_env(home, args.schema),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak_kb = 0
    seconds = None
    try:
        while time.perf_counter() - start < 400:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak_kb = max(peak_kb, int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError):
                pass
            if proc.poll() is not None:
                raise SystemExit(f"zsindex serve exited: {proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        seconds = time.perf_counter() - start
                        break
            except OSError:
                pass
            time.sleep(0.05)
        time.sleep(0.5)  # let a background cache write start, then read the final peak
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak_kb = max(peak_kb, int(status.split("VmHWM:")[1].split()[0]))
    finally:
        proc.terminate()  # SIGTERM: the service drains; a cache write in flight completes
        proc.wait(timeout=300)
    if seconds is None:
        raise SystemExit("zsindex serve never became ready")
    cached = len(list((home / "cache" / "index").glob("*.zsic")))
    return {"seconds": seconds, "peak_rss_mb": peak_kb / 1024, "cache_files_after": cached}


def import_costs(repeats: int) -> dict[str, float]:
    costs: dict[str, float] = {}
    for label, code in IMPORTS.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - start)
        costs[label] = statistics.median(times)
    return costs


BASELINE = {"cold": "psycopg", "warm": "np.load", "serve-cold": "psycopg", "serve-warm": "np.load"}
FLOOR = {"cold": 2.0, "warm": 1.5}


def report(
    rows: dict[str, list[dict[str, Any]]],
    med: dict[str, float],
    peak: dict[str, float],
    costs: dict[str, float],
    size_mb: float,
) -> None:
    print("\n| case | median s | vs baseline | peak RSS MB (x fp32 matrix) |")
    print("|---|---|---|---|")
    for case in med:
        base = BASELINE.get(case, "")
        ratio = f"{med[case] / med[base]:.2f}x {base}" if base in med else ""
        rss = f"{peak[case]:.0f} ({peak[case] / size_mb:.2f}x)"
        print(f"| {case} | {med[case]:.2f} | {ratio} | {rss} |")
    for case in ("cold", "warm"):
        if case in rows:
            first = statistics.median(r["first_classify_s"] for r in rows[case])
            cached = statistics.median(r["cache_s"] for r in rows[case])
            print(f"{case}: first classify at {first:.2f} s, cache file complete at {cached:.2f} s")
    for label, cost in costs.items():
        print(f"{label}: {cost:.2f} s (fresh process, wall)")
    for case, floor in FLOOR.items():
        ref = BASELINE[case]
        if case in med and ref in med:
            times = med[case] / med[ref]
            verdict = "meets" if times <= floor else "MISSES"
            print(f"floor {case} <= {floor}x {ref}: {times:.2f}x ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all cases (medians)")
    parser.add_argument("--schema", default="bench_cold")
    parser.add_argument("--dir", default="benchmarks/out/cold_start")
    parser.add_argument("--serve", action="store_true", help="also time zsindex serve → /readyz")
    parser.add_argument("--port", type=int, default=8917)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--drop", action="store_true", help="drop the schema and files, exit")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = Path(args.dir)
    if args.child:
        child(args)
        return
    if args.drop:
        drop(directory, args.schema)
        return
    prepare(directory, args.schema, args.n, args.dim)
    size_mb = args.n * args.dim * 4 / 2**20
    print(f"{os.cpu_count()}-core {os.uname().machine}, load {os.getloadavg()}; "
          f"{args.n} x {args.dim} float32 = {size_mb:.0f} MB in PostgreSQL")  # fmt: skip
    cases = [c for c in args.cases.split(",") if c]
    if args.serve:
        cases += list(SERVE_CASES)
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    for _ in range(args.rounds):
        home = Path(tempfile.mkdtemp(prefix="zsindex-cold-", dir=directory))
        serve_home = Path(tempfile.mkdtemp(prefix="zsindex-serve-", dir=directory))
        try:
            for case in cases:
                if case.startswith("serve"):
                    rows[case].append(run_serve(serve_home, args, args.port))
                else:
                    rows[case].append(run_child(case, args, home))
                print(f"  {case:10s} {json.dumps(rows[case][-1])}", flush=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(serve_home, ignore_errors=True)
    costs = import_costs(3)
    med = {c: statistics.median(r["seconds"] for r in rows[c]) for c in cases}
    peak = {c: max(r["peak_rss_mb"] for r in rows[c]) for c in cases}
    report(rows, med, peak, costs, size_mb)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rows": rows, "median_s": med, "peak_rss_mb": peak, "imports": costs}, indent=1
            )
        )


if __name__ == "__main__":
    main()
