"""``zsindex classify`` and ``zsindex eval``: batch classification of image files."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import click

from zsindex.backend import Backend
from zsindex.cli.classify_flags import classify_options, fast_decode_option
from zsindex.cli.context import CliState
from zsindex.cli.files import image_input
from zsindex.cli.output import info, print_json, print_table
from zsindex.errors import InvalidInputError
from zsindex.options import MAX_BEAM, MODES, ClassifyOptions, Mode

SOME_FAILED = 3
"""Exit code of a run in which some images could not be classified (each is reported)."""

CHUNK = 256
"""Files per backend call: the pipeline decodes the next forward's images while the model runs
within one call, so a call spans several forward batches; results print call by call."""


def iter_image_paths(paths: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """(display name, path) for each file, walking folders recursively in sorted order.

    A folder's files are named as the folder was given joined with the file's path inside it.
    """
    for given in paths:
        if given == "-":  # one image on standard input
            yield "-", Path("/dev/stdin")
            continue
        path = Path(given)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if any(part.startswith(".") for part in child.relative_to(path).parts):
                    continue
                yield str(Path(given) / child.relative_to(path)), child
        elif path.exists():
            yield given, path
        else:
            raise InvalidInputError(f"{given}: no such file or folder")


def _image(path: Path) -> Path | bytes:
    """A file stays a path; a pipe or device (stdin) is read whole. One that cannot be read
    stays a path, so the pipeline reports it in that image's own result and the run goes on."""
    try:
        return image_input(path)
    except InvalidInputError:
        return path


@click.command("classify")
@click.argument("paths", nargs=-1)
@click.option("--labels", "labelset", required=True, help="Label set to classify against.")
@click.option(
    "--embeddings",
    "embeddings_path",
    type=click.Path(exists=True, path_type=Path),
    help="Classify stored image embeddings instead of images: Parquet from `zsindex batch "
    "--save-embeddings` (a file or folder) or a .npy matrix.",
)
@classify_options
@fast_decode_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV rows.")
@click.pass_obj
def classify(
    state: CliState,
    paths: tuple[str, ...],
    labelset: str,
    embeddings_path: Path | None,
    options: ClassifyOptions,
    fast_decode: bool | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Classify image files or folders (recursive) against label set LABELS; "-" reads one
    image from standard input. With --embeddings, classify stored image embeddings instead
    (no images, no image model: search speed).

    An image that cannot be read is reported in its own result (the table's "error:" line, the
    JSON object's "error", the CSV row's error column) and the run goes on.

    Exit codes: 0 every image classified; 1 a user or store error (one line on stderr); 2 a
    usage error; 3 some images could not be classified (the others' results are printed).

    Tree options (--rank, --beam, --min-confidence: tree modes; --within: any mode) need a
    label tree; --sigmoid is for flat mode. An option where it does not apply is an error.
    """
    from zsindex.cli.classify_output import NodePaths, ResultWriter

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    options = replace(options, fast_decode=fast_decode)
    backend = state.client().backend
    fmt = "json" if as_json else "csv" if as_csv else "table"
    if embeddings_path is not None:
        if paths:
            raise click.UsageError("give image PATHS or --embeddings, not both")
        _classify_stored(backend, embeddings_path, labelset, options, fmt)
        return
    if not paths:
        raise click.UsageError("give one or more image PATHS (or --embeddings FILE_OR_DIR)")
    items = list(iter_image_paths(paths))
    if not items:
        raise InvalidInputError("no image files found in " + ", ".join(paths))
    writer = ResultWriter(fmt, NodePaths(backend) if as_csv else None)
    failed: list[str] = []
    show_progress = len(items) > CHUNK and sys.stderr.isatty()
    with click.progressbar(
        length=len(items), label="classifying", file=sys.stderr, hidden=not show_progress
    ) as bar:
        for start in range(0, len(items), CHUNK):
            batch = items[start : start + CHUNK]
            for result in backend.classify(
                labelset,
                images=[_image(path) for _, path in batch],
                image_names=[name for name, _ in batch],
                options=options,
                on_error="report",
            ):
                if result.error is not None:
                    failed.append(result.error)
                writer.write(result)
            bar.update(len(batch))
    writer.close()
    if failed:
        info(f"{len(failed)} of {len(items)} image(s) could not be classified (first: {failed[0]})")
        raise SystemExit(SOME_FAILED)


def _classify_stored(
    backend: Backend, path: Path, labelset: str, options: ClassifyOptions, fmt: str
) -> None:
    """``classify --embeddings``: one version for the whole file, its model checked first."""
    from zsindex.batch.stored import read_stored
    from zsindex.cli.classify_output import NodePaths, ResultWriter

    info_ = backend.labelset(labelset)
    pinned = f"{info_.name}@{info_.version}"
    stored = read_stored(path)
    stored.check_model(pinned, info_.model, info_.model_fingerprint, info_.dim)
    if stored.skipped:
        info(f"{stored.skipped} row(s) of {path} hold no embedding (unreadable images): skipped")
    writer = ResultWriter(fmt, NodePaths(backend) if fmt == "csv" else None)
    step = 4096
    for start in range(0, len(stored.sources), step):
        for result in backend.classify(
            pinned,
            embeddings=stored.vectors[start : start + step],
            image_names=stored.sources[start : start + step],
            options=options,
        ):
            writer.write(result)
    writer.close()


@click.command("eval")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--labels", "labelset", required=True, help="Label set whose names match the folders."
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="flat",
    show_default=True,
    help="flat (leaves), beam, marginal or chils (trees): how images are classified.",
)
@click.option(
    "--rank",
    help="Tree modes: the folders name nodes at this named rank or depth (default: leaves).",
)
@click.option("--beam", type=click.IntRange(1, MAX_BEAM), help="Nodes kept per level (beam mode).")
@click.option("--within", help="Only this node's subtree (name or a/b/c path; trees).")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a reliability diagram and a confusion matrix to this PNG file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def eval_command(
    state: CliState,
    directory: Path,
    labelset: str,
    mode: str,
    rank: str | None,
    beam: int | None,
    within: str | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Zero-shot accuracy on DIRECTORY in ImageFolder layout (one sub-folder per class).

    The folders are named after leaves (flat mode, or a tree mode without --rank). With
    --mode beam|marginal|chils --rank R they are named after the tree's nodes at rank R (a leaf
    above R counts as a node there), and an image is correct when the node predicted at rank
    R is its folder's. --within NODE evaluates inside NODE's subtree. Reported: top-1, top-5,
    mean per-class recall, the number of images and of files that could not be classified;
    calibration: ECE (15 bins), NLL, Brier, and accuracy against coverage for --reject-below
    thresholds. --plot FILE.png draws a reliability diagram and a confusion matrix.
    """
    from zsindex.evaluate import evaluate_folder

    options = ClassifyOptions(mode=cast(Mode, mode), rank=rank, beam=beam, within=within).check()
    report = evaluate_folder(state.client(), directory, labelset, options)
    if plot is not None:
        from zsindex.evaluate_plot import write_plot

        write_plot(report, plot)
    report.pop("_samples", None)
    if as_json:
        print_json(report)
        return
    click.echo(
        f"images: {report['n']}   top-1: {report['top1']:.4f}   "
        f"top-5: {report['top5']:.4f}   mean per-class recall: "
        f"{report['mean_per_class_recall']:.4f}"
    )
    click.echo(
        f"ECE: {report['ece']:.4f}   NLL: {report['nll']:.4f}   Brier: {report['brier']:.4f}"
    )
    click.echo("accuracy against coverage (--reject-below P):")
    print_table(
        ["P", "coverage", "accuracy"],
        [
            [f"{c['reject_below']:g}", f"{c['coverage']:.3f}", f"{c['accuracy']:.3f}"]
            for c in report["coverage"]
        ],
    )
    if plot is not None:
        info(f"wrote {plot}")
    if report["errors"]:
        info(
            f"{report['errors']} file(s) could not be classified and are not counted, e.g. "
            + report["error_samples"][0]
        )
    if report["confusions"]:
        click.echo("most frequent confusions:")
        print_table(
            ["true", "predicted", "count"],
            [[c["true"], c["predicted"], c["count"]] for c in report["confusions"]],
        )
