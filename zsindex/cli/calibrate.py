"""``zsindex calibrate``: fit a temperature on a labelled ImageFolder, stored in a new version."""

from __future__ import annotations

from pathlib import Path

import click

from zsindex.cli.context import CliState
from zsindex.cli.output import info, print_json


@click.command("calibrate")
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--target-precision",
    type=click.FloatRange(0, 1, min_open=True),
    help="Also suggest the --reject-below P whose kept images reach this precision.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
@click.pass_obj
def calibrate(
    state: CliState, name: str, directory: Path, target_precision: float | None, as_json: bool
) -> None:
    """Fit a temperature T on DIRECTORY (ImageFolder: one folder per leaf label, at least 10
    images in 2 folders) by minimising the negative log-likelihood, and store it with a new
    version of NAME: probabilities become softmax(logit_scale / T * cosine); the ranking never
    changes. Prints T, NLL and ECE before and after, and --reject-below values for target
    precisions (0.9, 0.95, 0.99 and --target-precision). Calibrate on images that are not
    your evaluation set."""
    from zsindex.cli.examples import read_examples

    examples = read_examples(directory)
    ls = state.client().calibrate(name, examples, target_precision=target_precision)
    if as_json:
        print_json(ls.to_dict())
        return
    fit = ls.provenance["calibration"]
    click.echo(
        f"{ls.name} version {ls.version}: temperature {fit['temperature']:.4f} on {fit['n']} "
        f"images (top-1 {fit['accuracy']:.4f})"
    )
    click.echo(f"NLL {fit['nll_before']:.4f} -> {fit['nll_after']:.4f}")
    click.echo(f"ECE {fit['ece_before']:.4f} -> {fit['ece_after']:.4f}")
    for target, p in fit["suggested_reject_below"].items():
        shown = "no threshold reaches it" if p is None else f"--reject-below {p:.4f}"
        click.echo(f"precision {target}: {shown}")
    info("the suggestions are measured on the calibration images themselves")
