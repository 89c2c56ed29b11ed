"""A 7-rank taxonomy imported through ``labels import`` (TreeOfLife-style names), classified at
every rank.

``--leaves`` species (default 200,000) under a synthetic kingdom→species tree; each species gets
a synthetic vector near its genus (itself near its family, ...); internal nodes get the mean of
their descendants (``--embed-internal mean``). Queries are image-like (0.3 × a species vector +
0.95 × noise). Reports import time and, per rank and mode, the latency per image at batch 64.

    .venv/bin/python benchmarks/bench_taxonomy_ranks.py
    .venv/bin/python benchmarks/bench_taxonomy_ranks.py --leaves 20000   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_registration import make_model

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
FANOUT = (2, 5, 5, 6, 6, 6)  # children per node down to genus (1,080 genera at the default)


def taxonomy(leaves: int, dim: int, seed: int = 0) -> tuple[list, np.ndarray]:
    """TreeOfLife-style rows ``[[kingdom … species], common_name]`` and one vector per row."""
    rng = np.random.default_rng(seed)
    paths: list[list[int]] = [[]]
    vecs = {(): np.zeros(dim, np.float32)}
    for fan in FANOUT:
        nxt = []
        for p in paths:
            for c in range(fan):
                key = (*p, c)
                v = vecs[tuple(p)] + rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
                vecs[key] = v
                nxt.append(list(key))
        paths = nxt
    genera = paths
    rows, out = [], np.empty((leaves, dim), np.float32)
    for i in range(leaves):
        g = genera[i % len(genera)]
        names = [f"{RANKS[d]}-{'.'.join(map(str, g[: d + 1]))}" for d in range(len(g))]
        rows.append([[*names, f"species {i}"], f"common {i}"])
        v = vecs[tuple(g)] + 0.7 * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
        out[i] = v / np.linalg.norm(v)
    return rows, out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--leaves", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    from zsindex import Client
    from zsindex.cli.files import names_file, read_npy

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows, vecs = taxonomy(args.leaves, args.dim)
        (tmp / "names.json").write_text(json.dumps(rows))
        np.save(tmp / "emb.npy", vecs.astype(np.float16))
        model = make_model(tmp / "model", args.dim)
        client = Client.local(
            home=tmp / "home", device="cpu", database_url=f"sqlite:///{tmp / 'db.sqlite3'}"
        )
        backend = client.backend
        start = time.perf_counter()
        # What `zsindex labels import --embed-internal mean` does: the memory-mapped .npy and
        # the names file's text, handed to the backend.
        info = backend.import_labelset(
            "tol",
            read_npy(tmp / "emb.npy"),
            names_file(tmp / "names.json"),
            model=model,
            embed_internal="mean",
        )
        took = time.perf_counter() - start
        print(
            f"imported {args.leaves:,} species -> {info.num_labels:,} nodes, depth {info.depth}, "
            f"in {took:.1f} s"
        )
        rng = np.random.default_rng(5)
        idx = rng.integers(0, args.leaves, args.batch)
        noise = rng.standard_normal((args.batch, args.dim)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        q = 0.3 * vecs[idx] + 0.95 * noise
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        client.classify(embeddings=q[:2], labelset="tol", k=5)  # load (and cache) the index
        report = {
            "machine": platform.machine(),
            "leaves": args.leaves,
            "nodes": info.num_labels,
            "import_s": took,
            "batch": args.batch,
            "ms_per_image": {},
        }
        print(
            f"{'rank':<9} {'beam':>10} {'marginal':>10} {'chils':>10}   (ms per image, "
            f"batch {args.batch})"
        )
        for depth, rank in enumerate(RANKS, 1):
            row = {}
            for mode in ("beam", "marginal", "chils"):
                start = time.perf_counter()
                res = client.classify(embeddings=q, labelset="tol", mode=mode, rank=rank, k=5)
                row[mode] = (time.perf_counter() - start) / args.batch * 1000
                assert all(len(r.path) == depth for r in res), (mode, rank)
            report["ms_per_image"][rank] = row  # type: ignore[index]
            print(f"{rank:<9} {row['beam']:>10.2f} {row['marginal']:>10.2f} {row['chils']:>10.2f}")
        start = time.perf_counter()
        client.classify(embeddings=q, labelset="tol", mode="flat", k=5)
        flat = (time.perf_counter() - start) / args.batch * 1000
        print(f"flat over all species: {flat:.2f} ms per image")
        report["flat_ms_per_image"] = flat
        client.close()
        print(json.dumps(report))


if __name__ == "__main__":
    main()
