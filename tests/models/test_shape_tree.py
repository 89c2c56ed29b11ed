"""Hierarchical quality on the demo tree (``shape-tree``, zsindex-tiny), through the CLI.

Freshly rendered colour-shape images are classified with ``--mode beam`` at the coarse rank and
at the leaves, and with ``--mode flat`` (leaves, and leaves mapped to their parent shape).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from zsindex.demo import write_image_folder

SIZES = (64, 160, 384)


def _images(root: Path) -> Path:
    out = root / "imgs"
    for i, size in enumerate(SIZES):
        part = root / f"part{size}"
        write_image_folder(part, "combo", 1, size, 55_000 + i, fmt="png" if i % 2 else "jpeg")
        for f in part.rglob("*.*"):
            target = out / f.parent.name / f"{size}-{f.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(f, target)
    return out


def test_beam_on_the_demo_tree(zs: Callable, zs_home: Path, tmp_path: Path) -> None:
    assert (
        zs("labels", "add", "shape-tree", "--plugin", "shape-tree", "--model", "zsindex-tiny").code
        == 0
    )
    data = _images(tmp_path)

    def run(*opts: str) -> dict[str, list[str]]:
        r = zs("classify", str(data), "--labels", "shape-tree", "--json", "-k", "1", *opts)
        assert r.code == 0, r.err
        out = {}
        for item in r.json():
            out[item["image"]] = [item["predictions"][0]["label"]] + [
                s["label"] for s in item.get("path", [])
            ]
        return out

    beam_coarse = run("--mode", "beam", "--rank", "1")
    beam_fine = run("--mode", "beam")
    flat = run("--mode", "flat")
    truth = {img: Path(img).parent.name for img in flat}  # "red circle"
    n = len(truth)

    def acc(pred: dict[str, list[str]], key: Callable[[str], str], label: Callable) -> float:
        return sum(label(pred[i]) == key(t) for i, t in truth.items()) / n

    shape = lambda t: t.split(" ")[1]  # noqa: E731
    coarse_beam = acc(beam_coarse, shape, lambda p: p[0])
    fine_beam = acc(beam_fine, lambda t: t, lambda p: p[0])
    fine_flat = acc(flat, lambda t: t, lambda p: p[0])
    coarse_flat_mapped = acc(flat, shape, lambda p: p[0].split(" ")[1])
    print(
        f"shape-tree, {n} images: beam coarse {coarse_beam:.3f}, beam fine {fine_beam:.3f}, "
        f"flat fine {fine_flat:.3f}, flat mapped to coarse {coarse_flat_mapped:.3f}"
    )
    assert coarse_beam >= 0.90
    assert fine_beam >= 0.75
    assert coarse_beam >= coarse_flat_mapped
    assert fine_beam >= fine_flat - 0.02
    # The beam path runs shape → colour shape, naming each node by its own name.
    some = next(iter(beam_fine.values()))
    assert len(some) == 3 and some[2] == some[0] and some[1] in some[0]
