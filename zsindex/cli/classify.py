"""``zsindex classify`` and ``zsindex eval``: batch classification of image files."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import click

from zsindex.cli.context import CliState
from zsindex.cli.output import info, print_json, print_table
from zsindex.errors import InvalidInputError
from zsindex.options import MODES, ClassifyOptions, Mode, OnError
from zsindex.results import ClassificationResult

CHUNK = 256
"""Files per backend call: the pipeline decodes the next forward's images while the model runs
within one call, so a call spans several forward batches; results print call by call."""


def iter_image_paths(paths: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """(display name, path) for each file, walking folders recursively in sorted order.

    A folder's files are named as the folder was given joined with the file's path inside it.
    """
    for given in paths:
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


class _Writer:
    """Streams results as a JSON array, CSV rows or a table, one batch at a time."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.count = 0
        self.csv: Any = None
        self.started = False

    def _start(self) -> None:
        # Nothing is printed before the first result: a run that fails at once prints no
        # half-open JSON array or lone CSV header.
        if self.started:
            return
        self.started = True
        if self.fmt == "csv":
            self.csv = csv.writer(sys.stdout)
            self.csv.writerow(
                ["image", "labelset", "version", "rank", "label", "probability", "score", "path"]
            )
        elif self.fmt == "json":
            click.echo("[", nl=False)

    def write(self, result: ClassificationResult) -> None:
        self._start()
        if self.fmt == "json":
            click.echo(
                ("," if self.count else "")
                + "\n"
                + json.dumps(result.to_dict(), ensure_ascii=False),
                nl=False,
            )
        elif self.csv is not None:
            path = " > ".join(s.label for s in result.path or [])
            for i, p in enumerate(result.predictions, 1):
                self.csv.writerow(
                    [
                        result.image,
                        result.labelset,
                        result.version,
                        i,
                        p.label,
                        f"{p.probability:.6f}",
                        f"{p.score:.6f}",
                        path,
                    ]
                )
        else:
            header = f"{result.image}  ({result.labelset} v{result.version})"
            click.echo(header)
            if result.path:
                click.echo(
                    "  path: " + " > ".join(f"{s.label} ({s.probability:.2f})" for s in result.path)
                )
            for p in result.predictions:
                bar = "#" * round(p.probability * 20)
                click.echo(f"  {p.probability:6.1%}  {bar:<20}  {p.label}")
        self.count += 1

    def close(self) -> None:
        self._start()
        if self.fmt == "json":
            click.echo("\n]" if self.count else "]")


@click.command("classify")
@click.argument("paths", nargs=-1, required=True)
@click.option("--labels", "labelset", required=True, help="Label set to classify against.")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="flat",
    show_default=True,
    help="flat (leaves), beam (coarse-then-fine), marginal or chils (trees).",
)
@click.option("--rank", help="Stop at this named rank or depth (trees).")
@click.option("--beam", type=click.IntRange(1, 100000), help="Nodes kept per level (beam mode).")
@click.option("--within", help="Restrict to the subtree of this node (name or a/b/c path).")
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    help="Stop at the deepest node with at least this probability (trees).",
)
@click.option(
    "--sigmoid", is_flag=True, help="Multi-label sigmoid probabilities instead of softmax."
)
@click.option(
    "--fast-decode/--exact-decode",
    default=None,
    help="Decode JPEGs at a reduced scale (faster, not bit-exact; default: ZSINDEX_FAST_DECODE, "
    "off).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV rows.")
@click.pass_obj
def classify(
    state: CliState,
    paths: tuple[str, ...],
    labelset: str,
    k: int,
    mode: str,
    rank: str | None,
    beam: int | None,
    within: str | None,
    min_confidence: float | None,
    sigmoid: bool,
    fast_decode: bool | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Classify image files or folders (recursive) against label set LABELS."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    options = ClassifyOptions(
        k=k,
        mode=cast(Mode, mode),
        rank=rank,
        beam=beam,
        within=within,
        min_confidence=min_confidence,
        activation="sigmoid" if sigmoid else "softmax",
        fast_decode=fast_decode,
    ).check()
    backend = state.client().backend
    items = list(iter_image_paths(paths))
    if not items:
        raise InvalidInputError("no image files found in " + ", ".join(paths))
    # One file: its error is the command's error; several: each is reported and the run goes on.
    on_error: OnError = "raise" if len(items) == 1 else "report"
    writer = _Writer("json" if as_json else "csv" if as_csv else "table")
    failed = 0
    show_progress = len(items) > CHUNK and sys.stderr.isatty()
    with click.progressbar(
        length=len(items), label="classifying", file=sys.stderr, hidden=not show_progress
    ) as bar:
        for start in range(0, len(items), CHUNK):
            batch = items[start : start + CHUNK]
            for result in backend.classify(
                labelset,
                images=[path for _, path in batch],
                image_names=[name for name, _ in batch],
                options=options,
                on_error=on_error,
            ):
                if result.error is not None:
                    failed += 1
                    info(f"skipped {result.error}")
                else:
                    writer.write(result)
            bar.update(len(batch))
    writer.close()
    if failed:
        info(f"{failed} of {len(items)} image(s) could not be classified")
        raise SystemExit(1)


@click.command("eval")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--labels", "labelset", required=True, help="Label set whose names match the folders."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def eval_command(state: CliState, directory: Path, labelset: str, as_json: bool) -> None:
    """Zero-shot accuracy on DIRECTORY in ImageFolder layout (one sub-folder per class)."""
    from zsindex.evaluate import evaluate_folder

    report = evaluate_folder(state.client(), directory, labelset)
    if as_json:
        print_json(report)
        return
    click.echo(
        f"images: {report['n']}   top-1: {report['top1']:.4f}   "
        f"top-5: {report['top5']:.4f}   mean per-class recall: "
        f"{report['mean_per_class_recall']:.4f}"
    )
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
