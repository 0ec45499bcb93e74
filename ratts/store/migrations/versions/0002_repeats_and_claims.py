"""Repeat index in the run key, and row claims for sweep workers sharing one database.

``runs.repeat`` lets one (problem, config, budget) be run several times on purpose (repeat
0 is every run logged so far); the unique key becomes (problem, config, budget, repeat).
``run_claims`` is the work list of distributed sweeps: one row per planned run, with the
worker holding it and until when (a lease, epoch seconds), claimed with
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_OLD_KEY = ("problem_key", "config_key", "budget")
_NEW_KEY = (*_OLD_KEY, "repeat")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("repeat", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_constraint("uq_runs_problem_config_budget", type_="unique")
        batch.create_unique_constraint("uq_runs_problem_config_budget_repeat", list(_NEW_KEY))

    op.create_table(
        "run_claims",
        sa.Column("problem_key", sa.String(32), nullable=False),
        sa.Column("config_key", sa.String(32), nullable=False),
        sa.Column("budget", sa.String(128), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*_NEW_KEY, name="pk_run_claims"),
    )
    op.create_index("ix_run_claims_lease_until", "run_claims", ["lease_until"])


def downgrade() -> None:
    op.drop_index("ix_run_claims_lease_until", table_name="run_claims")
    op.drop_table("run_claims")
    op.execute(sa.text("DELETE FROM runs WHERE repeat <> 0"))  # the old key cannot hold them
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_problem_config_budget_repeat", type_="unique")
        batch.create_unique_constraint("uq_runs_problem_config_budget", list(_OLD_KEY))
        batch.drop_column("repeat")
