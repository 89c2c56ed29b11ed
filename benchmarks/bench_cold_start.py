"""Cold-start benchmark (index level): ``numpy.load`` of the fp32 ``.npy`` vs the verified cache.

Each measurement runs in a fresh Python process (imports done before the clock starts; the page
cache is warm for both, as after a restart of the service on the same machine), alternating
baseline and zsindex, and reports wall time and the child's peak RSS:

- ``np.load``: ``numpy.load`` of the ``[N, dim]`` float32 ``.npy`` (the floor's reference).
- ``cache.load``: ``IndexCache.load`` (manifest checks + crc32 of every payload byte + memory
  map), then ``ExactIndex`` ready, plus the label names payload decoded to a list of str (what the
  lead needs to cold-start without SQL).
- ``cache.load+search``: the same plus the first batch-1 search with exact probabilities.

Right before each child runs, the parent reads the file it will load once (so both start from
a warm page cache whatever else the machine's other processes evicted meanwhile). Peak memory
is the child's ``VmHWM`` (``ru_maxrss`` would include the parent's RSS at fork).

    .venv/bin/python benchmarks/bench_cold_start.py            # 1M x 512
    .venv/bin/python benchmarks/bench_cold_start.py --n 200000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CASES = ("np.load", "cache.load", "cache.load+search")
LOGIT_SCALE = 100.0
"""The synthetic matrix has no model: a CLIP-like ``logit_scale.exp()`` (ViT-B-32's is 100)."""


def child(case: str, directory: Path) -> None:
    from zsindex.index import IndexCache

    cache = IndexCache(directory / "cache")
    query = np.load(directory / "query.npy")
    start = time.perf_counter()
    if case == "np.load":
        matrix = np.load(directory / "matrix.npy")
        assert matrix.dtype == np.float32
    else:
        loaded = cache.load("bench", "exact")
        assert loaded is not None, "cache missing or rejected"
        assert len(loaded.extra["names"]) == loaded.index.count
        if "search" in case:
            res = loaded.index.search(query, 5, logit_scale=LOGIT_SCALE)
            assert res.exact_probabilities
    elapsed = time.perf_counter() - start
    status = Path("/proc/self/status").read_text()
    peak_kb = int(status.split("VmHWM:")[1].split()[0])
    print(json.dumps({"case": case, "seconds": elapsed, "peak_rss_mb": peak_kb / 1024}))


def prepare(directory: Path, n: int, dim: int) -> None:
    from zsindex.index import ExactIndex, IndexCache

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    matrix = np.empty((n, dim), np.float32)
    for a in range(0, n, 65536):
        block = rng.standard_normal((min(n, a + 65536) - a, dim)).astype(np.float32)
        matrix[a : a + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    np.save(directory / "matrix.npy", matrix)
    np.save(directory / "query.npy", matrix[:1])
    index = ExactIndex(matrix, check_finite=False)
    cache = IndexCache(directory / "cache")
    for stale in (directory / "cache").glob("*"):
        stale.unlink()
    names = [f"label number {i}" for i in range(n)]
    cache.store("bench", "exact", index, extra={"names": names})


def warm(path: Path) -> None:
    """Read ``path`` once so it sits in the page cache."""
    with open(path, "rb", buffering=0) as fh:
        while fh.read(64 << 20):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default="benchmarks/out/cold_start")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    directory = Path(args.dir)
    if args.child:
        child(args.child, directory)
        return
    prepare(directory, args.n, args.dim)
    size_mb = args.n * args.dim * 4 / 2**20
    print(f"{os.cpu_count()}-core {os.uname().machine}; matrix {args.n} x {args.dim} float32 = "
          f"{size_mb:.0f} MB (page cache warm)")  # fmt: skip
    times: dict[str, list[float]] = {c: [] for c in CASES}
    peaks: dict[str, list[float]] = {c: [] for c in CASES}
    from zsindex.index import IndexCache

    cache_file = IndexCache(directory / "cache").path_for("bench", "exact")
    for _ in range(args.repeats + 1):  # the first round is discarded
        for case in CASES:
            warm(directory / "matrix.npy" if case == "np.load" else cache_file)
            out = subprocess.run(
                [sys.executable, __file__, "--dir", str(directory), "--child", case],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            times[case].append(row["seconds"])
            peaks[case].append(row["peak_rss_mb"])
    base = statistics.median(times["np.load"][1:])
    results = {}
    for case in CASES:
        med = statistics.median(times[case][1:])
        results[case] = {"median_s": med, "peak_rss_mb": max(peaks[case][1:])}
        print(f"{case:26s} {med:.3f}s  ({med / base:.2f}x np.load)  "
              f"peak RSS {max(peaks[case][1:]):.0f} MB ({max(peaks[case][1:]) / size_mb:.2f}x "
              "the fp32 matrix)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
