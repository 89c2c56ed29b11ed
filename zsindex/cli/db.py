"""``zsindex db``: schema migrations and the invariant checker."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from zsindex.cli.context import CliState
from zsindex.cli.output import info, print_json
from zsindex.errors import InvalidInputError

if TYPE_CHECKING:
    from zsindex.store.repository import Store


def _open(state: CliState, *, create: bool = False) -> Store:
    """The store as it is (only ``db upgrade`` creates a missing SQLite file)."""
    # Imported here: `zsindex --help` must not pay for SQLAlchemy and Alembic.
    from zsindex.store.engine import require_existing_sqlite
    from zsindex.store.repository import Store

    url = state.settings.resolved_database_url
    if not create:
        require_existing_sqlite(url)
    return Store(url, check_schema=False)


@contextlib.contextmanager
def _revision_errors(what: str) -> Iterator[None]:
    """Alembic's refusals (an unknown revision, a target above the current one) as one line."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        reason = " ".join(str(exc).split())
        raise InvalidInputError(
            f"{what}: {reason} (give `base` or a revision id; `zsindex db current` shows the "
            "schema's revision)"
        ) from None


@click.group()
def db() -> None:
    """Manage the database schema (Alembic migrations) and check its invariants."""


@db.command()
@click.pass_obj
def upgrade(state: CliState) -> None:
    """Upgrade the schema to the latest revision (creates it in an empty database)."""
    from zsindex.store import migrate

    store = _open(state, create=True)
    with _revision_errors("cannot upgrade"):
        migrate.upgrade(store.engine)
    info(f"schema at {migrate.current_revision(store.engine)} (head)")


@db.command()
@click.argument("revision")
@click.pass_obj
def downgrade(state: CliState, revision: str) -> None:
    """Downgrade the schema to REVISION (`base` removes every table and all data)."""
    from zsindex.store import migrate

    store = _open(state)
    with _revision_errors(f"cannot downgrade to {revision!r}"):
        migrate.downgrade(store.engine, revision)
    info(f"schema at {migrate.current_revision(store.engine) or 'base'}")


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def current(state: CliState, as_json: bool) -> None:
    """Show the schema revision of the database and the head revision of this zsindex."""
    from zsindex.store import migrate

    store = _open(state)
    rev = migrate.current_revision(store.engine)
    head = migrate.head_revision()
    if as_json:
        print_json({"current": rev, "head": head, "up_to_date": rev == head})
    else:
        click.echo(f"{rev or 'none'}{' (head)' if rev == head else f' (head is {head})'}")


@db.command()
@click.option("--strict", is_flag=True, help="Also verify embedding norms, checksums and caches.")
@click.option("--repair", is_flag=True, help="Remove unfinished versions left by killed writers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def check(state: CliState, strict: bool, repair: bool, as_json: bool) -> None:
    """Check the store's invariants; exit 1 when one fails."""
    from zsindex.store import check as checker

    store = _open(state)
    if repair:
        removed = checker.repair(store)
        info(f"removed {removed} unfinished version(s)")
    report = checker.check_store(store, strict=strict)
    if strict and report.ok:
        from zsindex.catalog.caches import check_caches

        report.problems.extend(check_caches(state.settings, store))
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "problems": report.problems,
                "notes": report.notes,
                "labelsets": report.labelsets_checked,
            }
        )
    else:
        for note in report.notes:
            info(f"note: {note}")
        for problem in report.problems:
            click.echo(f"FAIL {problem}")
        if report.ok:
            click.echo(f"ok: {report.labelsets_checked} label set(s) checked")
    if not report.ok:
        raise SystemExit(1)
