"""Issue 20 ("what a new user hits"), the CLI parts: each test failed before its fix."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsindex.errors import InvalidInputError, NotFoundError

TINY = "zsindex-tiny"


def _one_line_error(run: object, *needles: str) -> None:
    err = getattr(run, "err")  # noqa: B009 - conftest's Run
    assert getattr(run, "code") == 1, err  # noqa: B009
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (40, 30), (250, 0, 0)).save(folder / "a.png")
    Image.new("RGB", (40, 30), (0, 0, 250)).save(folder / "b.png")
    return folder


@pytest.fixture
def dups(zs: Callable, zs_home: Path, tmp_path: Path) -> str:
    """A tree where ``red`` is a leaf under both ``circle`` and ``square``."""
    names = tmp_path / "names.csv"
    names.write_text(
        "name,parent\ncircle,\nsquare,\nred,circle\nblue,circle\nred,square\ngreen,square\n"
    )
    rows = np.random.default_rng(0).standard_normal((6, 128)).astype(np.float32)
    np.save(tmp_path / "emb.npy", rows / np.linalg.norm(rows, axis=1, keepdims=True))
    run = zs(
        "labels", "import", "dups", "--embeddings", str(tmp_path / "emb.npy"),
        "--names", str(names), "--model", TINY,
    )  # fmt: skip
    assert run.code == 0, run.err
    return "dups"


@pytest.fixture
def flat(zs: Callable, zs_home: Path) -> str:
    assert zs("labels", "add", "flat", "--labels", "red,green,blue", "--model", TINY).code == 0
    return "flat"


# -- 5: tracebacks instead of one-line errors --------------------------------------------------


def test_downgrade_to_an_unknown_revision_is_one_line(zs: Callable, zs_home: Path) -> None:
    assert zs("db", "upgrade").code == 0
    _one_line_error(zs("db", "downgrade", "9999"), "9999", "zsindex db current")


@pytest.mark.parametrize("under", [False, True], ids=["file", "under-a-file"])
def test_home_that_is_a_file_is_one_line_for_every_command(
    zs: Callable, zs_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, under: bool
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    home = blocker / "sub" if under else blocker
    monkeypatch.setenv("ZSINDEX_HOME", str(home))
    for command in (
        ["labels", "list"],
        ["labels", "add", "x", "--labels", "a,b"],
        ["db", "current"],
        ["db", "upgrade"],
        ["classify", str(blocker), "--labels", "x"],
    ):
        _one_line_error(zs(*command), "ZSINDEX_HOME", str(home))


# -- 7: repeated leaf names --------------------------------------------------------------------


def test_table_tells_repeated_leaf_names_apart(zs: Callable, dups: str, images: Path) -> None:
    run = zs("classify", str(images / "a.png"), "--labels", dups, "-k", "4")
    assert run.code == 0, run.err
    labels = sorted(line.split()[-1] for line in run.out.splitlines()[1:])
    assert labels == ["blue", "circle/red", "green", "square/red"]


@pytest.mark.parametrize("mode", ["flat", "beam", "marginal"])
def test_csv_path_is_each_predictions_own(zs: Callable, dups: str, images: Path, mode: str) -> None:
    run = zs("classify", str(images), "--labels", dups, "-k", "4", "--mode", mode, "--csv")
    assert run.code == 0, run.err
    rows = list(csv.DictReader(io.StringIO(run.out)))
    assert len(rows) == 2 * 4
    own = {
        "circle/red": "circle > red",
        "blue": "circle > blue",
        "square/red": "square > red",
        "green": "square > green",
    }
    assert {r["label"]: r["path"] for r in rows} == own
    assert all(r["error"] == "" for r in rows)


def test_csv_path_of_a_pinned_older_version(
    zs: Callable, dups: str, images: Path, tmp_path: Path
) -> None:
    """``--labels NAME@1`` after a version 2 exists: each row's path is version 1's."""
    rows = np.random.default_rng(1).standard_normal((2, 128)).astype(np.float32)
    np.save(tmp_path / "flat.npy", rows / np.linalg.norm(rows, axis=1, keepdims=True))
    (tmp_path / "flat.txt").write_text("x\ny\n")
    run = zs(
        "labels", "import", dups, "--embeddings", str(tmp_path / "flat.npy"),
        "--names", str(tmp_path / "flat.txt"), "--model", TINY,
    )  # fmt: skip
    assert run.code == 0, run.err
    run = zs("classify", str(images), "--labels", f"{dups}@1", "-k", "4", "--csv")
    assert run.code == 0, run.err
    paths = {r["label"]: r["path"] for r in csv.DictReader(io.StringIO(run.out))}
    assert paths["circle/red"] == "circle > red" and paths["green"] == "square > green"


# -- 9: the options' rules on the command line -------------------------------------------------


@pytest.mark.parametrize(
    "option", [["--rank", "1"], ["--beam", "3"], ["--min-confidence", "0.5"]], ids=str
)
def test_tree_options_in_flat_mode_are_an_error(
    zs: Callable, flat: str, dups: str, images: Path, option: list[str]
) -> None:
    for labelset in (flat, dups):
        run = zs("classify", str(images / "a.png"), "--labels", labelset, *option)
        _one_line_error(run, option[0], "not to flat mode")


def test_within_on_a_flat_set_names_the_option(zs: Callable, flat: str, images: Path) -> None:
    run = zs("classify", str(images / "a.png"), "--labels", flat, "--within", "red")
    _one_line_error(run, "--within", "'flat' is a flat label set")


# -- 13: a stray non-image ---------------------------------------------------------------------


def test_a_stray_non_image_is_reported_in_every_format(
    zs: Callable, flat: str, images: Path
) -> None:
    (images / "notes.txt").write_text("not an image")
    bad = str(images / "notes.txt")
    table = zs("classify", str(images), "--labels", flat, "-k", "2")
    assert table.code == 3, table.err
    assert f"{bad}  (flat v1)\n  error: {bad}:" in table.out
    assert table.out.count("%") == 2 * 2  # both good images still classified
    assert "1 of 3 image(s) could not be classified" in table.err
    as_json = zs("classify", str(images), "--labels", flat, "-k", "2", "--json")
    assert as_json.code == 3
    results = json.loads(as_json.out)
    assert [r["image"] for r in results] == [
        str(images / n) for n in ("a.png", "b.png", "notes.txt")
    ]
    assert results[2]["predictions"] == [] and results[2]["error"].startswith(f"{bad}:")
    assert results[2]["error_code"] and "error" not in results[0]
    as_csv = zs("classify", str(images), "--labels", flat, "-k", "2", "--csv")
    assert as_csv.code == 3
    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert len(rows) == 2 * 2 + 1
    assert rows[-1]["image"] == bad and rows[-1]["error"].startswith(f"{bad}:")
    assert rows[-1]["label"] == "" and all(r["error"] == "" for r in rows[:-1])


def test_one_unreadable_file_is_reported_too(zs: Callable, flat: str, images: Path) -> None:
    bad = images / "bad.png"
    bad.write_bytes(b"not an image at all")
    run = zs("classify", str(bad), "--labels", flat, "--json")
    assert run.code == 3
    (result,) = json.loads(run.out)
    assert result["error"].startswith(f"{bad}:")


def test_classify_help_documents_the_exit_codes(zs: Callable) -> None:
    text = " ".join(zs("classify", "--help").out.split())
    assert "3 some images could not be classified" in text
    assert "1 a user or store error" in text


# -- 16: --debug after the sub-command; one k limit --------------------------------------------


def test_debug_works_after_the_subcommand(zs: Callable, zs_home: Path, flat: str) -> None:
    with pytest.raises(NotFoundError):
        zs("labels", "show", "nope", "--debug")
    with pytest.raises(InvalidInputError, match=r"x\.png: no such file"):
        zs("classify", "x.png", "--labels", "nope", "--debug")
    # After ``--`` it is an argument like any other.
    assert zs("labels", "show", "--", "--debug").code == 1


def test_k_takes_the_api_limit(zs: Callable, flat: str, images: Path) -> None:
    from zsindex.options import MAX_K

    run = zs("classify", str(images / "a.png"), "--labels", flat, "-k", str(MAX_K), "--json")
    assert run.code == 0, run.err
    assert len(json.loads(run.out)[0]["predictions"]) == 3
    assert zs("classify", str(images / "a.png"), "--labels", flat, "-k", str(MAX_K + 1)).code == 2


def test_eval_with_repeated_leaf_names(zs: Callable, dups: str, tmp_path: Path) -> None:
    """Predictions name a repeated leaf by its path, so eval must too: a folder named by a
    repeated leaf name cannot say which leaf it means, and a unique one still matches."""
    folder = tmp_path / "eval"
    for name in ("red", "blue"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), (200, 0, 0)).save(folder / name / "1.png")
    _one_line_error(zs("eval", str(folder), "--labels", dups), "red", "circle/red", "square/red")
    (folder / "red" / "1.png").unlink()
    (folder / "red").rmdir()
    run = zs("eval", str(folder), "--labels", dups, "--json")
    assert run.code == 0, run.err
    assert run.json()["n"] == 1


def test_classify_reads_one_image_from_stdin(tmp_path: Path) -> None:
    """``classify -`` and ``classify /dev/stdin`` (a pipe: it cannot seek back after the format
    is sniffed) read the image whole, in a real process with a real pipe."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(ZSINDEX_HOME=str(tmp_path / "home"), ZSINDEX_DEVICE="cpu", ZSINDEX_MODEL=TINY)
    cli = [sys.executable, "-c", "from zsindex.cli.main import main; main()"]
    add = subprocess.run(
        [*cli, "labels", "add", "c", "--labels", "red,green,blue"], env=env, capture_output=True
    )
    assert add.returncode == 0, add.stderr
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (220, 10, 10)).save(buf, format="PNG")
    for arg in ("-", "/dev/stdin"):
        run = subprocess.run(
            [*cli, "classify", arg, "--labels", "c", "--json"],
            input=buf.getvalue(),
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr.decode()
        [result] = json.loads(run.stdout)
        assert result["image"] == arg and result["predictions"][0]["label"] == "red"


def test_labels_add_reads_the_file_from_stdin(tmp_path: Path) -> None:
    """``labels add --file -`` reads standard input; its errors name "stdin" and the line."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSINDEX_")}
    env.update(ZSINDEX_HOME=str(tmp_path / "home"), ZSINDEX_DEVICE="cpu", ZSINDEX_MODEL=TINY)
    cli = [sys.executable, "-c", "from zsindex.cli.main import main; main()", "labels"]
    tree = b"name,parent\nanimal,\ncat,animal\ndog,animal\n"
    # A stream has no file name to tell its format from: --format says it (else text or JSON).
    run = subprocess.run(
        [*cli, "add", "pets", "--file", "-", "--format", "csv"],
        input=tree,
        env=env,
        capture_output=True,
    )
    assert run.returncode == 0, run.stderr
    shown = subprocess.run([*cli, "show", "pets"], env=env, capture_output=True, text=True)
    assert "num_labels: 3" in shown.stdout and "depth: 2" in shown.stdout, shown.stdout
    bad = subprocess.run(
        [*cli, "add", "bad", "--file", "-", "--format", "csv"],
        input=b'a,"b\n',
        env=env,
        capture_output=True,
        text=False,
    )
    assert bad.returncode == 1 and bad.stderr.decode().startswith("error: stdin, line 1:")


def test_a_read_never_creates_a_store(
    tmp_path: Path, zs: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read (``labels list``, ``labels show``, ``classify``, ``db current``, ``db check``)
    on a missing SQLite file names the path and creates neither the file nor its folder; a write
    (``labels add``) or ``db upgrade`` creates it."""
    target = tmp_path / "nonexistdir" / "x.db"
    monkeypatch.setenv("ZSINDEX_DATABASE_URL", f"sqlite:///{target}")
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (250, 0, 0)).save(image)
    for args in (
        ("labels", "list"),
        ("labels", "show", "x"),
        ("classify", str(image), "--labels", "x"),
        ("db", "current"),
        ("db", "check"),
    ):
        _one_line_error(zs(*args), f"no zsindex store at {target}", "zsindex labels add")
        assert not target.parent.exists(), args
    assert zs("labels", "add", "c", "--labels", "red,green", "--model", TINY).code == 0
    assert target.is_file()
    assert zs("labels", "list").code == 0
    other = tmp_path / "other" / "y.db"
    monkeypatch.setenv("ZSINDEX_DATABASE_URL", f"sqlite:///{other}")
    assert zs("db", "upgrade").code == 0 and other.is_file()
