"""Exact pruned search and the adaptive beam, side by side with exact flat search.

Data (dim 512, logit scale 100, image-like queries ``normalize(0.3 × a leaf + 0.95 × noise)``):

- trees of ``--coarse`` × ``--fine`` leaves (default 1,000 × 1,000), children
  ``normalize(centre + σ × unit noise)``, in two kinds: parents = the centre (children = parent
  + noise, ``bench_hierarchy.py``'s tree) and parents = the normalised mean of their children
  (``labels import``'s default); σ = 1.0 (``bench_hierarchy``'s), σ = 1.3 (looser: where a beam
  of 8 loses the flat answer) and a tight σ (``--tight``, default 0.15);
- flat sets of the same size: the tight rows shuffled (k-means groups built at load) and plain
  random unit rows (nothing to prune).

Per data set, in one run: exact flat top-5 (zsindex's exact index over the leaves), ``pruned``
(batch 1 over ``--single`` queries one at a time, and batch ``--queries``), whether its top-5
equals flat's (it must, always), its probability error bound and share of rows scored; for trees
also the adaptive beam (the default) and fixed beams: agreement with flat top-1 and time.

    .venv/bin/python benchmarks/bench_pruned.py
    .venv/bin/python benchmarks/bench_pruned.py --coarse 200 --fine 500 --queries 64   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_hierarchy import image_like, loaded_set

from zsindex.classify import hierarchy
from zsindex.classify.pruned import NORMALISER_TOLERANCE, groups_for
from zsindex.index.exact import ExactIndex
from zsindex.index.groups import Groups, kmeans_groups
from zsindex.index.pruned import pruned_search
from zsindex.options import DEFAULT_BEAM, DEFAULT_BEAM_TOLERANCE

SCALE = 100.0


def clustered(coarse: int, fine: int, dim: int, sigma: float, seed: int = 0) -> np.ndarray:
    """``[coarse + coarse·fine, dim]``: the centres, then each centre's children."""
    rng = np.random.default_rng(seed)
    out = np.empty((coarse + coarse * fine, dim), dtype=np.float32)
    centres = rng.standard_normal((coarse, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out[:coarse] = centres
    for c in range(coarse):
        noise = rng.standard_normal((fine, dim)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        block = centres[c] + sigma * noise
        a = coarse + c * fine
        out[a : a + fine] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def compare(
    index: ExactIndex,
    groups: Groups,
    queries: np.ndarray,
    single: int,
    subset: slice | None,
    repeat: int,
) -> dict[str, Any]:
    """Flat vs pruned at batch 1 (``single`` queries one by one) and at the full batch."""

    def flat(q: np.ndarray) -> Any:
        return index.search(q, 5, logit_scale=SCALE, subset=subset)

    def pruned(q: np.ndarray) -> Any:
        return pruned_search(
            index,
            groups,
            q,
            5,
            logit_scale=SCALE,
            tolerance=NORMALISER_TOLERANCE,
            flat_subset=subset,
        )

    out: dict[str, Any] = {}
    ones = [queries[i : i + 1] for i in range(single)]
    flat(ones[0]), pruned(ones[0])  # warm-up
    # Alternate the two sides, best of ``repeat`` each: the machine is shared, and a burst of
    # load then hits both sides alike.
    t_flat1 = t_pr1 = t_flat = t_pr = float("inf")
    for _ in range(repeat):
        t, flat1 = timed(lambda: [flat(q) for q in ones], 1)
        t_flat1 = min(t_flat1, t)
        t, pr1 = timed(lambda: [pruned(q) for q in ones], 1)
        t_pr1 = min(t_pr1, t)
        t, flat_b = timed(lambda: flat(queries), 1)
        t_flat = min(t_flat, t)
        t, pr_b = timed(lambda: pruned(queries), 1)
        t_pr = min(t_pr, t)
    same1 = all(np.array_equal(a.ids, b.result.ids) for a, b in zip(flat1, pr1, strict=True))
    errs1 = np.concatenate([b.probability_error for b in pr1])
    out["batch1"] = {
        "flat_ms": 1e3 * t_flat1 / single,
        "pruned_ms": 1e3 * t_pr1 / single,
        "speedup": t_flat1 / t_pr1,
        "top5_equal": same1,
        "fell_back": float(np.mean([b.fell_back[0] for b in pr1])),
        "scored_fraction": float(np.mean([b.scored_fraction[0] for b in pr1])),
        "error_median": float(np.median(errs1)),
        "error_max": float(errs1.max()),
    }
    out[f"batch{len(queries)}"] = {
        "flat_s": t_flat,
        "pruned_s": t_pr,
        "speedup": t_flat / t_pr,
        "top5_equal": bool(np.array_equal(flat_b.ids, pr_b.result.ids)),
        "fell_back": float(pr_b.fell_back.mean()),
        "scored_fraction": float(pr_b.scored_fraction.mean()),
        "error_median": float(np.median(pr_b.probability_error)),
        "error_max": float(pr_b.probability_error.max()),
    }
    return out


def beams(loaded: Any, queries: np.ndarray, truth: np.ndarray, repeat: int) -> dict[str, Any]:
    tree = loaded.tree
    out: dict[str, Any] = {}
    for label, width, tol in (
        ("adaptive (default)", DEFAULT_BEAM, DEFAULT_BEAM_TOLERANCE),
        ("fixed 8", 8, None),
        ("fixed 32", 32, None),
    ):

        def run(width: int = width, tol: float | None = tol) -> Any:
            return hierarchy.beam_search(
                loaded, queries, depth=tree.max_depth, beam=width, top=5, tolerance=tol
            )

        t, answers = timed(run, repeat)
        agree = float(np.mean([a.final.nodes[0] == x for a, x in zip(answers, truth, strict=True)]))
        out[label] = {"agreement": agree, "seconds": t}
    return out


def tree_case(
    name: str, matrix: np.ndarray, coarse: int, fine: int, args: argparse.Namespace
) -> dict[str, Any]:
    parents = np.r_[np.full(coarse, -1), np.repeat(np.arange(coarse), fine)].astype(np.int64)
    loaded = loaded_set(matrix, parents)
    tree = loaded.tree
    assert tree is not None
    leaves = tree.leaves
    subset = slice(int(leaves[0]), int(leaves[-1]) + 1)
    rng = np.random.default_rng(2)
    queries = image_like(loaded.matrix, rng.choice(leaves, args.queries, replace=False))
    start = time.perf_counter()
    groups = groups_for(loaded)
    assert groups is not None
    build = time.perf_counter() - start
    index = loaded.index
    assert isinstance(index, ExactIndex)
    res = compare(index, groups, queries, args.single, subset, args.repeat)
    truth = index.search(queries, 1, logit_scale=SCALE, subset=subset).ids[:, 0]
    res["beam"] = beams(loaded, queries, truth, args.repeat)
    res["groups"] = groups.describe() | {"build_s": build}
    return {name: res}


def flat_case(name: str, rows: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    index = ExactIndex(rows, check_finite=False)
    rng = np.random.default_rng(2)
    queries = image_like(rows, rng.choice(len(rows), args.queries, replace=False))
    start = time.perf_counter()
    groups = kmeans_groups(rows)
    build = time.perf_counter() - start
    res = compare(index, groups, queries, args.single, None, args.repeat)
    res["groups"] = groups.describe() | {"build_s": build}
    return {name: res}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--coarse", type=int, default=1000)
    ap.add_argument("--fine", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--single", type=int, default=16)
    ap.add_argument("--tight", type=float, default=0.15)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated case names to run")
    args = ap.parse_args()
    c, f, d = args.coarse, args.fine, args.dim
    report: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor()}",
        "leaves": c * f,
        "dim": d,
        "queries": args.queries,
    }
    only = set(filter(None, args.only.split(",")))

    def wanted(name: str) -> bool:
        return not only or name in only

    for sigma in (1.0, 1.3, args.tight):
        base = clustered(c, f, d, sigma)
        for kind in ("parent+noise", "mean-of-children"):
            name = f"tree sigma={sigma:g} {kind}"
            if not wanted(name):
                continue
            if kind == "mean-of-children":  # in place: the parent+noise case is done
                means = base[c:].reshape(c, f, d).mean(axis=1)
                base[:c] = means / np.linalg.norm(means, axis=1, keepdims=True)
            report.update(tree_case(name, base, c, f, args))
            print(json.dumps({name: report[name]}), flush=True)
        if sigma == args.tight and wanted(f"flat sigma={sigma:g} k-means"):
            rows = base[c:][np.random.default_rng(5).permutation(c * f)]
            report.update(flat_case(f"flat sigma={sigma:g} k-means", rows, args))
            print(
                json.dumps(
                    {f"flat sigma={sigma:g} k-means": report[f"flat sigma={sigma:g} k-means"]}
                ),
                flush=True,
            )
            del rows
        del base
    if wanted("flat random"):
        rng = np.random.default_rng(7)
        rows = rng.standard_normal((c * f, d)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        report.update(flat_case("flat random", rows, args))
        print(json.dumps({"flat random": report["flat random"]}), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
