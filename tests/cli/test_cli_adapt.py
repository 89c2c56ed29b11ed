"""The CLI of issue 18: ``labels tune``, ``calibrate``, ``classify --reject-below`` and
``eval``'s calibration keys and ``--plot``, in process through the real entry point, on a label
set where ``zsindex-tiny``'s zero-shot errs by construction (``adapt_cases``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from adapt_cases import LABELS, TEAMS, team_images  # tests/ is not a package
from PIL import Image

from zsindex.demo.render import render_shape

NAMES = list(TEAMS)


def write_folder(root: Path, per_class: int, seed: int, labels: list[str] = NAMES) -> Path:
    for k, label in enumerate(labels):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(team_images(label, per_class, seed * 10 + k)):
            img.save(root / label / f"{label}_{i}.png")
    return root


@pytest.fixture
def colors(zs, zs_home: Path):  # type: ignore[no-untyped-def]
    run = zs(
        "labels",
        "add",
        "colors",
        "--labels",
        ",".join(LABELS),
        "--model",
        "zsindex-tiny",
        "--templates",
        "photo",
    )
    assert run.code == 0, run.err
    return zs


def test_tune_show_history_and_json(colors, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    zs = colors
    folder = write_folder(tmp_path / "train", 3, seed=1)
    run = zs("labels", "tune", "colors", str(folder), "--alpha", "0.5", "--json")
    assert run.code == 0, run.err
    info = run.json()
    assert info["version"] == 2 and info["provenance"]["tune"]["examples"] == {c: 3 for c in NAMES}
    show = zs("labels", "show", "colors")
    assert "tune: from version 1, alpha 0.5 (given)" in show.out
    assert "cross: 3 example(s)" in show.out
    digest = info["provenance"]["tune"]["images"]["cross"][0]
    assert digest[:12] in show.out
    history = zs("labels", "history", "colors")
    assert "tune of v1 alpha=0.5, 12 ex" in history.out
    auto = zs("labels", "tune", "colors", str(folder))
    assert auto.code == 0 and "(auto)" in auto.err


def test_calibrate_then_eval_reports_calibration(colors, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    zs = colors
    calib = write_folder(tmp_path / "calib", 5, seed=2)
    held = write_folder(tmp_path / "held", 5, seed=3)
    before = zs("eval", str(held), "--labels", "colors", "--json").json()
    assert before["n"] == 20
    for key in ("top1", "top5", "mean_per_class_recall", "ece"):
        assert 0.0 <= before[key] <= 1, key
    assert 0.0 <= before["brier"] <= 1 and before["nll"] > 0  # Brier: halved, in [0, 1]
    assert "_samples" not in before
    assert [c["reject_below"] for c in before["coverage"]][:2] == [0.0, 0.1]
    run = zs("calibrate", "colors", str(calib), "--target-precision", "0.9")
    assert run.code == 0, run.err
    assert "temperature" in run.out and "ECE" in run.out and "precision 0.9" in run.out
    after = zs("eval", str(held), "--labels", "colors", "--json").json()
    assert after["version"] == 2 and after["top1"] == before["top1"]  # ranking unchanged
    assert after["nll"] < before["nll"]
    plot = tmp_path / "plot.png"
    table = zs("eval", str(held), "--labels", "colors", "--plot", str(plot))
    assert table.code == 0 and "ECE:" in table.out and "coverage" in table.out
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size[0] > 800


def test_reject_below_in_every_output_format(colors, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    zs = colors
    folder = write_folder(tmp_path / "imgs", 2, seed=4)
    results = zs(
        "classify", str(folder), "--labels", "colors", "--reject-below", "0.999", "--json"
    ).json()
    assert all("rejected" in r for r in results)
    tops = [r["predictions"][0]["probability"] for r in results]
    assert [r["rejected"] for r in results] == [p < 0.999 for p in tops]
    assert any(r["rejected"] for r in results) and all(r["predictions"] for r in results)
    plain = zs("classify", str(folder), "--labels", "colors", "--json").json()
    assert not any(r["rejected"] for r in plain)
    rows = list(
        csv.DictReader(
            io.StringIO(
                zs(
                    "classify", str(folder), "--labels", "colors", "--reject-below", "1", "--csv"
                ).out
            )
        )
    )
    assert rows and all(r["rejected"] == "true" or float(r["probability"]) >= 1 for r in rows)
    table = zs("classify", str(folder), "--labels", "colors", "--reject-below", "1")
    assert "rejected: none of these" in table.out
    bad = zs("classify", str(folder), "--labels", "colors", "--reject-below", "1.5")
    assert bad.code == 2


def test_reject_below_in_tree_modes(zs, zs_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert zs("labels", "add", "st", "--plugin", "shape-tree", "--model", "zsindex-tiny").code == 0
    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    render_shape("star", "green", 64, rng).save(path)
    for mode in ("beam", "marginal", "flat"):
        (r,) = zs(
            "classify",
            str(path),
            "--labels",
            "st",
            "--mode",
            mode,
            "--reject-below",
            "1.0",
            "--json",
        ).json()
        assert r["rejected"] is (r["predictions"][0]["probability"] < 1.0), mode
        (kept,) = zs(
            "classify", str(path), "--labels", "st", "--mode", mode, "--reject-below", "0", "--json"
        ).json()
        assert kept["rejected"] is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("unknown", "name no label of 'colors': mauve"),
        ("one-class", "only one class folder"),
        ("empty", "empty class folder"),
        ("unreadable", "broken.png"),
    ],
)
def test_bad_example_folders_exit_1_and_write_nothing(
    colors,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    extra: str,
    message: str,
) -> None:
    zs = colors
    root = write_folder(
        tmp_path / "ex",
        6,
        seed=5,
        labels=["cross"] if extra == "one-class" else ["cross", "circle"],
    )
    if extra == "unknown":
        write_folder(root, 2, seed=7, labels=["square"])
        (root / "square").rename(root / "mauve")
    elif extra == "empty":
        (root / "square").mkdir()
    elif extra == "unreadable":
        (root / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for command in (
        ("labels", "tune", "colors", str(root), "--alpha", "0.5"),
        ("calibrate", "colors", str(root)),
    ):
        run = zs(*command)
        assert run.code == 1, (command, run.out, run.err)
        assert message in run.err and len(run.err.strip().splitlines()) == 1, run.err
    history = zs("labels", "history", "colors", "--json").json()
    assert len(history) == 1


def test_bad_alpha_and_small_calibration_sets(colors, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    zs = colors
    folder = write_folder(tmp_path / "few", 1, seed=6)
    for alpha in ("1.5", "-1", "much"):
        run = zs("labels", "tune", "colors", str(folder), "--alpha", alpha)
        assert run.code == 1 and "alpha" in run.err, run.err
    run = zs("calibrate", "colors", str(folder))
    assert run.code == 1 and "too small to fit" in run.err
    assert len(zs("labels", "history", "colors", "--json").json()) == 1


@pytest.mark.parametrize("classes", [6, 100])
def test_plot_for_few_and_many_classes(tmp_path: Path, classes: int) -> None:
    from zsindex.evaluate_plot import confusion, write_plot

    rng = np.random.default_rng(classes)
    names = [f"class {i}" for i in range(classes)]
    truth = [names[i % classes] for i in range(3 * classes)]
    predicted = [t if rng.random() < 0.6 else str(rng.choice([*names, "elsewhere"])) for t in truth]
    conf = rng.uniform(0.2, 1.0, len(truth)).tolist()
    report = {
        "labelset": "x",
        "version": 1,
        "n": len(truth),
        "top1": 0.6,
        "ece": 0.1,
        "nll": 1.0,
        "brier": 0.5,
        "classes": names,
        "_samples": {
            "confidence": conf,
            "correct": [t == p for t, p in zip(truth, predicted, strict=True)],
            "truth": truth,
            "predicted": predicted,
        },
    }
    matrix, cols = confusion(truth, predicted, names)
    assert matrix.sum() == len(truth) and matrix.shape[0] == classes
    assert (cols[-1] == "(other)") is ("elsewhere" in predicted)
    path = tmp_path / "plot.png"
    write_plot(report, path)
    with Image.open(path) as im:
        # Many classes get a larger canvas, so every class name keeps a readable size.
        assert im.format == "PNG" and im.size[1] >= (2000 if classes == 100 else 700)
    with pytest.raises(Exception, match="cannot write the plot"):
        write_plot(report, tmp_path / "missing" / "plot.png")
