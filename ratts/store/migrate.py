"""Alembic, driven from code: the schema revision of a database, upgrade and downgrade.

Every operation runs on one connection inside one write transaction (``BEGIN IMMEDIATE`` on
SQLite, an advisory lock on PostgreSQL), so two processes that open a fresh database at the
same moment serialise: the second finds the schema already at head and does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from ratts.errors import StoreError
from ratts.store.engine import begin_write

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_ID = 0x7261_7474  # "ratt": serialises concurrent migrations on PostgreSQL


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def _scripts() -> ScriptDirectory:
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
    return MigrationContext.configure(connection).get_current_revision()


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})


@contextmanager
def _explained(where: str) -> Iterator[None]:
    """Alembic's own errors (e.g. an unknown revision) as one-line StoreErrors."""
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
            with _explained(where):
                command.upgrade(_config(conn), revision)
        return current_revision(conn)


def downgrade(engine: Engine, where: str, revision: str) -> str | None:
    """Downgrade to ``revision`` ("base" drops every table); returns the revision reached."""
    with begin_write(engine) as conn:
        _lock(conn)
        check_not_newer(current_revision(conn), where)
        with _explained(where):
            command.downgrade(_config(conn), revision)
        return current_revision(conn)


def ensure_current(engine: Engine, where: str) -> None:
    """First use: upgrade a fresh or older database; refuse a newer one. Cheap when current."""
    with engine.connect() as conn:
        current = current_revision(conn)
    check_not_newer(current, where)
    if current != head_revision():
        upgrade(engine, where)
