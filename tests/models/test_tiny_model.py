"""zsindex-tiny loads with plain open_clip, and its zero-shot accuracy holds through the CLI.

Images are rendered fresh (a seed the training never used) at 64–512 px, saved as PNG and JPEG,
and classified through the same path a user takes, with prompt templates that never occur in
the training captions.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from zsindex.demo import EVAL_COLOR_TEMPLATES, EVAL_TEMPLATES, write_image_folder
from zsindex.encoders import tiny_model_dir
from zsindex.labels.demo_vocab import COLOR_NAMES, SHAPES

SIZES = (64, 128, 256, 512)
FORMATS = ("png", "jpeg")
FLOORS = {"shape": 0.90, "color": 0.90, "combo": 0.80}
SEED = 987_654  # not a training seed


def _dataset(root: Path, task: str, per_class: int) -> Path:
    """ImageFolder of ``task`` with every size × format, merged into one tree."""
    out = root / task
    for i, (size, fmt) in enumerate((s, f) for s in SIZES for f in FORMATS):
        part = root / f"{task}-{size}-{fmt}"
        write_image_folder(part, task, per_class, size, SEED + i, fmt=fmt)
        for file in part.rglob("*.*"):
            target = out / file.parent.name / f"{size}-{file.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(file, target)
        shutil.rmtree(part)
    return out


def test_tiny_model_files_and_plain_open_clip() -> None:
    import open_clip
    import torch

    folder = tiny_model_dir()
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "README.md"} <= set(files)
    assert sum(files.values()) <= 20 * 1024 * 1024
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    assert tokenizer.context_length == 77
    with torch.no_grad():
        text = model.encode_text(tokenizer(["a red circle"]))
    assert text.shape[0] == 1 and torch.isfinite(text).all()
    assert 1.0 < float(model.logit_scale.detach().exp()) < 100.0  # learned, not a fixed 100


@pytest.mark.parametrize(
    ("task", "labels", "templates", "per_class"),
    [
        ("shape", list(SHAPES), EVAL_TEMPLATES, 2),
        ("color", list(COLOR_NAMES), EVAL_COLOR_TEMPLATES, 2),
        ("combo", [f"{c} {s}" for c in COLOR_NAMES for s in SHAPES], EVAL_TEMPLATES, 1),
    ],
)
def test_zero_shot_accuracy_through_the_cli(
    zs: Callable,
    zs_home: Path,
    tmp_path: Path,
    task: str,
    labels: list[str],
    templates: tuple[str, ...],
    per_class: int,
) -> None:
    data = _dataset(tmp_path, task, per_class)
    names = tmp_path / "labels.txt"
    names.write_text("\n".join(labels) + "\n")
    template_file = tmp_path / "templates.txt"
    template_file.write_text("\n".join(templates) + "\n")
    run = zs(
        "labels",
        "add",
        task,
        "--file",
        str(names),
        "--templates",
        str(template_file),
        "--model",
        "zsindex-tiny",
    )
    assert run.code == 0, run.err
    run = zs("eval", str(data), "--labels", task, "--json")
    assert run.code == 0, run.err
    report = run.json()
    print(
        f"zsindex-tiny {task}: {report['n']} images, top1 {report['top1']:.3f}, "
        f"top5 {report['top5']:.3f}, mean per-class recall {report['mean_per_class_recall']:.3f}"
    )
    assert report["n"] == len(list(data.rglob("*.*")))
    assert report["top1"] >= FLOORS[task]


def test_eval_equals_open_clip_reference(zs: Callable, zs_home: Path, tmp_path: Path) -> None:
    """`zsindex eval` numbers equal open_clip's own zero-shot path on the same images."""
    import open_clip
    import torch
    from PIL import Image

    data = tmp_path / "combo"
    write_image_folder(data, "combo", 1, 160, SEED + 99, fmt="png")
    labels = [f"{c} {s}" for c in COLOR_NAMES for s in SHAPES]
    names = tmp_path / "labels.txt"
    names.write_text("\n".join(labels) + "\n")
    tfile = tmp_path / "t.txt"
    tfile.write_text("\n".join(EVAL_TEMPLATES) + "\n")
    assert (
        zs(
            "labels",
            "add",
            "combo",
            "--file",
            str(names),
            "--templates",
            str(tfile),
            "--model",
            "zsindex-tiny",
        ).code
        == 0
    )
    ours = zs("eval", str(data), "--labels", "combo", "--json").json()

    folder = tiny_model_dir()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    classifier = open_clip.build_zero_shot_classifier(
        model,
        tokenizer,
        labels,
        list(EVAL_TEMPLATES),
        num_classes_per_batch=10,
        device="cpu",
        use_tqdm=False,
    )
    files = sorted(data.rglob("*.png"))
    truth = np.array([labels.index(f.parent.name.replace("_", " ")) for f in files])
    with torch.no_grad():
        feats = model.encode_image(torch.stack([preprocess(Image.open(f)) for f in files]))
        feats = feats / feats.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * feats @ classifier
    top5 = logits.topk(5, dim=1).indices.numpy()
    top1_ok = top5[:, 0] == truth
    ref = {
        "n": len(files),
        "top1": float(top1_ok.mean()),
        "top5": float((top5 == truth[:, None]).any(axis=1).mean()),
        "mean_per_class_recall": float(
            np.mean([top1_ok[truth == c].mean() for c in np.unique(truth)])
        ),
    }
    assert ours["n"] == ref["n"]
    for key in ("top1", "top5", "mean_per_class_recall"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


# Issue 18's floors on renders whose code, colours, sizes and backgrounds are independent of
# training (scripts/render_eval_shapes.py). A seed other than the 1,440-image set's (20240917,
# the one the shipped model was chosen on), so this is a fresh draw.
INDEPENDENT_FLOORS = {"shape": 0.97, "color": 0.97, "combo": 0.95}
INDEPENDENT_SEED = 31337
RENDERER = Path(__file__).resolve().parents[2] / "scripts" / "render_eval_shapes.py"


@pytest.fixture(scope="module")
def independent_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """480 independent renders (every combo on each of the 10 background kinds), as one
    ImageFolder per task."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("independent")
    raw = root / "raw"
    run = subprocess.run(
        [sys.executable, str(RENDERER), "--out", str(raw), "--seed", str(INDEPENDENT_SEED)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    folders = {task: root / task for task in INDEPENDENT_FLOORS}
    files = sorted(raw.rglob("*.*"))
    assert len(files) == len(COLOR_NAMES) * len(SHAPES) * 10
    for file in files:
        color, shape, _ = file.stem.split("_")
        name = f"{file.parent.name}-{file.name}"
        for task, label in (("shape", shape), ("color", color), ("combo", f"{color} {shape}")):
            target = folders[task] / label / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file)
    return folders


@pytest.mark.parametrize(
    ("task", "labels", "templates"),
    [
        ("shape", list(SHAPES), EVAL_TEMPLATES),
        ("color", list(COLOR_NAMES), EVAL_COLOR_TEMPLATES),
        ("combo", [f"{c} {s}" for c in COLOR_NAMES for s in SHAPES], EVAL_TEMPLATES),
    ],
)
def test_independent_renderer_floors_through_the_cli(
    zs: Callable,
    zs_home: Path,
    tmp_path: Path,
    independent_set: dict[str, Path],
    task: str,
    labels: list[str],
    templates: tuple[str, ...],
) -> None:
    names = tmp_path / "labels.txt"
    names.write_text("\n".join(labels) + "\n")
    template_file = tmp_path / "templates.txt"
    template_file.write_text("\n".join(templates) + "\n")
    add = ("labels", "add", task, "--file", str(names), "--templates", str(template_file))
    run = zs(*add, "--model", "zsindex-tiny")
    assert run.code == 0, run.err
    run = zs("eval", str(independent_set[task]), "--labels", task, "--json")
    assert run.code == 0, run.err
    report = run.json()
    print(
        f"zsindex-tiny {task}, independent renderer: {report['n']} images, "
        f"top1 {report['top1']:.4f}"
    )
    assert report["n"] == 480
    assert report["top1"] >= INDEPENDENT_FLOORS[task]
