"""The CLI's version pinning: ``--labels NAME@N`` (classify, eval), ``labels show NAME --version N``
(or ``NAME@N``) and ``labels rollback NAME N``, on a real SQLite store with ``zsindex-tiny``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

TINY = ("--model", "zsindex-tiny")


@pytest.fixture
def shapes(zs: Callable, zs_home: Path) -> Callable:
    assert zs("labels", "add", "shapes", "--labels", "red,green", *TINY).code == 0
    assert zs("labels", "add", "shapes", "--labels", "red,green,blue", *TINY).code == 0
    return zs


def _image(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), color).save(path)
    return path


def test_classify_and_eval_against_a_pinned_version(shapes: Callable, tmp_path: Path) -> None:
    zs = shapes
    img = _image(tmp_path / "red.png", (230, 20, 20))
    run = zs("classify", str(img), "--labels", "shapes@1", "-k", "5", "--json")
    assert run.code == 0, run.err
    [result] = run.json()
    assert (result["labelset"], result["version"]) == ("shapes", 1)
    assert {p["label"] for p in result["predictions"]} == {"red", "green"}
    [current] = zs("classify", str(img), "--labels", "shapes", "--json").json()
    assert current["version"] == 2
    folder = tmp_path / "folder"
    _image(folder / "red" / "1.png", (230, 20, 20))
    _image(folder / "green" / "1.png", (20, 230, 20))
    run = zs("eval", str(folder), "--labels", "shapes@1", "--json")
    assert run.code == 0, run.err
    assert run.json()["n"] == 2


def test_bad_pins_are_one_line_user_errors(shapes: Callable, tmp_path: Path) -> None:
    zs = shapes
    img = _image(tmp_path / "red.png", (230, 20, 20))
    for labels, says in [
        ("shapes@9", "label set 'shapes' has no version 9 (see `zsindex labels history shapes`)"),
        ("shapes@x", "after '@' give a version number from 1"),
    ]:
        run = zs("classify", str(img), "--labels", labels)
        assert run.code == 1 and says in run.err, run.err
        assert run.err.strip().count("\n") == 0


def test_show_a_version(shapes: Callable) -> None:
    zs = shapes
    by_option = zs("labels", "show", "shapes", "--version", "1", "--json")
    assert by_option.code == 0, by_option.err
    shown = by_option.json()
    assert (shown["version"], shown["num_labels"], shown["current"]) == (1, 2, False)
    assert zs("labels", "show", "shapes@1", "--json").json() == shown
    assert zs("labels", "show", "shapes", "--json").json()["version"] == 2
    table = zs("labels", "show", "shapes", "--version", "1")
    assert table.code == 0 and "version: 1" in table.out
    missing = zs("labels", "show", "shapes", "--version", "9")
    assert missing.code == 1 and "has no version 9" in missing.err
    assert zs("labels", "show", "shapes@1", "--version", "1").code == 2  # the version twice
    assert zs("labels", "show", "shapes", "--version", "0").code == 2
    assert zs("labels", "show", "shapes", "--version", "x").code == 2


def test_rollback(shapes: Callable) -> None:
    zs = shapes
    assert zs("labels", "rollback", "--help").code == 0
    run = zs("labels", "rollback", "shapes", "1")
    assert run.code == 0, run.err
    assert "rolled shapes back to version 1: now version 3" in run.err + run.out
    history = zs("labels", "history", "shapes", "--json").json()
    assert [(h["version"], h["current"], h["rollback_of"]) for h in history] == [
        (1, False, None),
        (2, False, None),
        (3, True, 1),
    ]
    table = zs("labels", "history", "shapes").out.splitlines()
    assert table[0].split()[-2:] == ["rollback", "of"] and table[-1].split()[-1] == "1"
    assert history[2]["digest"] == history[0]["digest"]
    assert zs("labels", "show", "shapes", "--json").json()["num_labels"] == 2
    again = zs("labels", "rollback", "shapes", "1", "--json")
    assert again.code == 0 and json.loads(again.out)["unchanged"] is True
    run = zs("labels", "rollback", "shapes", "2", "--json")
    assert json.loads(run.out)["version"] == 4
    missing = zs("labels", "rollback", "shapes", "9")
    assert missing.code == 1 and "has no version 9" in missing.err
    assert zs("labels", "rollback", "nope", "1").code == 1
    assert zs("labels", "rollback", "shapes", "x").code == 2
    assert zs("labels", "rollback", "shapes", "0").code == 2
