"""The ``zsindex`` command: a click group whose sub-commands live one noun per module.

Errors from :mod:`zsindex.errors` become a one-line ``error: ...`` on stderr and exit code 1
(a traceback only with ``--debug``); click's usage errors exit 2.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
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
    ctx.ensure_object(CliState).debug = debug


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
    """Console-script entry point (``argv`` given: run in this process, e.g. from tests)."""
    state = CliState()
    code = _run(argv, state)
    if argv is None:
        _exit_process(state, code)
    state.close()
    sys.exit(code)


def _run(argv: list[str] | None, state: CliState) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="zsindex", standalone_mode=False, obj=state)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except ZsindexError as exc:
        if debug:
            raise
        click.echo(f"error: {exc.message}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


def _exit_process(state: CliState, code: int) -> None:
    """End the command's process without the interpreter's module teardown.

    Finalising the modules torch and open_clip bring (torch._dynamo, torchvision, timm) takes
    ~1.5 s after every command that loaded a model, and there is nothing in them to save. So the
    store is closed (SQLite checkpoints its WAL), output flushed, ``atexit`` handlers run
    (logging, ``weakref.finalize`` clean-ups, plugins' own), and the process exits.
    """
    try:
        state.close()
    finally:
        atexit._run_exitfuncs()  # what the interpreter would run first at exit
        for stream in (sys.stdout, sys.stderr):
            # A closed pipe (``zsindex ... | head``): nothing left to write to.
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
