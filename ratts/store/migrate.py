"""Alembic, driven from code: the schema revision of a database, upgrade and downgrade.

Every operation runs on one connection inside one write transaction (``BEGIN IMMEDIATE`` on
SQLite, an advisory lock on PostgreSQL), so two processes that open a fresh database at the
same moment serialise: the second finds the schema already at head and does nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from ratts.errors import StoreError
from ratts.store.engine import begin_write

if TYPE_CHECKING:
    # Alembic (and Mako and Pygments under it) costs a large share of a command's start-up;
    # it is imported only to read or change a schema that is not already at head.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_ID = 0x7261_7474  # "ratt": serialises concurrent migrations on PostgreSQL


_REVISION = re.compile(r"""^revision(?:\s*:[^=]*)?=\s*["']([^"']+)["']""", re.M)
_DOWN = re.compile(r"""^down_revision(?:\s*:[^=]*)?=\s*(?:["']([^"']*)["']|None)""", re.M)


@cache
def shipped_head() -> str | None:
    """The head revision as the migration files' ``revision`` / ``down_revision`` lines
    say, without Alembic; None unless they read as one linear chain (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        found = _REVISION.search(source)
        if found is None:
            continue  # __init__.py
        down = _DOWN.search(source)
        if down is None:
            return None
        revisions.add(found.group(1))
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    return next(iter(heads)) if len(heads) == 1 else None


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The newest revision this code knows."""
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise StoreError("no migrations shipped with ratts")
    return head


def known_revisions() -> set[str]:
    return {s.revision for s in _scripts().walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    """The database's revision, or None for a database ratts has never touched."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})


@contextmanager
def _explained(where: str) -> Iterator[None]:
    """Alembic's own errors (e.g. an unknown revision) as one-line StoreErrors."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        raise StoreError(f"database {where}: {exc}") from None


def check_not_newer(revision: str | None, where: str) -> None:
    """Refuse a database migrated by a newer ratts than this one."""
    if revision is not None and revision not in known_revisions():
        raise StoreError(
            f"database {where} is at schema revision {revision!r}, newer than this ratts "
            f"(head {head_revision()!r}); upgrade ratts to use it"
        )


def upgrade(engine: Engine, where: str, revision: str = "head") -> str | None:
    """Upgrade to ``revision`` (default head); returns the revision reached."""
    with begin_write(engine) as conn:
        _lock(conn)
        current = current_revision(conn)
        check_not_newer(current, where)
        target = head_revision() if revision == "head" else revision
        if current != target:
            from alembic import command

            with _explained(where):
                command.upgrade(_config(conn), revision)
        return current_revision(conn)


def downgrade(engine: Engine, where: str, revision: str) -> str | None:
    """Downgrade to ``revision`` ("base" drops every table); returns the revision reached."""
    with begin_write(engine) as conn:
        _lock(conn)
        check_not_newer(current_revision(conn), where)
        from alembic import command

        with _explained(where):
            command.downgrade(_config(conn), revision)
        return current_revision(conn)


def ensure_current(engine: Engine, where: str) -> None:
    """First use: upgrade a fresh or older database; refuse a newer one. Cheap when current:
    a database whose one stored revision is the shipped head is checked with plain SQL."""
    head = shipped_head()
    if head is not None:
        with engine.connect() as conn:
            if inspect(conn).has_table("alembic_version"):
                stored = conn.execute(text("SELECT version_num FROM alembic_version")).all()
                if [row[0] for row in stored] == [head]:
                    return
    with engine.connect() as conn:
        current = current_revision(conn)
    check_not_newer(current, where)
    if current != head_revision():
        upgrade(engine, where)
