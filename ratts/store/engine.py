"""Engines and transactions that behave under concurrent writers.

SQLite (the default) gets WAL, foreign keys and a busy timeout on every connection, and
SQLAlchemy takes over ``BEGIN`` from the sqlite3 driver so a write transaction starts with
``BEGIN IMMEDIATE``: it waits for the write lock up front instead of failing half-way with
"database is locked". A plain ``postgresql://`` URL uses psycopg 3 (the ``postgres`` extra),
the driver ratts ships with; any other SQLAlchemy URL works unchanged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from ratts.errors import StoreError

BUSY_TIMEOUT_S = 30.0
_WRITE = "ratts_write"
T = TypeVar("T")


def describe(url: str | URL) -> str:
    """The URL as it may be printed (password hidden)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return str(url)


def _sqlite_file(url: URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(db).expanduser()


def _install_sqlite_hooks(engine: Engine, file_backed: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see module docstring)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if file_backed:
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str | URL) -> Engine:
    """An engine for ``url``; creates a SQLite file's folder. Raises StoreError."""
    where = describe(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"invalid database URL {where!r}") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        if parsed.get_backend_name() != "sqlite":
            return create_engine(parsed, pool_pre_ping=True)
        path = _sqlite_file(parsed)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot open database {where}: cannot create {path.parent}: "
                    f"{exc.strerror or exc}"
                ) from None
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S})
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot open database {where}: driver not available ({exc})") from None
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL {where}: {exc}") from None
    _install_sqlite_hooks(engine, file_backed=path is not None)
    return engine


@contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """A short write transaction holding the write lock from its first statement."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextmanager
def begin_read(engine: Engine) -> Iterator[Connection]:
    """A read transaction: one consistent snapshot."""
    with engine.connect() as conn, conn.begin():
        yield conn


def is_locked_error(exc: BaseException) -> bool:
    msg = str(getattr(exc, "orig", exc)).lower()
    return "locked" in msg or "busy" in msg


def retry_locked(fn: Callable[[], T], *, attempts: int = 8) -> T:
    """Run ``fn``, retrying with jittered backoff when the database reports it is locked.

    The busy timeout already waits; this covers what it cannot (e.g. WAL recovery races).
    """
    delay = 0.05
    for attempt in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            if not is_locked_error(exc) or attempt == attempts - 1:
                raise
        time.sleep(delay + random.uniform(0, delay))
        delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")  # pragma: no cover
