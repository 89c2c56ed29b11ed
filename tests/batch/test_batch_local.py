"""``zsindex batch`` on the local engine: the same answers as ``zsindex classify --json`` for
every input layout, versions pinned at start, outputs that are never mixed, stored embeddings
classified without re-encoding, and bad input refused in one line with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from batch_support import Archive, assert_same, classify_json, make_settings, register

from zsindex.batch import run
from zsindex.config import Settings
from zsindex.errors import ConflictError, InvalidInputError


def test_folder_matches_classify_json(
    archive: Archive, cli_env: Settings, zs: Any, tmp_path: Path, read_predictions: Any
) -> None:
    out = tmp_path / "out"
    summary = run(
        [str(archive.folder)],
        ["shapes", "colors:k=3", "shape-tree:mode=beam"],
        out,
        settings=cli_env,
        part_size=5,
    )
    rows = read_predictions(out)
    assert summary.images == archive.images
    assert summary.rows == 3 * archive.images == len(rows)
    assert summary.errors == 4  # the hostile files, each with an error row per label set
    folder = str(archive.folder)
    by_set = {name: [r for r in rows if r["labelset"] == name] for name in ("shapes", "colors")}
    assert_same(by_set["shapes"], classify_json(zs, folder, "--labels", "shapes"))
    assert_same(by_set["colors"], classify_json(zs, folder, "--labels", "colors", "-k", "3"))
    tree = [r for r in rows if r["labelset"] == "shape-tree"]
    assert_same(tree, classify_json(zs, folder, "--labels", "shape-tree", "--mode", "beam"))
    codes = {r["source"].rsplit("/", 1)[-1]: r["error"]["code"] for r in rows if r["error"]}
    assert codes == {
        "bomb_png_30000x30000_real.png": "image_too_large",
        "empty.png": "bad_image",
        "elf.bin": "unsupported_media_type",
        "flipped_jpeg_no_sos.jpg": "bad_image",
    }


def test_reject_below_per_label_set(
    archive: Archive, cli_env: Settings, zs: Any, tmp_path: Path, read_predictions: Any
) -> None:
    # The threshold is taken between the archive's own top probabilities (measured with
    # classify), so it splits the archive whatever the model's confidence; a fixed number would
    # depend on one model's weights.
    plain = classify_json(zs, str(archive.folder), "--labels", "colors")
    tops = sorted(
        {r["predictions"][0]["probability"] for r in plain.values() if r.get("predictions")}
    )
    assert len(tops) >= 2, "the archive's images should not all get the same top probability"
    mid = len(tops) // 2
    cut = repr((tops[mid - 1] + tops[mid]) / 2)  # exact: no rounding onto either neighbour
    out = tmp_path / "out"
    run([str(archive.folder)], [f"colors:reject_below={cut}", "shapes"], out, settings=cli_env)
    rows = read_predictions(out)
    colors = [r for r in rows if r["labelset"] == "colors"]
    want = classify_json(zs, str(archive.folder), "--labels", "colors", "--reject-below", cut)
    assert_same(colors, want)
    flags = {r["rejected"] for r in colors if r["error"] is None}
    assert flags == {True, False}, "the threshold should split this archive"
    assert not any(r["rejected"] for r in rows if r["labelset"] == "shapes")


def test_lists_and_shards(
    archive: Archive, cli_env: Settings, zs: Any, tmp_path: Path, read_predictions: Any
) -> None:
    """CSV rows are named as written (relative to the list's folder), Parquet lists likewise,
    shard samples as SHARD.tar/KEY; the numbers are classify's for the same bytes."""
    out = tmp_path / "out"
    inputs = [str(archive.csv_list), str(archive.parquet_list), *map(str, archive.shards)]
    run(inputs, ["shapes"], out, settings=cli_env, part_size=7)
    rows = read_predictions(out)
    expected = classify_json(zs, str(archive.folder), "--labels", "shapes")
    by_file = {Path(name).name: r for name, r in expected.items()}
    csv_rows = [r for r in rows if not r["source"].startswith("/")]
    assert len(csv_rows) == archive.images
    assert all((archive.root / r["source"]).is_file() for r in csv_rows)
    shard_rows = [r for r in rows if ".tar/" in r["source"]]
    assert len(shard_rows) == 2 * 14
    assert {r["source"].split(".tar/")[1] for r in shard_rows if r["error"]} == {
        "0000bad1",
        "0000bad2",
    }
    assert {r["error"]["code"] for r in shard_rows if r["error"]} == {
        "bad_image",
        "image_too_large",
    }
    parquet_rows = [r for r in rows if r["source"].startswith("/") and ".tar/" not in r["source"]]
    assert len(parquet_rows) == 10
    assert_same(
        csv_rows + parquet_rows,
        {r["source"]: by_file[Path(r["source"]).name] | {"image": r["source"]} for r in csv_rows}
        | {r["source"]: expected[r["source"]] for r in parquet_rows},
    )
    # A shard sample is the same JPEG as its file: the same answer.
    import tarfile

    with tarfile.open(archive.shards[0]) as tar:
        first = tar.extractfile("000000000.jpg")
        assert first is not None
        data = first.read()
    match = [n for n, p in ((n, Path(n)) for n in expected) if p.read_bytes() == data]
    row = next(r for r in shard_rows if r["source"].endswith(".tar/000000000"))
    assert row["labels"] == [p["label"] for p in expected[match[0]]["predictions"]]


def test_version_pinned_at_start_and_resume(
    archive: Archive, tmp_path: Path, read_predictions: Any
) -> None:
    settings = make_settings(tmp_path / "home")
    register(settings, "shapes")
    out = tmp_path / "out"

    def register_mid_job(done: int, total: int, seconds: float) -> None:
        if done == 5:  # after the first part: a new version of shapes
            from zsindex.client import Client
            from zsindex.local import LocalBackend

            with Client.from_backend(LocalBackend(settings)) as client:
                client.add_labelset("shapes", ["circle", "square"], model="zsindex-tiny")

    summary = run(
        [str(archive.folder)],
        ["shapes"],
        out,
        settings=settings,
        part_size=5,
        on_progress=register_mid_job,
    )
    rows = read_predictions(out)
    assert summary.labelsets == ["shapes@1"]
    assert {r["version"] for r in rows} == {1}
    assert {label for r in rows for label in r["labels"]} > {"circle", "square", "triangle"}
    # The same job later finds version 2 current: it is another job, refused with the way out.
    with pytest.raises(ConflictError, match=r"shapes version 1, this job: version 2.*shapes@1"):
        run([str(archive.folder)], ["shapes"], out, settings=settings, part_size=5)
    again = run([str(archive.folder)], ["shapes@1"], out, settings=settings, part_size=5)
    assert again.parts_skipped == again.parts and again.images_this_run == 0
    assert read_predictions(out) == rows


def test_other_jobs_output_is_refused_unless_overwrite(
    archive: Archive, store: Settings, tmp_path: Path, read_predictions: Any
) -> None:
    out = tmp_path / "out"
    run([str(archive.folder)], ["shapes"], out, settings=store, part_size=10)
    before = sorted(p.name for p in (out / "predictions").iterdir())
    with pytest.raises(ConflictError, match="another job's parts"):
        run([str(archive.folder)], ["colors"], out, settings=store, part_size=10)
    with pytest.raises(ConflictError, match="another job's parts"):
        run([str(archive.shards[0])], ["shapes"], out, settings=store, part_size=10)
    assert sorted(p.name for p in (out / "predictions").iterdir()) == before
    run([str(archive.folder)], ["colors"], out, settings=store, part_size=10, overwrite=True)
    assert {r["labelset"] for r in read_predictions(out)} == {"colors"}

    stray = tmp_path / "stray"
    (stray / "predictions").mkdir(parents=True)
    (stray / "predictions" / "part-00000.parquet").write_bytes(b"not ours")
    with pytest.raises(ConflictError, match="without a job manifest"):
        run([str(archive.folder)], ["shapes"], stray, settings=store)


def test_saved_embeddings_classify_at_search_speed(
    archive: Archive,
    cli_env: Settings,
    zs: Any,
    tmp_path: Path,
    read_predictions: Any,
    random_model: str,
) -> None:
    out = tmp_path / "out"
    run([str(archive.folder)], ["shapes"], out, settings=cli_env, save_embeddings=True, part_size=6)
    import pyarrow.dataset as ds

    emb = ds.dataset(out / "embeddings", format="parquet").to_table()
    assert emb.num_rows == archive.images
    assert emb.column("embedding").null_count == 4
    assert set(emb.column("model").to_pylist()) == {"zsindex-tiny"}
    expected = classify_json(zs, str(archive.folder), "--labels", "colors")
    good = {k: v for k, v in expected.items() if "error" not in v}
    # zsindex classify --embeddings: the same answers, no images read.
    stored = classify_json(zs, "--embeddings", str(out / "embeddings"), "--labels", "colors")
    assert set(stored) == set(good)
    assert_same(
        [
            {
                "source": name,
                "version": r["version"],
                "error": None,
                "labels": [p["label"] for p in r["predictions"]],
                "probabilities": [p["probability"] for p in r["predictions"]],
                "scores": [p["score"] for p in r["predictions"]],
                "rejected": r["rejected"],
            }
            for name, r in stored.items()
        ],
        good,
    )
    # zsindex batch --embeddings: the same, as a job.
    out2 = tmp_path / "out2"
    summary = run([str(out / "embeddings")], ["colors"], out2, settings=cli_env, embeddings=True)
    assert summary.images == len(good)
    assert_same(read_predictions(out2), good)

    # Another model's label set: refused, naming both dimensions.
    from zsindex.client import Client
    from zsindex.local import LocalBackend

    with Client.from_backend(LocalBackend(cli_env)) as client:
        client.add_labelset("other", ["a", "b"], model=random_model)
    result = zs("classify", "--embeddings", str(out / "embeddings"), "--labels", "other")
    assert result.code == 1 and "dimension" in result.err and "other@1" in result.err
    # Same dimension, other weights: the fingerprint tells them apart.
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = emb.set_column(
        emb.schema.get_field_index("fingerprint"),
        "fingerprint",
        pa.array(["0" * 64] * emb.num_rows),
    )
    forged = tmp_path / "forged.parquet"
    pq.write_table(table, forged)
    result = zs("classify", "--embeddings", str(forged), "--labels", "colors")
    assert result.code == 1 and "fingerprint" in result.err and result.out == ""
    with pytest.raises(InvalidInputError, match="fingerprint"):
        run([str(forged)], ["colors"], tmp_path / "out3", settings=cli_env, embeddings=True)
    assert not (tmp_path / "out3").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: str(d / "missing"), "no such file, folder or matching pattern"),
        (lambda d: str(d / "*.nothing"), "matches no files"),
        (lambda d: _write(d / "l.csv", "name\nx.jpg\n"), "no column of image paths"),
        (lambda d: _write(d / "l.csv", "path\na.jpg\n,\n"), "line 3: no path"),
        (lambda d: _write(d / "l.parquet", "not parquet"), "not a readable Parquet list"),
        (lambda d: _write(d / "s.tar", "not a tar"), "not a readable uncompressed tar"),
    ],
)
def test_bad_input_one_line_nothing_written(
    store: Settings, tmp_path: Path, make: Any, message: str
) -> None:
    given = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError, match=message):
        run([given], ["shapes"], out, settings=store)
    assert not out.exists()


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["nope"], "nope"),
        (["shapes:k=x"], "k must be a number"),
        (["shapes:color=red"], "KEY=VALUE"),
        (["shapes:mode=beam"], "needs a tree"),
        (["shapes", "shapes@1"], "given twice"),
    ],
)
def test_bad_labels_refused_before_work(
    archive: Archive, store: Settings, tmp_path: Path, labels: list[str], message: str
) -> None:
    from zsindex.errors import ZsindexError

    with pytest.raises(ZsindexError, match=message):
        run([str(archive.folder)], labels, tmp_path / "out", settings=store)
    assert not (tmp_path / "out").exists()


def test_cli_summary_and_exit_codes(
    archive: Archive, cli_env: Settings, zs: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = zs(
        "batch", str(archive.shards[1]), "--labels", "shapes", "--output", str(out), "--json"
    )
    assert result.code == 3  # two samples of the shard cannot be read
    summary = json.loads(result.out)
    assert summary["images"] == 14 and summary["errors"] == 2 and summary["rows"] == 14
    assert json.loads((out / "_summary.json").read_text())["rows"] == 14
    clean = zs(
        "batch",
        str(archive.folder / "*" / "*.jpg"),  # a glob: the rendered images only
        "--labels",
        "shapes",
        "--output",
        str(tmp_path / "clean"),
    )
    assert clean.code == 0 and "rows in" in clean.err
    bad = zs("batch", str(archive.folder), "--labels", "shapes", "--output", str(out))
    assert bad.code == 1 and bad.err.count("\n") == 1 and "--overwrite" in bad.err


def test_ray_engine_without_ray_says_what_to_install(store: Settings, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from zsindex.cli.main import main\n"
        f"main(['batch', {str(tmp_path)!r}, '--labels', 'shapes', '--output', "
        f"{str(tmp_path / 'o')!r}, '--engine', 'ray'])\n"
    )
    env = {**os.environ, "ZSINDEX_HOME": str(store.home)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --engine ray needs Ray Data: pip install 'zsindex[ray]' (or use --engine local)"
    ]


@pytest.mark.postgres
def test_batch_on_postgresql(
    archive: Archive, pg_url: str, tmp_path: Path, read_predictions: Any
) -> None:
    settings = make_settings(tmp_path / "home", pg_url)
    register(settings, "shapes")
    summary = run([str(archive.shards[0])], ["shapes"], tmp_path / "out", settings=settings)
    rows = read_predictions(tmp_path / "out")
    assert summary.rows == len(rows) == 14 and {r["version"] for r in rows} == {1}
