"""C4: the same predictions across 10 restarts for a fixed image set.

A label set on the shipped ``zsindex-tiny`` model and a fixed set of images (PNG, JPEG, GIF, WEBP;
small enough that JPEG draft decoding does not apply) are classified by 10 fresh starts:
new processes running ``zsindex classify --json`` and new in-process ``Client.local`` instances
with the process's model cache cleared, some of each after the on-disk index cache was deleted
(rebuilt from SQL). Every run must give the identical top-5 labels, in the same order, with
scores and probabilities within 1e-6 of the first run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from zsindex import Client

MODEL = "zsindex-tiny"
LABELS = [
    "a red square",
    "a blue circle",
    "a green triangle",
    "a yellow star",
    "a black cat",
    "a white dog",
    "a striped zebra",
    "an orange",
    "a purple flower",
    "a grey car",
    "the night sky",
    "a brick wall",
]
TOL = 1e-6
Run = list[tuple[str, list[tuple[str, float, float]]]]


def _images(folder: Path) -> list[Path]:
    """Eight fixed images of different content and formats."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    paths = []
    shapes = [
        ("red_square.png", (220, 30, 30), "rect", "PNG"),
        ("blue_circle.jpg", (30, 60, 220), "ellipse", "JPEG"),
        ("green_triangle.gif", (40, 200, 60), "triangle", "GIF"),
        ("yellow_star.webp", (240, 220, 30), "ellipse", "WEBP"),
        ("grey.bmp", (128, 128, 128), "rect", "BMP"),
        ("purple.tif", (150, 40, 180), "triangle", "TIFF"),
    ]
    for name, color, kind, fmt in shapes:
        img = Image.new("RGB", (72, 56), (250, 250, 245))
        draw = ImageDraw.Draw(img)
        box = (12, 8, 60, 48)
        if kind == "rect":
            draw.rectangle(box, fill=color)
        elif kind == "ellipse":
            draw.ellipse(box, fill=color)
        else:
            draw.polygon([(36, 6), (62, 50), (10, 50)], fill=color)
        path = folder / name
        params: dict[str, Any] = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
        img.save(path, format=fmt, **params)
        paths.append(path)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    noise.save(folder / "noise.png")
    stripes = np.zeros((48, 96, 3), dtype=np.uint8)
    stripes[:, ::8] = 255
    Image.fromarray(stripes).save(folder / "stripes.jpg", quality=95)
    paths += [folder / "noise.png", folder / "stripes.jpg"]
    return sorted(paths)


def _from_json(items: list[dict[str, Any]]) -> Run:
    return [
        (
            Path(r["image"]).name,
            [(p["label"], p["score"], p["probability"]) for p in r["predictions"]],
        )
        for r in items
    ]


def _from_results(results: list[Any], names: list[str]) -> Run:
    assert [r.error for r in results] == [None] * len(results)
    return [
        (name, [(p.label, p.score, p.probability) for p in r.predictions])
        for r, name in zip(results, names, strict=True)
    ]


def _compare(reference: Run, other: Run, what: str) -> None:
    assert [name for name, _ in other] == [name for name, _ in reference], what
    for (name, ref), (_, got) in zip(reference, other, strict=True):
        assert [label for label, _, _ in got] == [label for label, _, _ in ref], (what, name)
        for (label, s1, p1), (_, s2, p2) in zip(ref, got, strict=True):
            assert abs(s1 - s2) <= TOL, (what, name, label, s1, s2)
            assert abs(p1 - p2) <= TOL, (what, name, label, p1, p2)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'det.sqlite3'}"
    with Client.local(database_url=url, home=home, device="cpu") as c:
        c.add_labelset("det", LABELS, model=MODEL, templates="simple-7")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(ZSINDEX_DATABASE_URL=url, ZSINDEX_HOME=str(home), ZSINDEX_DEVICE="cpu")
    return {"home": home, "url": url, "env": env, "images": _images(tmp_path / "images")}


def _cli_cmd(folder: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from zsindex.cli.main import main; main()",
        "classify",
        str(folder),
        "--labels",
        "det",
        "-k",
        "5",
        "--json",
    ]


def _restarts(setup: dict[str, Any], subprocesses: int, in_process: int) -> list[tuple[str, Run]]:
    from zsindex.encoders import clear_model_cache

    home: Path = setup["home"]
    folder = setup["images"][0].parent
    runs: list[tuple[str, Run]] = []
    # New processes, started together (half of them after the index cache was deleted).
    procs = []
    for i in range(subprocesses):
        if i % 2 == 1:
            shutil.rmtree(home / "cache", ignore_errors=True)
        procs.append(
            subprocess.Popen(
                _cli_cmd(folder),
                env=setup["env"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        runs.append((f"process {i}", _from_json(json.loads(out))))
    # New in-process clients with the model reloaded from its files each time.
    for i in range(in_process):
        clear_model_cache()
        if i % 2 == 0:
            shutil.rmtree(home / "cache", ignore_errors=True)
        with Client.local(database_url=setup["url"], home=home, device="cpu") as c:
            paths: list[Path] = setup["images"]
            # Paths, or (every third run) the files' bytes: the same decoding either way.
            sources: list[Any] = (
                [p.read_bytes() for p in paths] if i % 3 == 2 else [str(p) for p in paths]
            )
            results = c.classify(sources, labelset="det", k=5)
            run = _from_results(results, [p.name for p in paths])
        runs.append((f"client {i}", run))
    return runs


def _check(runs: list[tuple[str, Run]], n_images: int) -> None:
    (_, reference), *others = runs
    assert len(reference) == n_images
    assert all(len(preds) == 5 for _, preds in reference)
    # Not a degenerate model: the images do not all get the same answer.
    assert len({preds[0][0] for _, preds in reference}) > 1
    for what, run in others:
        _compare(reference, run, what)


def test_same_predictions_across_restarts(setup: dict[str, Any]) -> None:
    runs = _restarts(setup, subprocesses=2, in_process=8)
    assert len(runs) == 10
    _check(runs, len(setup["images"]))


@pytest.mark.slow
def test_same_predictions_across_restarts_all_processes(setup: dict[str, Any]) -> None:
    runs = _restarts(setup, subprocesses=10, in_process=2)
    _check(runs, len(setup["images"]))


def test_bytes_and_paths_agree(setup: dict[str, Any]) -> None:
    """The CLI's file path and the client's bytes path decode the same pixels."""
    with Client.local(database_url=setup["url"], home=setup["home"], device="cpu") as c:
        by_path = c.classify([str(p) for p in setup["images"]], labelset="det", k=5)
        data = [io.BytesIO(p.read_bytes()).getvalue() for p in setup["images"]]
        by_bytes = c.classify(data, labelset="det", k=5)
    for a, b in zip(by_path, by_bytes, strict=True):
        assert [p.label for p in a.predictions] == [p.label for p in b.predictions]
        for pa, pb in zip(a.predictions, b.predictions, strict=True):
            assert abs(pa.score - pb.score) <= TOL
