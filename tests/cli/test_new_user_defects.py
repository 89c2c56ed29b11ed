"""What a new user hits on the command line (issue 20): one-line errors, honest messages, and an
export that ``labels import`` turns back into the same set."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsindex import Client
from zsindex.errors import InvalidInputError

TINY = "zsindex-tiny"


def _one_line_error(run: object) -> str:
    code, err = run.code, run.err  # type: ignore[attr-defined]
    assert code == 1, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return str(err)


# -- labels export into a path that cannot be a folder ---------------------------------------------


def test_export_under_a_file_is_one_line(zs: Callable, zs_home: Path, tmp_path: Path) -> None:
    assert zs("labels", "add", "s", "--labels", "a,b", "--model", TINY).code == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _one_line_error(zs("labels", "export", "s", str(blocker / "sub")))
    assert str(blocker / "sub") in err and "not a folder" in err


def test_export_under_proc_is_one_line(zs: Callable, zs_home: Path) -> None:
    assert zs("labels", "add", "s", "--labels", "a,b", "--model", TINY).code == 0
    err = _one_line_error(zs("labels", "export", "s", "/proc/zsindex-export"))
    assert "/proc/zsindex-export" in err


# -- misleading messages ---------------------------------------------------------------------------


def test_a_text_file_named_npy_is_not_a_numpy_file(
    zs: Callable, zs_home: Path, tmp_path: Path
) -> None:
    fake = tmp_path / "emb.npy"
    fake.write_text("hello, not an array\n")
    names = tmp_path / "names.txt"
    names.write_text("a\n")
    run = zs(
        "labels", "import", "x", "--embeddings", str(fake), "--names", str(names), "--model", TINY
    )
    err = _one_line_error(run)
    assert "not a NumPy .npy file" in err and "pickled" not in err


def test_an_object_array_npy_says_it_holds_objects(tmp_path: Path) -> None:
    from zsindex.cli.files import read_npy

    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match="Python objects"):
        read_npy(path)


def test_unterminated_quote_on_the_command_line(
    zs: Callable, zs_home: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text('label,parent\n"circle,\n')
    err = _one_line_error(zs("labels", "add", "q", "--file", str(bad), "--model", TINY))
    assert "bad.csv, line 2" in err and "quote" in err and "control character" not in err


def test_empty_yaml_on_the_command_line(zs: Callable, zs_home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    err = _one_line_error(zs("labels", "add", "q", "--file", str(empty), "--model", TINY))
    assert "empty" in err and "NoneType" not in err


# -- labels show / add tell what was stored --------------------------------------------------------


def test_show_of_a_prompts_set_lists_no_default_templates(
    zs: Callable, zs_home: Path, tmp_path: Path
) -> None:
    cupl = tmp_path / "cupl.json"
    cupl.write_text(json.dumps({"circle": ["a round thing"], "square": ["a boxy thing"]}))
    assert zs("labels", "add", "cupl", "--file", str(cupl), "--model", TINY).code == 0
    shown = zs("labels", "show", "cupl")
    assert shown.code == 0 and "itap of a" not in shown.out
    assert "templates: none" in shown.out
    assert zs("labels", "show", "cupl", "--json").json()["templates"] == []


def test_re_adding_identical_content_says_unchanged(zs: Callable, zs_home: Path) -> None:
    first = zs("labels", "add", "shapes", "--labels", "circle,square", "--model", TINY)
    assert first.code == 0 and "registered shapes version 1" in first.err
    again = zs("labels", "add", "shapes", "--labels", "circle,square", "--model", TINY)
    assert again.code == 0 and "registered" not in again.err
    assert "unchanged: shapes is already at version 1 with this content" in again.err
    as_json = zs("labels", "add", "shapes", "--labels", "circle,square", "--model", TINY, "--json")
    assert as_json.json()["unchanged"] is True and as_json.json()["version"] == 1


# -- export -> import rebuilds the same set --------------------------------------------------------

TAXONOMY = "shape,color\ncircle,red circle\ncircle,blue circle\nsquare,red square\n"


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (220, 20, 20)).save(path)
    return path


def _round_trip(zs: Callable, tmp_path: Path, name: str) -> tuple[dict, dict]:
    out = tmp_path / f"{name}-export"
    assert zs("labels", "export", name, str(out)).code == 0
    run = zs(
        "labels",
        "import",
        f"{name}2",
        "--embeddings",
        str(out / "embeddings.npy"),
        "--names",
        str(out / "names.json"),
        "--model",
        TINY,
    )
    assert run.code == 0, run.err
    before = zs("labels", "show", name, "--json").json()
    after = zs("labels", "show", f"{name}2", "--json").json()
    return before, after


@pytest.mark.parametrize("mode", ["marginal", "beam"])
def test_export_import_keeps_the_rank_names(
    zs: Callable, zs_home: Path, tmp_path: Path, mode: str
) -> None:
    tax = tmp_path / "tax.csv"
    tax.write_text(TAXONOMY)
    assert zs("labels", "add", "tax", "--file", str(tax), "--model", TINY).code == 0
    before, after = _round_trip(zs, tmp_path, "tax")
    for key in ("num_labels", "depth", "rank_names", "dim", "model"):
        assert after[key] == before[key], key
    assert after["rank_names"] == ["shape", "color"]
    client = Client.local()
    try:
        assert client.tree("tax2") == client.tree("tax")
        names, matrix = client.embeddings("tax")
        names2, matrix2 = client.embeddings("tax2")
        assert names2 == names
        np.testing.assert_allclose(matrix2, matrix, atol=1e-6)
        scale = client.backend.resolve("tax").logit_scale  # type: ignore[attr-defined]
    finally:
        client.close()
    # A cosine moves by at most the row's change, a log-probability by at most twice the scale
    # times that: the probabilities may differ by that relative amount (measured, not assumed).
    drift = float(np.linalg.norm(matrix2.astype(np.float64) - matrix, axis=1).max())
    rel = 2.0 * scale * drift + 1e-6
    image = str(_image(tmp_path))
    results = []
    for name in ("tax", "tax2"):
        run = zs("classify", image, "--labels", name, "--mode", mode, "--rank", "color", "--json")
        assert run.code == 0, run.err
        results.append(run.json()[0])
    for a, b in zip(results[0]["predictions"], results[1]["predictions"], strict=True):
        assert a["label"] == b["label"]
        assert a["probability"] == pytest.approx(b["probability"], rel=rel)
    assert [s["rank"] for s in results[1]["path"]] == ["shape", "color"]
    assert [s["label"] for s in results[1]["path"]] == [s["label"] for s in results[0]["path"]]


def test_export_import_of_a_tree_with_repeated_names_and_explicit_ranks(
    zs: Callable, zs_home: Path, tmp_path: Path
) -> None:
    doc = {
        "labels": [
            {"name": "cat", "rank": "group", "children": [{"name": "big", "rank": "size"}]},
            {"name": "dog", "rank": "group", "children": [{"name": "big", "rank": "size"}]},
        ],
    }
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(doc))
    assert zs("labels", "add", "rep", "--file", str(path), "--model", TINY).code == 0
    before, after = _round_trip(zs, tmp_path, "rep")
    assert after["depth"] == before["depth"] == 2 and after["num_labels"] == 4
    client = Client.local()
    try:
        assert client.tree("rep2") == client.tree("rep")
        assert client.tree("rep2").ranks == ["group", "size", "group", "size"]
    finally:
        client.close()


def test_export_import_of_a_flat_set_is_unchanged_in_shape(
    zs: Callable, zs_home: Path, tmp_path: Path
) -> None:
    assert zs("labels", "add", "flat", "--labels", "red,blue", "--model", TINY).code == 0
    _, after = _round_trip(zs, tmp_path, "flat")
    assert json.loads((tmp_path / "flat-export" / "names.json").read_text()) == ["red", "blue"]
    assert after["num_labels"] == 2 and after["depth"] == 1 and after["rank_names"] == []


# -- input from a stream ---------------------------------------------------------------------------


def test_a_non_seekable_input_is_read_whole(tmp_path: Path) -> None:
    from zsindex.cli.files import image_input

    regular = _image(tmp_path)
    assert image_input(regular) == regular  # a plain file stays a path (read lazily)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    payload = regular.read_bytes()

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(payload)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert image_input(fifo) == payload
    finally:
        writer.join(timeout=10)


def _through_fifo(tmp_path: Path, payload: bytes, read: Callable[[Path], object]) -> object:
    fifo = tmp_path / "npy-pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(payload)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        return read(fifo)
    finally:
        writer.join(timeout=10)


def test_embeddings_from_a_pipe_are_read_whole(tmp_path: Path) -> None:
    from zsindex.cli.files import read_npy

    matrix = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "m.npy"
    np.save(path, matrix)
    got = _through_fifo(tmp_path, path.read_bytes(), read_npy)
    np.testing.assert_array_equal(np.asarray(got), matrix)


def test_a_pipe_of_text_is_not_a_numpy_file(tmp_path: Path) -> None:
    from zsindex.cli.files import read_npy

    with pytest.raises(InvalidInputError, match=r"not a NumPy \.npy file"):
        _through_fifo(tmp_path, b"hello\n", read_npy)
