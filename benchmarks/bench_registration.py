"""Registration throughput: a 100k-label taxonomy CSV, and a 1M x 512 float16 import.

1. A synthetic 7-rank taxonomy CSV (``--taxa`` leaf rows, default 100,000; one node per distinct
   path prefix) registered with ``zsindex-tiny`` and one template, end to end (parse, validate,
   load the model, encode, store). First as a user runs it: a one-shot ``zsindex labels add``
   command, a new process, wall clock (interpreter start, imports, store creation included; the
   model loads in a worker process meanwhile). Then through ``Client.local``'s backend in a
   fresh process (the model loads in process, store already open): labels/s (every tree node is
   a label), rows/s and store bytes per label; a second registration of the same content shows
   the cached path, and a third, of another taxonomy of the same shape, the warm path (model
   loaded, nothing cached). Two shapes (``--shape``): ``tree``, a realistic sorted taxonomy with
   binomial species names (~1.15 nodes per row), and ``random-paths``, a harsher one (~2 nodes
   per row, digit-per-token names).
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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from zsindex.options import LabelSource

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


_SYLLABLES = tuple(
    c + v for c in ("b", "c", "d", "g", "l", "m", "n", "p", "r", "s", "t", "v") for v in "aeiou"
)
_SUFFIX = {"phylum": "phyta", "class": "opsida", "order": "ales", "family": "aceae"}


def _word(index: int, salt: int, syllables: int = 3) -> str:
    """A pronounceable pseudo-Latin stem, distinct for each (index, salt)."""
    out = []
    x = index * 64 + salt  # salt < 64 keeps (index, salt) -> x one-to-one
    for _ in range(syllables):
        out.append(_SYLLABLES[x % len(_SYLLABLES)])
        x //= len(_SYLLABLES)
    while x:
        out.append(_SYLLABLES[x % len(_SYLLABLES)])
        x //= len(_SYLLABLES)
    return "".join(out)


def write_taxonomy(target: Path, leaves: int, seed: int = 0, start: int = 0) -> None:
    """A realistic 7-rank taxonomy in sorted order: each genus in one family, binomial species
    names ("Genus epithet", epithets from a shared pool of 3,000), fan-outs varying around
    3 phyla per kingdom, 4 classes, 6 orders, 7 families, 6 genera per parent and 8 species per
    genus (per 100k species: ~12k genera, ~2k families, ~300 orders)."""
    rng = np.random.default_rng(seed)
    endings = ("us", "a", "um", "ensis", "ii", "oides")
    epithets = [_word(i, 63, 2) + endings[i % len(endings)] for i in range(3000)]
    fan = {"kingdom": 3, "phylum": 4, "class": 6, "order": 7, "family": 6, "genus": 8}
    lines = [",".join(RANKS)]
    made = dict.fromkeys(RANKS, 0)
    path: list[str] = []

    def grow(depth: int) -> None:
        rank = RANKS[depth]
        if rank == "species":
            count = min(int(rng.geometric(1 / fan["genus"])), len(epithets))
            for k in rng.choice(len(epithets), size=count, replace=False):
                if made["species"] >= leaves:
                    return
                made["species"] += 1
                lines.append(",".join([*path, f"{path[-1]} {epithets[int(k)]}"]))
            return
        children = 0
        while made["species"] < leaves:
            name = _word(start + made[rank], depth).capitalize() + _SUFFIX.get(rank, "")
            made[rank] += 1
            children += 1
            path.append(name)
            grow(depth + 1)
            path.pop()
            if depth > 0 and rng.random() < 1 / fan[RANKS[depth - 1]]:
                return  # this parent has all its children

    grow(0)
    target.write_text("\n".join(lines) + "\n")


def write_random_paths(target: Path, leaves: int, seed: int = 0, start: int = 0) -> None:
    """The earlier, harsher shape: every row draws its kingdom..family path at random, so one
    genus (``genus{i // 25}``) sits under up to 25 families (~2 nodes per row), and numeric names
    tokenize one digit per token."""
    rng = np.random.default_rng(seed)
    fan = (3, 4, 6, 8, 10)  # kingdoms..families; genera and species vary below
    lines = [",".join(RANKS)]
    for i in range(leaves):
        path_ids = [int(rng.integers(0, f)) for f in fan]
        prefix = [f"{r}{'-'.join(map(str, path_ids[: k + 1]))}" for k, r in enumerate(RANKS[:5])]
        genus = f"genus{(start + i) // 25}"
        species = f"species {start + i}"
        lines.append(",".join([*prefix, genus, species]))
    target.write_text("\n".join(lines) + "\n")


SHAPES = {"tree": write_taxonomy, "random-paths": write_random_paths}


def bench_taxonomy(tmp: Path, taxa: int, shape: str = "tree") -> dict[str, float | str]:
    from zsindex.cli.files import label_file
    from zsindex.config import Settings
    from zsindex.local import LocalBackend

    def taxonomy(path: Path) -> LabelSource:
        """What ``zsindex labels add --file PATH --format taxonomy-csv`` hands the backend."""
        return label_file(path, "taxonomy-csv", node_text="name", allow_duplicates=False)

    csv = tmp / f"taxonomy-{shape}.csv"
    SHAPES[shape](csv, taxa)
    home = tmp / f"home-tax-{shape}"
    backend = LocalBackend(Settings(home=home, model="zsindex-tiny", pretrained=None, device="cpu"))
    _ = backend.store  # open (create) the store outside the timing
    db = home / "zsindex.sqlite3"
    size0 = db.stat().st_size
    start = time.perf_counter()
    info = backend.add_labelset("taxa", taxonomy(csv), templates="photo")
    first = time.perf_counter() - start
    size1 = db.stat().st_size + (
        db.with_name(db.name + "-wal").stat().st_size
        if db.with_name(db.name + "-wal").exists()
        else 0
    )
    start = time.perf_counter()
    backend.add_labelset("taxa2", taxonomy(csv), templates="photo")
    cached = time.perf_counter() - start
    # Warm: another taxonomy of the same shape with different names, in this process (model
    # loaded, nothing cached) -- what a running service pays.
    other = tmp / f"taxonomy-{shape}-other.csv"
    SHAPES[shape](other, taxa, 1, 1_000_000)
    start = time.perf_counter()
    warm_info = backend.add_labelset("taxa3", taxonomy(other), templates="photo")
    warm = time.perf_counter() - start
    n = info.num_labels
    out: dict[str, float | str] = {
        "shape": shape,
        "taxa_rows": taxa,
        "labels": n,
        "first_s": first,
        "labels_per_s": n / first,
        "rows_per_s": taxa / first,
        "warm_labels": warm_info.num_labels,
        "warm_s": warm,
        "warm_labels_per_s": warm_info.num_labels / warm,
        "cached_s": cached,
        "cached_labels_per_s": n / cached,
        "store_bytes_per_label": (size1 - size0) / n,
    }
    print(
        f"taxonomy CSV ({shape}): {taxa:,} rows -> {n:,} labels (tree nodes); first registration "
        f"{first:.1f} s = {n / first:,.0f} labels/s = {taxa / first:,.0f} rows/s (floor 10,000); "
        f"warm process, other names: {warm_info.num_labels:,} labels in {warm:.1f} s = "
        f"{warm_info.num_labels / warm:,.0f} labels/s = {taxa / warm:,.0f} rows/s; "
        f"same labels again (cache) {cached:.1f} s "
        f"({n / cached:,.0f} labels/s); store ~{out['store_bytes_per_label']:.0f} bytes/label"
    )
    backend.close()
    return out


def taxonomy_in_child(tmp: Path, taxa: int, shape: str) -> dict[str, float | str]:
    """:func:`bench_taxonomy` in a fresh interpreter, so each shape pays the imports and the
    model load as a ``zsindex labels add`` command would."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child-taxonomy",
            str(tmp),
            "--taxa",
            str(taxa),
            "--shape",
            shape,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))
    result: dict[str, float | str] = json.loads(lines[-1])
    return result


def cli_oneshot(tmp: Path, taxa: int, shape: str, runs: int = 2) -> dict[str, float | str]:
    """``zsindex labels add`` of the taxonomy CSV as a user runs it: a new process (interpreter
    start, imports, store creation and model load included), wall clock, ``runs`` times into
    fresh homes; the best and the worst run."""
    csv = tmp / f"taxonomy-{shape}-cli.csv"
    SHAPES[shape](csv, taxa, 2, 2_000_000)
    times = []
    labels = 0
    for run in range(runs):
        home = tmp / f"home-cli-{shape}-{run}"
        env = {**os.environ, "ZSINDEX_HOME": str(home), "ZSINDEX_DEVICE": "cpu"}
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from zsindex.cli.main import main; main()",  # what the console script runs
                "labels",
                "add",
                "taxa",
                "--file",
                str(csv),
                "--format",
                "taxonomy-csv",
                "--model",
                "zsindex-tiny",
                "--templates",
                "photo",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(time.perf_counter() - start)
        labels = int(json.loads(proc.stdout)["num_labels"])
    best, worst = min(times), max(times)
    print(
        f"one-shot CLI `zsindex labels add` ({shape}): {taxa:,} rows -> {labels:,} labels in "
        f"{best:.1f}-{worst:.1f} s = {labels / worst:,.0f}-{labels / best:,.0f} labels/s "
        f"(floor 10,000; ratio {labels / best / 10_000:.2f}x at best)"
    )
    return {
        "shape": shape,
        "labels": labels,
        "cli_best_s": best,
        "cli_worst_s": worst,
        "cli_labels_per_s_best": labels / best,
    }


IMPORT_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from zsindex.cli.files import names_file, read_npy
from zsindex.config import Settings
from zsindex.local import LocalBackend
home, emb, names, model = sys.argv[1:5]
backend = LocalBackend(Settings(home=Path(home), device="cpu"))
backend.store
start = time.perf_counter()
# What `zsindex labels import` does: the names file's text and the memory-mapped .npy.
matrix = read_npy(Path(emb))
info = backend.import_labelset("big", matrix, names_file(Path(names)), model=model)
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
    ap.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    ap.add_argument("--skip-import", action="store_true")
    ap.add_argument("--child-taxonomy", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_taxonomy:  # one measurement in this fresh process; JSON on the last line
        print(json.dumps(bench_taxonomy(Path(args.child_taxonomy), args.taxa, args.shape)))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        tmp = Path(d)
        shapes = list(SHAPES) if args.shape == "both" else [args.shape]
        report: dict[str, object] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "cli": [cli_oneshot(tmp, args.taxa, shape) for shape in shapes],
            "taxonomy": [taxonomy_in_child(tmp, args.taxa, shape) for shape in shapes],
        }
        if not args.skip_import:
            report["import"] = bench_import(tmp, args.rows, args.dim)
    _ = resource
    print(json.dumps(report))


if __name__ == "__main__":
    main()
