"""The CLI surface: help everywhere, exit codes, empty store, label-set lifecycle."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COMMANDS = [
    [],
    ["db"],
    ["db", "upgrade"],
    ["db", "current"],
    ["db", "downgrade"],
    ["db", "check"],
    ["labels"],
    ["labels", "add"],
    ["labels", "import"],
    ["labels", "list"],
    ["labels", "show"],
    ["labels", "history"],
    ["labels", "rm"],
    ["labels", "export"],
    ["labels", "plugins"],
    ["classify"],
    ["eval"],
    ["serve"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "zsindex")
def test_help_everywhere(zs: Callable, command: list[str]) -> None:
    run = zs(*command, "--help")
    assert run.code == 0
    assert "Usage:" in run.out


def test_empty_store_lists_nothing(zs: Callable, zs_home: Path) -> None:
    assert zs("db", "upgrade").code == 0  # a read alone never creates the store
    run = zs("labels", "list", "--json")
    assert run.code == 0 and json.loads(run.out) == []


def test_usage_error_exits_2(zs: Callable, zs_home: Path) -> None:
    assert zs("labels", "add", "x").code == 2  # no source given
    assert zs("classify", "--labels", "x").code == 2  # no paths


def test_user_error_is_one_line_exit_1(zs: Callable, zs_home: Path) -> None:
    run = zs("labels", "show", "nope")
    assert run.code == 1
    assert run.err.strip().count("\n") == 0 and run.err.startswith("error: ")
    assert "Traceback" not in run.err


def test_label_set_lifecycle(
    zs: Callable, zs_home: Path, random_model: str, tmp_path: Path
) -> None:
    assert (
        zs("labels", "add", "pets", "--labels", "dog, cat,bird", "--model", random_model).code == 0
    )
    listed = zs("labels", "list", "--json").json()
    assert listed == [{"name": "pets", "version": 1, "num_labels": 3, "model": random_model}]
    shown = zs("labels", "show", "pets", "--json").json()
    assert {"templates", "digest", "depth"} <= set(shown) and len(shown["templates"]) == 7
    out = tmp_path / "export"
    assert zs("labels", "export", "pets", str(out)).code == 0
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "names.json"]
    assert json.loads((out / "names.json").read_text()) == ["dog", "cat", "bird"]
    run = zs(
        "labels",
        "import",
        "pets2",
        "--embeddings",
        str(out / "embeddings.npy"),
        "--names",
        str(out / "names.json"),
        "--model",
        random_model,
    )
    assert run.code == 0, run.err
    back = tmp_path / "back"
    assert zs("labels", "export", "pets2", str(back)).code == 0
    np.testing.assert_allclose(
        np.load(back / "embeddings.npy"), np.load(out / "embeddings.npy"), atol=1e-3
    )
    assert json.loads((back / "names.json").read_text()) == ["dog", "cat", "bird"]
    assert zs("labels", "add", "pets", "--labels", "dog,cat", "--model", random_model).code == 0
    history = zs("labels", "history", "pets", "--json").json()
    assert [h["version"] for h in history] == [1, 2]
    assert zs("labels", "rm", "pets").code == 0
    assert [s["name"] for s in zs("labels", "list", "--json").json()] == ["pets2"]
    assert zs("db", "check", "--strict").code == 0


def test_tree_export_import_round_trip(
    zs: Callable, zs_home: Path, random_model: str, tmp_path: Path
) -> None:
    labels = tmp_path / "tree.csv"
    labels.write_text("label,parent\nanimal,\ndog,animal\ncat,animal\n")
    assert zs("labels", "add", "t", "--file", str(labels), "--model", random_model).code == 0
    out = tmp_path / "t"
    assert zs("labels", "export", "t", str(out)).code == 0
    names = json.loads((out / "names.json").read_text())
    assert names == [
        {"name": "animal", "parent": None},
        {"name": "dog", "parent": "animal"},
        {"name": "cat", "parent": "animal"},
    ]
    csv_names = tmp_path / "names.csv"
    csv_names.write_text("name,parent\nanimal,\ndog,animal\ncat,animal\n")
    run = zs(
        "labels",
        "import",
        "t2",
        "--embeddings",
        str(out / "embeddings.npy"),
        "--names",
        str(csv_names),
        "--model",
        random_model,
    )
    assert run.code == 0, run.err
    assert zs("labels", "show", "t2", "--json").json()["depth"] == 2


def test_bad_label_file_names_the_line_and_writes_nothing(
    zs: Callable, zs_home: Path, random_model: str, tmp_path: Path
) -> None:
    bad = tmp_path / "labels.txt"
    bad.write_text("dog\ncat\nDog\n")
    run = zs("labels", "add", "pets", "--file", str(bad), "--model", random_model)
    assert run.code == 1
    assert "labels.txt" in run.err and "3" in run.err
    assert zs("labels", "list", "--json").json() == []


def test_classify_json_shape_and_bad_files(
    zs: Callable, zs_home: Path, random_model: str, tmp_path: Path
) -> None:
    assert zs("labels", "add", "c", "--labels", "red,blue", "--model", random_model).code == 0
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (250, 0, 0)).save(folder / "a.png")
    Image.new("RGB", (40, 30), (0, 0, 250)).save(folder / "sub" / "b.jpg")
    run = zs("classify", str(folder), "--labels", "c", "--json", "-k", "2")
    assert run.code == 0, run.err
    results = run.json()
    assert [r["image"] for r in results] == [str(folder / "a.png"), str(folder / "sub" / "b.jpg")]
    for r in results:
        assert {"image", "labelset", "version", "predictions"} <= set(r)
        assert {"label", "probability", "score"} == set(r["predictions"][0])
    (folder / "bad.png").write_bytes(b"not an image at all")
    run = zs("classify", str(folder), "--labels", "c", "--csv")
    assert run.code == 3 and "bad.png" in run.err  # 3: some images could not be classified
    # header + 2 images x 2 labels still printed, and the bad file's own row with its error
    assert run.out.count("\n") == 1 + 2 * 2 + 1 and "bad.png" in run.out
    run = zs("classify", str(folder / "bad.png"), "--labels", "c")
    assert run.code == 3 and "bad.png" in run.err


def test_import_is_light() -> None:
    code = (
        "import sys, zsindex, zsindex.cli.main; "
        "bad = [m for m in ('torch', 'open_clip', 'faiss') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
