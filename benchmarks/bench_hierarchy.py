"""Hierarchical classification benchmark on a synthetic clustered taxonomy.

Tree: ``--coarse`` parents × ``--fine`` children each (default 1,000 × 1,000 = 1M leaves) at
``--dim`` 512; parents are random unit vectors, children sit near their parent
(``normalize(parent + 1.0 * noise)``). Queries are image-like: ``normalize(0.3 × a leaf +
0.95 × a random unit vector)`` (cosine ≈ 0.3 to the right leaf, the modality gap).

Measured in one run, on the same data and queries (batch ``--queries``, default 256):
- exact flat search over all leaves (zsindex's exact index, the baseline for beam),
- ``beam`` at several widths: agreement of its top-1 with exact flat top-1, and time,
- ``marginal`` at the coarse rank vs a pure-Python per-label summation over the same
  probabilities (the pybioclip approach), on ``--python-queries`` queries (extrapolated per
  query, because the Python loop takes ~1 s per query per million leaves); results compared.

    .venv/bin/python benchmarks/bench_hierarchy.py                     # 1,000 × 1,000
    .venv/bin/python benchmarks/bench_hierarchy.py --coarse 200 --fine 200   # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time

import numpy as np

from zsindex.classify import hierarchy
from zsindex.classify.loaded import LoadedLabelSet, arrange
from zsindex.index.exact import ExactIndex
from zsindex.store.records import LabelColumns, ModelRecord, VersionRecord

LOGIT_SCALE = 100.0


def build_tree(coarse: int, fine: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(matrix [coarse + coarse*fine, dim] in registration order, parents)."""
    rng = np.random.default_rng(seed)
    n = coarse + coarse * fine
    matrix = np.empty((n, dim), dtype=np.float32)
    centres = rng.standard_normal((coarse, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    matrix[:coarse] = centres
    parents = np.full(n, -1, dtype=np.int64)
    for c in range(coarse):
        a = coarse + c * fine
        noise = rng.standard_normal((fine, dim)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        block = centres[c] + 1.0 * noise
        matrix[a : a + fine] = block / np.linalg.norm(block, axis=1, keepdims=True)
        parents[a : a + fine] = c
    return matrix, parents


def image_like(matrix: np.ndarray, rows: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((len(rows), matrix.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = 0.3 * matrix[rows] + 0.95 * noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def loaded_set(matrix: np.ndarray, parents: np.ndarray) -> LoadedLabelSet:
    n, dim = matrix.shape
    columns = LabelColumns(
        names=[f"n{i}" for i in range(n)],
        parents=parents,
        depths=np.where(parents >= 0, 2, 1).astype(np.int32),
        ranks=[None] * n,
        prompts=[None] * n,
    )
    order, tree = arrange(columns, ("coarse", "fine"))
    model = ModelRecord(
        name="synthetic",
        pretrained=None,
        weights_sha256="",
        dim=dim,
        logit_scale=LOGIT_SCALE,
        logit_bias=None,
        id=0,
    )
    record = VersionRecord(
        labelset="bench",
        version_id=1,
        version=1,
        status="ready",
        model=model,
        digest="",
        templates=(),
        num_labels=n,
        depth=2,
        rank_names=("coarse", "fine"),
        dim=dim,
        dtype="float32",
        num_truncated=0,
        source="bench",
        created_at=dt.datetime.now(dt.UTC),
    )
    index = ExactIndex(matrix[order], check_finite=False)
    return LoadedLabelSet(
        record=record, names=[columns.names[i] for i in order], tree=tree, index=index, order=order
    )


def python_coarse_sum(leaf_probs: np.ndarray, leaf_parents: list[int], coarse: int) -> np.ndarray:
    """The pybioclip way: loop over labels in Python, adding each probability to its parent."""
    out = np.zeros((leaf_probs.shape[0], coarse))
    for q in range(leaf_probs.shape[0]):
        row = leaf_probs[q].tolist()
        sums = [0.0] * coarse
        for p, parent in zip(row, leaf_parents, strict=True):
            sums[parent] += p
        out[q] = sums
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--coarse", type=int, default=1000)
    ap.add_argument("--fine", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--python-queries", type=int, default=2)
    ap.add_argument("--beams", default="4,8,16,32,64")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    t0 = time.perf_counter()
    matrix, parents = build_tree(args.coarse, args.fine, args.dim)
    loaded = loaded_set(matrix, parents)
    tree = loaded.tree
    assert tree is not None
    leaves = tree.leaves
    rng = np.random.default_rng(2)
    queries = image_like(loaded.matrix, rng.choice(leaves, args.queries, replace=False))
    print(
        f"tree {args.coarse} x {args.fine} = {len(leaves):,} leaves, dim {args.dim}; "
        f"built in {time.perf_counter() - t0:.1f} s"
    )
    leaf_range = slice(int(leaves[0]), int(leaves[-1]) + 1)

    def exact() -> np.ndarray:
        res = loaded.index.search(queries, 5, logit_scale=LOGIT_SCALE, subset=leaf_range)
        return res.ids[:, 0]

    exact()  # warm-up
    t_exact = min(_timed(exact) for _ in range(args.repeat))
    truth = exact()
    report: dict[str, object] = {
        "machine": f"{platform.machine()} {platform.processor()}",
        "leaves": len(leaves),
        "queries": args.queries,
        "exact_flat_s": t_exact,
        "beam": [],
    }
    print(f"exact flat top-5 over all leaves, batch {args.queries}: {t_exact:.3f} s")
    depth = tree.max_depth
    for width in (int(b) for b in args.beams.split(",")):

        def run(width: int = width) -> list[hierarchy.TreeAnswer]:
            return hierarchy.beam_search(loaded, queries, depth=depth, beam=width, top=5)

        answers = run()
        t_beam = min(_timed(run) for _ in range(args.repeat))
        agree = float(np.mean([a.final.nodes[0] == t for a, t in zip(answers, truth, strict=True)]))
        print(
            f"beam {width:>3}: agreement with exact top-1 {agree:.4f}   {t_beam:.3f} s   "
            f"speed-up vs exact {t_exact / t_beam:.1f}x"
        )
        report["beam"].append(
            {
                "beam": width,
                "agreement": agree,
                "seconds": t_beam,  # type: ignore[union-attr]
                "speedup": t_exact / t_beam,
            }
        )

    # Marginal at the coarse rank: zsindex vs a Python loop over the same probabilities.
    def marginal() -> tuple[np.ndarray, np.ndarray]:
        return hierarchy.rank_marginals(loaded, queries, depth=1)

    cands, probs = marginal()
    t_marg = min(_timed(marginal) for _ in range(args.repeat))
    nq = args.python_queries
    sub = queries[:nq]
    logits = LOGIT_SCALE * sub @ loaded.matrix[leaf_range].T
    leaf_probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    leaf_probs /= leaf_probs.sum(axis=1, keepdims=True)
    leaf_parents = tree.parents[leaves].tolist()
    start = time.perf_counter()
    py = python_coarse_sum(leaf_probs, leaf_parents, args.coarse)
    t_py = (time.perf_counter() - start) / nq * args.queries
    diff = float(np.abs(py - probs[:nq][:, np.argsort(cands)]).max())
    # The same summation step, vectorised: leaves are stored grouped under their parents (BFS
    # order), so summing to the coarse rank is one segment sum per query batch.
    seg = np.flatnonzero(np.r_[True, np.diff(tree.parents[leaves]) != 0])

    def vector_sum() -> np.ndarray:
        return np.add.reduceat(leaf_probs, seg, axis=1)

    t_vec = min(_timed(vector_sum) for _ in range(args.repeat)) / nq * args.queries
    vec_diff = float(np.abs(vector_sum() - py).max())
    print(
        f"marginal at coarse rank, batch {args.queries}, summation over the same "
        f"probabilities: zsindex segment sum {t_vec:.4f} s vs pure-Python {t_py:.1f} s "
        f"(both per {args.queries} queries, measured on {nq}) -> {t_py / t_vec:,.0f}x; "
        f"max |difference| {vec_diff:.1e}"
    )
    dense = t_exact  # a dense pass over all leaves costs about one exact search
    print(
        f"marginal end to end: zsindex {t_marg:.3f} s (exact softmax pass and sums) vs "
        f"dense probabilities + Python summation ≈ {dense + t_py:.1f} s -> "
        f"{(dense + t_py) / t_marg:.1f}x; zsindex vs Python results max |difference| {diff:.2e}"
    )
    report.update(
        marginal_s=t_marg,
        python_sum_s=t_py,
        vector_sum_s=t_vec,
        summation_speedup=t_py / t_vec,
        end_to_end_speedup=(dense + t_py) / t_marg,
        marginal_max_diff=diff,
    )
    print(json.dumps(report))


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
