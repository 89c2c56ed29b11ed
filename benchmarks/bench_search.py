"""Search benchmark: zsindex exact (and approximate) search vs the seed pipeline's dense torch path.

Data: ``--n`` clustered synthetic labels x ``--dim`` (``--clusters`` centres, labels near them),
stored as ``--dtype`` (fp16 by default, as label sets are stored), image-like queries
``normalize(0.3 * label + 0.95 * random unit vector)``, k=5.

Paths, timed interleaved in one run to share the machine's noise (see :func:`bench_exact`):
``torch`` (dense fp32 matmul + softmax + topk, the baseline), ``fp32`` (the exact index over an
fp32 copy: zsindex's exact path before the fp16 kernel), ``fp16`` (the exact index scanning the
stored fp16 rows with the ``_f16scan`` kernel, the default now) and ``int8`` (``CompressedIndex``,
skip with ``--no-compressed``). ``--rss`` measures each serving path's resident memory in its
own process, serving from a memory-mapped ``.npy`` (as the index cache does).
Approximate (``--ann``): recall@5-vs-speed curve of each spec on the same queries and what the
auto-tuner picks for recall 0.99.

    .venv/bin/python benchmarks/bench_search.py                 # 1M x 512, batches 1 and 256
    .venv/bin/python benchmarks/bench_search.py --n 200000 --ann ivf1024,hnsw32
    .venv/bin/python benchmarks/bench_search.py --ann '' --rss       # exact paths, RSS
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from types import SimpleNamespace
from typing import Any

import numpy as np


def clustered(n: int, dim: int, clusters: int, seed: int = 0, spread: float = 0.6) -> np.ndarray:
    """Unit vectors ``normalize(centre + spread * random unit)``, generated in chunks.

    ``spread`` 0.6: cosine ≈ 0.86 to the centre, ≈ 0.73 between labels of one cluster (tight
    clusters); 1.2: ≈ 0.64 and ≈ 0.41 (loose clusters: image-like queries' neighbours are then
    decided mostly by the query's noise, the hard case for any partition-based index).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 65536
    for a in range(0, n, step):
        b = min(n, a + step)
        noise = rng.standard_normal((b - a, dim)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        block = centres[rng.integers(0, clusters, b - a)] + spread * noise
        out[a:b] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_exact(
    matrix: np.ndarray,
    batches: list[int],
    repeats: int,
    scale: float,
    compressed: bool,
    singles: int = 32,
) -> list[dict]:
    """Time every exact path on the same queries, interleaved, one row per batch size.

    Paths: ``torch`` (dense fp32 matmul + softmax + topk, the baseline), ``fp32`` (the exact
    index over an fp32 copy: zsindex before the fp16 kernel, and what an fp32 label set gets),
    ``fp16`` (the exact index scanning the stored fp16 rows; only for an fp16 matrix) and
    ``int8`` (``CompressedIndex``, with ``compressed``).
    """
    import torch

    from zsindex.index import ExactIndex
    from zsindex.index.compressed import CompressedIndex
    from zsindex.index.tuner import simulate_image_queries

    torch.set_grad_enabled(False)
    paths: dict[str, Any] = {"fp32": ExactIndex(matrix, keep_fp32=True, check_finite=False)}
    if matrix.dtype == np.float16:
        paths["fp16"] = ExactIndex(matrix, check_finite=False)
        assert paths["fp16"].matrix.dtype == np.float16, "the fp16 kernel is not available"
    serving = paths.get("fp16", paths["fp32"])
    if compressed:
        start = time.perf_counter()
        paths["int8"] = CompressedIndex(serving)
        print(f"int8 copy built in {time.perf_counter() - start:.1f}s "
              f"({paths['int8'].nbytes / 2**20:.0f} MB)", flush=True)  # fmt: skip
    for name, index in paths.items():
        print(f"{name}: {index.nbytes / 2**20:,.0f} MB of label rows", flush=True)
    dense = torch.from_numpy(paths["fp32"].matrix)
    rows = []
    for batch in batches:
        # Batch 1 runs `singles` different queries one at a time (their costs differ: a
        # diffuse query's normaliser falls back to the fp32 pass); times are per call.
        calls = singles if batch == 1 else 1
        queries, _ = simulate_image_queries(paths["fp32"].matrix, batch * calls, seed=batch)
        parts = np.split(queries, calls)
        qts = [torch.from_numpy(p) for p in parts]

        def baseline(qts: list[Any] = qts) -> Any:
            out = [torch.topk(torch.softmax(scale * (qt @ dense.T), dim=1), 5, dim=1) for qt in qts]
            return SimpleNamespace(
                ids=torch.cat([o.indices for o in out]).numpy(),
                probabilities=torch.cat([o.values for o in out]).numpy(),
            )

        def search(index: Any, parts: list[np.ndarray] = parts, **kw: Any) -> Any:
            results = [index.search(p, 5, logit_scale=scale, **kw) for p in parts]
            bounds = [r.probability_bound for r in results]
            return SimpleNamespace(
                ids=np.concatenate([r.ids for r in results]),
                probabilities=np.concatenate([r.probabilities for r in results]),
                probability_bound=None if bounds[0] is None else np.concatenate(bounds),
                backend=results[0].backend,
            )

        # Agreement with the fp32 path (ids and probabilities) before timing.
        ref = search(paths["fp32"])
        row: dict[str, Any] = {"batch": batch, "queries": batch * calls}
        answers = {"torch": baseline(), **{n: search(i) for n, i in paths.items()}}
        for name, res in answers.items():
            row[f"{name}_same_ids_as_fp32"] = float((res.ids == ref.ids).mean())
            row[f"{name}_max_rel_prob_vs_fp32"] = float(
                np.abs(res.probabilities / ref.probabilities - 1.0).max()
            )
        if "int8" in paths:
            fallbacks = paths["int8"].fallbacks
            bound = search(paths["int8"]).probability_bound
            row["int8_fallbacks"] = paths["int8"].fallbacks - fallbacks
            row["int8_max_bound"] = float(bound.max()) if bound is not None else 0.0
        tracemalloc.start()
        search(serving)
        row["serving_peak_alloc_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        times: dict[str, list[float]] = {"torch": [], **{n: [] for n in paths}}
        for _ in range(repeats):
            times["torch"].append(timed(baseline) / calls)
            for name, index in paths.items():
                times[name].append(timed(lambda index=index: search(index)) / calls)
        for name, ts in times.items():
            row[f"{name}_median_s"] = statistics.median(ts)
            row[f"{name}_best_s"] = min(ts)
        rows.append(row)
        fp32_t = row["fp32_median_s"]
        for name in times:
            t = row[f"{name}_median_s"]
            print(
                f"batch={batch:4d} {name:5s} {t:.4f}s per call (best {row[f'{name}_best_s']:.4f})"
                f"  fp32 path / this {fp32_t / t:.2f}x  torch / this "
                f"{row['torch_median_s'] / t:.2f}x  ids = fp32 path "
                f"{row[f'{name}_same_ids_as_fp32']:.3f}  max rel dp "
                f"{row[f'{name}_max_rel_prob_vs_fp32']:.1e}",
                flush=True,
            )
        if "int8" in paths:
            print(f"            int8 bound max {row['int8_max_bound']:.1e}, fallbacks "
                  f"{row['int8_fallbacks']}/{row['queries']}", flush=True)  # fmt: skip
    return rows


def rss_mb() -> dict[str, float]:
    """This process's resident memory (``/proc/self/status``), MB: total, anonymous, file."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


RSS_KINDS = ("fp32", "fp16", "int8")


def rss_probe(path: str, kind: str, queries: int, scale: float) -> None:
    """Serve ``queries`` batch-1 searches with ``kind`` from the memory-mapped ``.npy`` at
    ``path`` (as the index cache does) and print the resident memory as JSON. ``fp32``: an
    fp32 cache file (zsindex before the fp16 kernel); ``fp16``/``int8``: the fp16 one."""
    from zsindex.index import ExactIndex
    from zsindex.index.compressed import CompressedIndex
    from zsindex.index.tuner import simulate_image_queries

    start = rss_mb()
    matrix = np.load(path, mmap_mode="r")
    index: Any = ExactIndex(matrix, check_finite=False)
    if kind == "int8":
        index = CompressedIndex(index)
    built = rss_mb()
    q, _ = simulate_image_queries(np.asarray(matrix[:65536], dtype=np.float32), queries, seed=123)
    for row in q:
        index.search(row, 5, logit_scale=scale)
    end = rss_mb()
    print(json.dumps({"kind": kind, "start": start, "built": built, "served": end}))


def bench_rss(matrix: np.ndarray, scale: float, queries: int) -> dict[str, Any]:
    """Each serving path in its own process, from a memory-mapped cache file."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        files = {"fp32": os.path.join(tmp, "labels32.npy")}
        np.save(files["fp32"], matrix.astype(np.float32))
        kinds = ["fp32"]
        if matrix.dtype == np.float16:
            files["fp16"] = files["int8"] = os.path.join(tmp, "labels16.npy")
            np.save(files["fp16"], matrix)
            kinds += ["fp16", "int8"]
        for kind in kinds:
            cmd = [sys.executable, __file__, "--rss-probe", kind, "--rss-file", files[kind],
                   "--rss-queries", str(queries), "--scale", str(scale)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            probe = json.loads(done.stdout.strip().splitlines()[-1])
            grown = probe["served"]["VmRSS"] - probe["start"]["VmRSS"]
            probe["index_rss_mb"] = grown
            out[kind] = probe
            print(f"rss {kind:5s}: +{grown:.0f} MB resident after {queries} batch-1 queries "
                  f"(anon +{probe['served']['RssAnon'] - probe['start']['RssAnon']:.0f} MB, "
                  f"file-backed +{probe['served']['RssFile'] - probe['start']['RssFile']:.0f} MB)"
                  f"  / fp32 path {grown / max(1.0, out['fp32']['index_rss_mb']):.2f}x",
                  flush=True)  # fmt: skip
    return out


def bench_ann(matrix: np.ndarray, specs: list[str], num_queries: int) -> list[dict]:
    from zsindex.index import IndexSpec
    from zsindex.index.ann import AnnIndex, build_faiss
    from zsindex.index.exact import ExactIndex
    from zsindex.index.tuner import simulate_image_queries, tune

    exact = ExactIndex(matrix, check_finite=False)
    tune_q, _ = simulate_image_queries(matrix, num_queries, seed=11)
    out = []
    for text in specs:
        spec = IndexSpec.parse(text)
        start = time.perf_counter()
        built = build_faiss(matrix, spec)
        build_s = time.perf_counter() - start
        index = AnnIndex(exact, spec, built, search_param=1)
        # min_speedup=0 records the whole curve up to the recall target; the real rule
        # (fall back unless faster than exact) is applied to the same numbers below.
        report = tune(index, tune_q, k=5, target_recall=0.99, min_speedup=0.0)
        hit = next((p for p in report.curve if p.recall >= 0.99), None)
        choice = hit.param if hit is not None and hit.speedup >= 1.0 else None
        print(f"ann {report.spec}: build {build_s:.1f}s, exact top-5 on {num_queries} queries "
              f"{report.exact_seconds:.3f}s")  # fmt: skip
        for p in report.curve:
            print(f"    {report.param_name}={p.param:5d}  recall@5 {p.recall:.4f}  "
                  f"{p.seconds:.3f}s  {p.speedup:.2f}x exact")  # fmt: skip
        verdict = f"{report.param_name}={choice}" if choice else "falls back to exact"
        print(f"    tuner @ recall 0.99: {verdict}", flush=True)
        out.append(
            {
                "spec": report.spec,
                "build_s": build_s,
                "exact_s": report.exact_seconds,
                "curve": [vars(p) for p in report.curve],
                "tuner_choice": choice,
            }
        )
        del index, built
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.6, help="label noise around centres")
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=100.0)
    parser.add_argument("--ann", default="ivf1024,ivf4096,sq8", help="specs ('' for none)")
    parser.add_argument("--tune-queries", type=int, default=256)
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--singles", type=int, default=32, help="batch-1 queries per timing")
    parser.add_argument("--no-compressed", action="store_true", help="skip the int8 path")
    parser.add_argument(
        "--dtype", choices=["fp16", "fp32"], default="fp16",
        help="label matrix dtype (fp16: what label sets are stored as by default)",
    )  # fmt: skip
    parser.add_argument("--rss", action="store_true", help="measure serving RSS per path")
    parser.add_argument("--rss-queries", type=int, default=20)
    parser.add_argument("--rss-probe", choices=RSS_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--rss-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_probe:
        rss_probe(args.rss_file, args.rss_probe, args.rss_queries, args.scale)
        return
    specs = _split_specs(args.ann) if args.ann else []
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"{__import__('os').cpu_count()} cores; n={args.n} dim={args.dim} "
          f"spread={args.spread}")  # fmt: skip
    matrix = clustered(args.n, args.dim, args.clusters, spread=args.spread)
    if args.dtype == "fp16":
        matrix = matrix.astype(np.float16)
    results: dict[str, Any] = {"n": args.n, "dim": args.dim, "spread": args.spread,
                               "dtype": args.dtype}  # fmt: skip
    batches = [int(b) for b in args.batches.split(",") if b]
    results["exact"] = (
        bench_exact(matrix, batches, args.repeats, args.scale, not args.no_compressed, args.singles)
        if batches
        else []
    )
    if args.rss:
        results["rss"] = bench_rss(matrix, args.scale, args.rss_queries)
    if specs:
        results["ann"] = bench_ann(matrix, specs, args.tune_queries)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


def _split_specs(text: str) -> list[str]:
    """Split ``ivf1024,ivf4096,sq8,hnsw32`` into specs (storage options stay attached)."""
    specs: list[str] = []
    for token in text.split(","):
        if specs and (token in ("sq8", "fp16", "flat") or "=" in token):
            specs[-1] += f",{token}"
        else:
            specs.append(token)
    return specs


if __name__ == "__main__":
    main()
