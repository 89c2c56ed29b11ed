"""``zsindex demo``: the main job on the embedded default (SQLite, CPU, zsindex-tiny)."""

from __future__ import annotations

from pathlib import Path

import click

from zsindex.cli.context import CliState
from zsindex.cli.output import info, print_table
from zsindex.results import ClassificationResult

DEMO_SETS = ("shapes", "colors", "shape-tree")
SAMPLES = (
    ("red", "circle", 96),
    ("blue", "square", 160),
    ("green", "triangle", 224),
    ("yellow", "star", 320),
    ("purple", "cross", 128),
    ("orange", "ring", 256),
    ("black", "triangle", 200),
    ("white", "star", 180),
)


def _top(result: ClassificationResult, n: int = 3) -> str:
    preds = result.predictions[:n]
    return ", ".join(f"{p.label} {p.probability:.0%}" for p in preds)


@click.command("demo")
@click.pass_obj
def demo(state: CliState) -> None:
    """Register the demo label sets, render sample images and classify them.

    Uses the shipped zsindex-tiny model, fully offline; running it again reuses its label sets.
    """
    from dataclasses import replace

    import numpy as np

    from zsindex.client import Client
    from zsindex.demo import render_shape
    from zsindex.local import LocalBackend

    settings = state.settings
    # Every plugin allowed: the demo's label sets are zsindex's own built-ins, so the demo works
    # whatever ZSINDEX_PLUGINS allows for third-party plugins.
    client = Client.from_backend(LocalBackend(replace(settings, plugins=None)))
    state.own(client)
    for name in DEMO_SETS:
        result = client.add_labelset(name, plugin=name, model="zsindex-tiny")
        info(f"label set {name}: version {result.version}, {result.num_labels} labels")
    folder = settings.home / "demo-images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2024)
    files: list[tuple[str, Path]] = []
    for color, shape, size in SAMPLES:
        path = folder / f"{color}-{shape}.png"
        render_shape(shape, color, size, rng).save(path)
        files.append((path.name, path))
    info(f"rendered {len(files)} sample images in {folder}")
    by_set = {
        name: client.classify(
            [path for _, path in files],
            labelset=name,
            k=3,
            mode="beam" if name == "shape-tree" else "flat",
        )
        for name in DEMO_SETS
    }
    rows: list[list[str]] = []
    for i, (image_name, _) in enumerate(files):
        tree = by_set["shape-tree"][i]
        tree_path = " > ".join(f"{s.label} {s.probability:.0%}" for s in (tree.path or []))
        rows.append([image_name, _top(by_set["shapes"][i]), _top(by_set["colors"][i]), tree_path])
    print_table(["image", "shapes (top 3)", "colors (top 3)", "shape-tree (coarse > fine)"], rows)
    info(
        "next: `zsindex classify YOUR_IMAGES --labels shapes`, `zsindex labels list`, "
        "`zsindex serve`"
    )
