"""The ``zsindex`` command: a click group whose sub-commands live one noun per module.

Errors from :mod:`zsindex.errors` become a one-line ``error: ...`` on stderr and exit code 1
(a traceback only with ``--debug``); click's usage errors exit 2.
"""

from __future__ import annotations

import logging
import sys

import click

from zsindex import __version__
from zsindex.cli.context import CliState
from zsindex.errors import ZsindexError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zsindex")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """zsindex: zero-shot image classification with CLIP label sets stored in SQL.

    Settings come from ZSINDEX_* environment variables (ZSINDEX_HOME, ZSINDEX_DATABASE_URL,
    ZSINDEX_MODEL, ZSINDEX_DEVICE, ...); see the README.
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = CliState(debug=debug)


def _register_commands() -> None:
    from zsindex.cli import classify, db, demo, labels, serve

    cli.add_command(db.db)
    cli.add_command(labels.labels)
    cli.add_command(classify.classify)
    cli.add_command(classify.eval_command)
    cli.add_command(serve.serve)
    cli.add_command(demo.demo)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="zsindex", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except ZsindexError as exc:
        if debug:
            raise
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
