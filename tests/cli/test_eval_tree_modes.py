"""``zsindex eval --mode beam|marginal|chils --rank R [--within NODE]`` (issue 20).

Folders named after a tree's nodes at rank R; an image is correct when the node predicted at R
is its folder's. Every expected number comes from ``zsindex classify`` in the same mode over
the same files (the real CLI, ``zsindex-tiny``, a real SQLite store), so the test checks what
eval counts, not what the tiny model happens to know.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zsindex.demo.render import render_shape, write_image_folder

TINY = "zsindex-tiny"


@pytest.fixture
def tree(zs: Callable[..., Any], zs_home: Path) -> str:
    """``shape-tree``: shapes at rank ``shape`` (depth 1), "<colour> <shape>" at ``color``."""
    run = zs("labels", "add", "tree", "--plugin", "shape-tree", "--model", TINY)
    assert run.code == 0, run.err
    return "tree"


@pytest.fixture
def by_shape(tmp_path: Path) -> Path:
    root = tmp_path / "by_shape"
    write_image_folder(root, "shape", per_class=2, size=48, seed=3)
    return root


def _folder(root: Path, names: list[str], per_class: int = 2) -> Path:
    import numpy as np

    rng = np.random.default_rng(5)
    for name in names:
        (root / name).mkdir(parents=True)
        color, shape = name.split(" ") if " " in name else ("red", name)
        for i in range(per_class):
            render_shape(shape, color, 48, rng).save(root / name / f"{i}.png")
    return root


def _expected(zs: Callable[..., Any], root: Path, *args: str) -> dict[str, Any]:
    """top-1, top-5, mean per-class recall and n from ``zsindex classify --json``."""
    run = zs("classify", str(root), "--json", "-k", "5", *args)
    assert run.code == 0, run.err
    hits: dict[str, list[bool]] = {}
    top5: list[bool] = []
    for result in run.json():
        truth = Path(result["image"]).parent.name
        labels = [p["label"] for p in result["predictions"]]
        hits.setdefault(truth, []).append(labels[0] == truth)
        top5.append(truth in labels)
    flat = [h for v in hits.values() for h in v]
    return {
        "n": len(flat),
        "top1": sum(flat) / len(flat),
        "top5": sum(top5) / len(top5),
        "mean_per_class_recall": sum(sum(v) / len(v) for v in hits.values()) / len(hits),
    }


def _metrics(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("n", "top1", "top5", "mean_per_class_recall")}


@pytest.mark.parametrize("mode", ["marginal", "beam", "chils"])
def test_eval_at_a_rank_counts_the_node_predicted_there(
    zs: Callable[..., Any], tree: str, by_shape: Path, mode: str
) -> None:
    args = ("--labels", tree, "--mode", mode, "--rank", "shape")
    run = zs("eval", str(by_shape), *args, "--json")
    assert run.code == 0, run.err
    report = run.json()
    expected = _expected(zs, by_shape, *args)
    assert _metrics(report) == pytest.approx(expected)
    assert report["n"] == 12 and report["errors"] == 0
    assert (report["mode"], report["rank"]) == (mode, "shape")
    # The same rank by depth number.
    by_depth = zs("eval", str(by_shape), "--labels", tree, "--mode", mode, "--rank", "1", "--json")
    assert by_depth.code == 0, by_depth.err
    assert _metrics(by_depth.json()) == pytest.approx(expected)


def test_eval_without_a_rank_takes_leaf_folders(
    zs: Callable[..., Any], tree: str, tmp_path: Path
) -> None:
    root = _folder(tmp_path / "leaves", ["red circle", "blue square", "green star"])
    args = ("--labels", tree, "--mode", "marginal")
    run = zs("eval", str(root), *args, "--json")
    assert run.code == 0, run.err
    expected = _expected(zs, root, *args)
    assert _metrics(run.json()) == pytest.approx(expected)
    # Here the leaves are the rank "color": the same folders, the same numbers.
    at_color = zs("eval", str(root), *args, "--rank", "color", "--json")
    assert at_color.code == 0, at_color.err
    assert _metrics(at_color.json()) == pytest.approx(expected)


def test_eval_within_a_subtree(zs: Callable[..., Any], tree: str, tmp_path: Path) -> None:
    root = _folder(tmp_path / "circles", ["red circle", "blue circle", "yellow circle"])
    args = ("--labels", tree, "--mode", "marginal", "--rank", "color", "--within", "circle")
    run = zs("eval", str(root), *args, "--json")
    assert run.code == 0, run.err
    assert _metrics(run.json()) == pytest.approx(_expected(zs, root, *args))
    assert run.json()["within"] == "circle"
    # A folder outside the subtree is no node there.
    (root / "red square").mkdir()
    (root / "red circle" / "0.png").replace(root / "red square" / "0.png")
    err = zs("eval", str(root), *args).err
    assert "red square" in err and "under 'circle'" in err and "red circle" in err


def _one_line_error(run: Any, *needles: str) -> None:
    assert run.code == 1, (run.code, run.err)
    assert run.err.startswith("error: ") and run.err.strip().count("\n") == 0, run.err
    for needle in needles:
        assert needle in run.err, run.err


def test_folders_that_name_no_node_at_the_rank(
    zs: Callable[..., Any], tree: str, tmp_path: Path
) -> None:
    root = _folder(tmp_path / "mixed", ["circle", "red square"])
    run = zs("eval", str(root), "--labels", tree, "--mode", "marginal", "--rank", "shape")
    # The folder, the rank and a few names that would do.
    _one_line_error(run, "red square", "rank shape", "circle, square, triangle")
    run = zs("eval", str(root), "--labels", tree, "--mode", "beam", "--rank", "genus")
    _one_line_error(run, "unknown rank 'genus'", "shape, color")


def test_tree_modes_need_a_tree(zs: Callable[..., Any], zs_home: Path, by_shape: Path) -> None:
    assert zs("labels", "add", "flat", "--plugin", "shapes", "--model", TINY).code == 0
    run = zs("eval", str(by_shape), "--labels", "flat", "--mode", "marginal")
    _one_line_error(run, "needs a tree", "'flat'")
    run = zs("eval", str(by_shape), "--labels", "flat", "--rank", "1")
    _one_line_error(run, "rank")


def test_eval_help_documents_the_tree_modes(zs: Callable[..., Any]) -> None:
    out = " ".join(zs("eval", "--help").out.split())
    for needle in ("--mode", "--rank", "--within", "beam|marginal|chils --rank R", "rank R"):
        assert needle in out, out
