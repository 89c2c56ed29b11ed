"""``zsindex batch``: classify an archive into Parquet, locally or on a Ray cluster."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from zsindex.cli.classify_flags import classify_options, fast_decode_option
from zsindex.cli.context import CliState
from zsindex.cli.output import info, print_json
from zsindex.options import ClassifyOptions

SOME_FAILED = 3
"""Exit code of a job in which some images could not be classified (each has an error row)."""


class TerminalProgress:
    """One self-rewriting line on a terminal: images done, images/s, ETA."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.first: tuple[int, float] | None = None
        self.last_print = 0.0

    def __call__(self, done: int, total: int, seconds: float) -> None:
        if not self.enabled:
            return
        if self.first is None:
            self.first = (done, seconds)
            return
        now = time.monotonic()
        if now - self.last_print < 0.5 and done < total:
            return
        self.last_print = now
        base_done, base_s = self.first
        rate = (done - base_done) / max(seconds - base_s, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        eta_text = _duration(eta) if eta != float("inf") else "?"
        sys.stderr.write(
            f"\r{done}/{total} images  {rate:.1f} images/s  ETA {eta_text}   "
            + ("\n" if done >= total else "")
        )
        sys.stderr.flush()


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@click.command("batch")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--labels",
    "labels",
    multiple=True,
    required=True,
    metavar="NAME[@N][:OPTS]",
    help="Label set (repeatable), pinned at start; OPTS override the job's options for it, "
    "e.g. 'tree:mode=beam,rank=genus,k=3'.",
)
@click.option(
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: predictions/ (and embeddings/) Parquet parts + _manifest.json.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process; ray: Ray Data (pip install 'zsindex[ray]').",
)
@click.option("--ray-address", help="Ray cluster address (default: RAY_ADDRESS, else local).")
@click.option("--workers", type=click.IntRange(1), help="Ray actors that encode and classify.")
@click.option(
    "--num-gpus-per-worker", type=click.FloatRange(0), default=0.0, help="GPUs per Ray actor."
)
@click.option(
    "--num-cpus-per-worker",
    type=click.FloatRange(0.01),
    default=1.0,
    show_default=True,
    help="CPUs per Ray actor.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Images per Ray actor call.",
)
@click.option(
    "--part-size",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Inputs per committed part (the unit a rerun resumes from).",
)
@click.option("--save-embeddings", is_flag=True, help="Also write image embeddings.")
@click.option(
    "--embeddings",
    "from_embeddings",
    is_flag=True,
    help="INPUTS are stored embeddings (Parquet from --save-embeddings, or .npy), not images.",
)
@click.option("--overwrite", is_flag=True, help="Replace another job's output in --output.")
@classify_options
@fast_decode_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def batch(
    state: CliState,
    inputs: tuple[str, ...],
    labels: tuple[str, ...],
    output: Path,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    num_gpus_per_worker: float,
    num_cpus_per_worker: float,
    batch_size: int,
    part_size: int,
    save_embeddings: bool,
    from_embeddings: bool,
    overwrite: bool,
    options: ClassifyOptions,
    fast_decode: bool | None,
    as_json: bool,
) -> None:
    """Classify INPUTS (files, folders, globs, CSV/Parquet lists of paths, WebDataset .tar
    shards) against every --labels into Parquet under --output.

    One row per (image, label set), naming the version pinned at start. Parts are committed
    atomically: a rerun of the same job skips committed parts; a folder holding another job's
    parts (other inputs, label sets, versions or options) is refused unless --overwrite.

    Exit codes: 0 every image classified; 1 a user or store error; 2 a usage error; 3 some
    images could not be classified (each has an error row).
    """
    from zsindex.batch.job import RayOptions, run

    summary = run(
        list(inputs),
        list(labels),
        output,
        engine="ray" if engine == "ray" else "local",
        options=options,
        save_embeddings=save_embeddings,
        embeddings=from_embeddings,
        overwrite=overwrite,
        part_size=part_size,
        fast_decode=fast_decode,
        ray=RayOptions(
            address=ray_address,
            workers=workers,
            num_gpus_per_worker=num_gpus_per_worker,
            num_cpus_per_worker=num_cpus_per_worker,
            batch_size=batch_size,
        ),
        settings=state.settings,
        on_progress=TerminalProgress(),
    )
    if as_json:
        print_json(summary.to_dict())
    else:
        info(
            f"{summary.images} images × {len(summary.labelsets)} label set(s) "
            f"({', '.join(summary.labelsets)}) → {summary.rows} rows in {summary.output}; "
            f"{summary.errors} image(s) with errors; {summary.parts - summary.parts_skipped} "
            f"part(s) run, {summary.parts_skipped} already committed; "
            f"{summary.images_per_s:.1f} images/s"
        )
    if summary.errors:
        raise SystemExit(SOME_FAILED)
