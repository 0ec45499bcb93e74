"""Initial schema: problems, configs, runs, router_models.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "problems",
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("dataset", sa.String(255), nullable=True),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_problems"),
    )
    op.create_index("ix_problems_text_hash", "problems", ["text_hash"])

    op.create_table(
        "configs",
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("policy", sa.String(255), nullable=False),
        sa.Column("prm", sa.String(255), nullable=True),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("label", sa.String(512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_configs"),
    )

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("problem_key", sa.String(32), nullable=False),
        sa.Column("config_key", sa.String(32), nullable=False),
        sa.Column("budget", sa.String(128), nullable=False),
        sa.Column("features", sa.JSON(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("final_reward", sa.Float(), nullable=True),
        sa.Column("policy_prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("policy_completion_tokens", sa.Integer(), nullable=False),
        sa.Column("prm_tokens", sa.Integer(), nullable=False),
        sa.Column("policy_requests", sa.Integer(), nullable=False),
        sa.Column("prm_requests", sa.Integer(), nullable=False),
        sa.Column("flops", sa.Float(), nullable=False),
        sa.Column("dollars", sa.Float(), nullable=False),
        sa.Column("request_seconds", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("router_version", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(
            ["problem_key"],
            ["problems.key"],
            name="fk_runs_problem_key_problems",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["config_key"], ["configs.key"], name="fk_runs_config_key_configs"),
        sa.UniqueConstraint(
            "problem_key", "config_key", "budget", name="uq_runs_problem_config_budget"
        ),
    )
    op.create_index("ix_runs_config_key", "runs", ["config_key"])
    op.create_index("ix_runs_created_at", "runs", ["created_at"])

    op.create_table(
        "router_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows_used", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_router_models"),
        sa.UniqueConstraint("version", name="uq_router_models_version"),
    )


def downgrade() -> None:
    op.drop_table("router_models")
    op.drop_index("ix_runs_created_at", table_name="runs")
    op.drop_index("ix_runs_config_key", table_name="runs")
    op.drop_table("runs")
    op.drop_table("configs")
    op.drop_index("ix_problems_text_hash", table_name="problems")
    op.drop_table("problems")
