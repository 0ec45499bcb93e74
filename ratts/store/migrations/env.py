"""Alembic environment: runs on the connection that ``ratts.store.migrate`` hands in.

There is no alembic.ini and no URL here; the caller owns the connection and its transaction
(so concurrent first-use upgrades serialise on the database's own lock). Offline mode
(``sql=True``) renders the DDL for the dialect in ``sqlalchemy.url``, e.g. to review it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from ratts.store.models import metadata


def _run_offline() -> None:
    """Emit the SQL for a dialect (``sqlalchemy.url`` names it) without connecting."""
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    if context.is_offline_mode():
        _run_offline()
        return
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("ratts migrations need a connection in config.attributes")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
