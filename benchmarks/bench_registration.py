"""Registration throughput: a 100k-label taxonomy CSV, and a 1M x 512 float16 import.

1. ``labels add`` of a synthetic 7-rank taxonomy CSV (``--taxa`` leaf rows, default 100,000;
   one node per distinct path prefix) with ``zsindex-tiny`` and one template, end to end
   (parse, validate, encode, store) through ``Client.local``'s backend: labels/s and store
   bytes per label. A second registration of the same content shows the cached path.
2. ``labels import`` of ``--rows`` x 512 float16 embeddings (default 1,000,000) with a names file,
   in a child process so its peak memory (max RSS) is measured alone; compared with the float32
   matrix size (the floor is 3x).

The baseline for (1) is the floor in the issue (10,000 labels/s); for (2) the 60 s floor.

    .venv/bin/python benchmarks/bench_registration.py
    .venv/bin/python benchmarks/bench_registration.py --taxa 20000 --rows 100000   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


def write_taxonomy(path: Path, leaves: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    fan = (3, 4, 6, 8, 10)  # kingdoms..families; genera and species vary below
    lines = [",".join(RANKS)]
    for i in range(leaves):
        path_ids = [int(rng.integers(0, f)) for f in fan]
        prefix = [f"{r}{'-'.join(map(str, path_ids[: k + 1]))}" for k, r in enumerate(RANKS[:5])]
        genus = f"genus{i // 25}"
        species = f"species {i}"
        lines.append(",".join([*prefix, genus, species]))
    path.write_text("\n".join(lines) + "\n")


def bench_taxonomy(tmp: Path, taxa: int) -> dict[str, float]:
    from zsindex.config import Settings
    from zsindex.local import LocalBackend

    csv = tmp / "taxonomy.csv"
    write_taxonomy(csv, taxa)
    home = tmp / "home-tax"
    backend = LocalBackend(Settings(home=home, model="zsindex-tiny", pretrained=None, device="cpu"))
    _ = backend.store  # open (create) the store outside the timing
    db = home / "zsindex.sqlite3"
    size0 = db.stat().st_size
    start = time.perf_counter()
    info = backend.add_labelset("taxa", file=csv, format="taxonomy-csv", templates="photo")
    first = time.perf_counter() - start
    size1 = db.stat().st_size + (
        db.with_name(db.name + "-wal").stat().st_size
        if db.with_name(db.name + "-wal").exists()
        else 0
    )
    start = time.perf_counter()
    backend.add_labelset("taxa2", file=csv, format="taxonomy-csv", templates="photo")
    cached = time.perf_counter() - start
    n = info.num_labels
    out = {
        "taxa_rows": taxa,
        "labels": n,
        "first_s": first,
        "labels_per_s": n / first,
        "cached_s": cached,
        "cached_labels_per_s": n / cached,
        "store_bytes_per_label": (size1 - size0) / n,
    }
    print(
        f"taxonomy CSV: {taxa:,} rows -> {n:,} nodes; first registration {first:.1f} s "
        f"({n / first:,.0f} labels/s, floor 10,000); same labels again (cache) {cached:.1f} s "
        f"({n / cached:,.0f} labels/s); store ~{out['store_bytes_per_label']:.0f} bytes/label"
    )
    backend.close()
    return out


IMPORT_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from zsindex.config import Settings
from zsindex.local import LocalBackend
home, emb, names, model = sys.argv[1:5]
backend = LocalBackend(Settings(home=Path(home), device="cpu"))
backend.store
start = time.perf_counter()
info = backend.import_files("big", embeddings_path=Path(emb), names_path=Path(names), model=model)
took = time.perf_counter() - start
print(json.dumps({"seconds": took, "labels": info.num_labels,
                  "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def make_model(folder: Path, dim: int) -> str:
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": dim,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "patch_size": 16,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    return f"local-dir:{folder}"


def bench_import(tmp: Path, rows: int, dim: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    emb_path = tmp / "emb.npy"
    arr = np.lib.format.open_memmap(emb_path, mode="w+", dtype=np.float16, shape=(rows, dim))
    for a in range(0, rows, 65536):
        block = rng.standard_normal((min(65536, rows - a), dim)).astype(np.float32)
        arr[a : a + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    arr.flush()
    del arr
    names = tmp / "names.txt"
    names.write_text("\n".join(f"taxon {i}" for i in range(rows)) + "\n")
    model = make_model(tmp / "model", dim)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            IMPORT_CHILD,
            str(tmp / "home-imp"),
            str(emb_path),
            str(names),
            model,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    fp32 = rows * dim * 4
    out = {
        "rows": rows,
        "dim": dim,
        "seconds": res["seconds"],
        "peak_rss_bytes": res["max_rss"],
        "peak_over_fp32": res["max_rss"] / fp32,
    }
    print(
        f"import {rows:,} x {dim} float16: {res['seconds']:.1f} s (floor 60 s); peak RSS "
        f"{res['max_rss'] / 2**30:.2f} GiB = {res['max_rss'] / fp32:.2f}x the float32 matrix "
        f"({fp32 / 2**30:.2f} GiB; floor 3x)"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--taxa", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--skip-import", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        tmp = Path(d)
        report = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "taxonomy": bench_taxonomy(tmp, args.taxa),
        }
        if not args.skip_import:
            report["import"] = bench_import(tmp, args.rows, args.dim)
    _ = resource
    print(json.dumps(report))


if __name__ == "__main__":
    main()
