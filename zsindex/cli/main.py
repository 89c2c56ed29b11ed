"""The ``zsindex`` command: a click group whose sub-commands live one noun per module.

Errors from :mod:`zsindex.errors` become a one-line ``error: ...`` on stderr and exit code 1
(a traceback only with ``--debug``, which may stand anywhere on the command line); click's usage
errors exit 2; ``classify`` exits 3 when some images could not be classified.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading

import click

from zsindex import __version__
from zsindex.cli.context import CliState
from zsindex.errors import ZsindexError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zsindex")
@click.option(
    "--debug", is_flag=True, help="Show tracebacks and debug logs (also after the sub-command)."
)
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
    from zsindex.cli import batch, calibrate, classify, db, demo, labels, serve

    cli.add_command(db.db)
    cli.add_command(labels.labels)
    cli.add_command(classify.classify)
    cli.add_command(classify.eval_command)
    cli.add_command(batch.batch)
    cli.add_command(serve.serve)
    cli.add_command(demo.demo)
    cli.add_command(calibrate.calibrate)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``argv`` given: run in this process, e.g. from tests)."""
    state = CliState()
    code = _run(argv, state)
    if argv is None:
        _exit_process(state, code)
    state.close()
    sys.exit(code)


def hoist_debug(args: list[str]) -> list[str]:
    """``args`` with ``--debug`` moved before the sub-command, so ``zsindex classify ... --debug``
    works as ``zsindex --debug classify ...`` (arguments after ``--`` are left alone)."""
    end = args.index("--") if "--" in args else len(args)
    head, tail = args[:end], args[end:]
    if "--debug" not in head:
        return args
    return ["--debug", *(a for a in head if a != "--debug"), *tail]


def _run(argv: list[str] | None, state: CliState) -> int:
    args = hoist_debug(list(argv if argv is not None else sys.argv[1:]))
    debug = args[:1] == ["--debug"]
    try:
        # Not standalone: click returns ``ctx.exit(n)``'s code instead of exiting.
        rv = cli.main(args=args, prog_name="zsindex", standalone_mode=False, obj=state)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except ZsindexError as exc:
        if debug:
            raise
        click.echo(f"error: {exc.message}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except SystemExit as exc:  # a command's own sys.exit(n)
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        click.echo(str(exc.code), err=True)
        return 1
    return rv if isinstance(rv, int) else 0


def _exit_process(state: CliState, code: int) -> None:
    """End the command's process without the interpreter's module teardown.

    Finalising the modules torch and open_clip bring (torch._dynamo, torchvision, timm) takes
    ~1.5 s after every command that loaded a model, and there is nothing in them to save. So the
    store is closed (SQLite checkpoints its WAL), ``atexit`` handlers run (logging,
    ``weakref.finalize`` clean-ups, plugins' own), output is flushed, and the process exits. A
    command that left a non-daemon thread running exits the ordinary way (the interpreter joins
    it first).
    """
    try:
        state.close()
    except Exception as exc:
        click.echo(f"error: closing the store failed: {' '.join(str(exc).split())}", err=True)
        code = code or 1
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # the interpreter runs these at exit; os._exit does not
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # ``zsindex ... | head``: nobody left to read
            pass
        except OSError as exc:  # a full disk or an I/O error: the output is incomplete
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"error: cannot write the output: {exc}\n")
                sys.stderr.flush()
            code = code or 1
    os._exit(code)
