"""``ratts db upgrade | current | downgrade``: the run-log schema, by hand.

Ordinary commands upgrade a fresh database on first use; these are for inspecting a database
and for moving it between revisions explicitly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from ratts.errors import ConfigError, StoreError
from ratts.settings import load_settings
from ratts.store import make_engine, migrate
from ratts.store.engine import describe

app = typer.Typer(no_args_is_help=True)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", "--db", help="database URL (default: settings' db_url)"),
]
SettingsOption = Annotated[
    Path | None,
    typer.Option("--settings", help="ratts.toml (default: $RATTS_CONFIG or ./ratts.toml)"),
]


def resolve_db_url(url: str | None, settings_path: Path | None) -> str:
    """The explicit URL, else the settings' ``db_url`` (``RATTS_DB_URL`` / ratts.toml)."""
    if url:
        return url
    return load_settings(settings_path).db_url


def _one_line(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


@app.callback()
def _group() -> None:
    """The run-log database (schema revisions)."""


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    url: UrlOption = None,
    settings: SettingsOption = None,
) -> None:
    """Upgrade the database schema (creates it when empty)."""
    target = resolve_db_url(url, settings)
    engine = make_engine(target)
    try:
        reached = migrate.upgrade(engine, describe(target), revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot upgrade {describe(target)}: {_one_line(exc)}") from None
    finally:
        engine.dispose()
    typer.echo(f"{describe(target)}: at revision {reached}")


@app.command()
def current(url: UrlOption = None, settings: SettingsOption = None) -> None:
    """Print the database's schema revision and this ratts's head revision."""
    target = resolve_db_url(url, settings)
    engine = make_engine(target)
    try:
        with engine.connect() as conn:
            revision = migrate.current_revision(conn)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open database {describe(target)}: {_one_line(exc)}") from None
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if revision is None:
        state = "empty (not yet created)"
    elif revision == head:
        state = "up to date"
    elif revision in migrate.known_revisions():
        state = "behind; run `ratts db upgrade`"
    else:
        state = "NEWER than this ratts; upgrade ratts"
    typer.echo(f"{describe(target)}: revision {revision or 'none'} (head {head}): {state}")


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="target revision ('base' drops every table)")],
    url: UrlOption = None,
    settings: SettingsOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="do not ask; data in dropped tables is lost")
    ] = False,
) -> None:
    """Downgrade the database schema to REVISION (data in dropped tables is lost)."""
    target = resolve_db_url(url, settings)
    where = describe(target)
    if not yes:  # destructive: ask on a terminal, refuse elsewhere
        question = f"downgrade {where} to {revision}? tables and rows above it are deleted"
        if not sys.stdin.isatty():
            raise ConfigError(f"{question.split('?')[0]} deletes data: run again with --yes")
        if not typer.confirm(question, default=False):
            raise typer.Exit(1)
    engine = make_engine(target)
    try:
        reached = migrate.downgrade(engine, where, revision)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot downgrade {describe(target)}: {_one_line(exc)}") from None
    finally:
        engine.dispose()
    typer.echo(f"{describe(target)}: at revision {reached or 'base (empty)'}")
