"""The run-log schema: problems, configs, one row per run, sweep claims, router versions.

Migrations in ``ratts/store/migrations`` create exactly these tables; a test compares the two.
Only portable column types are used, so any SQLAlchemy backend works unchanged. Plain Core
tables, not ORM classes: nothing maps rows to objects, and ``sqlalchemy.orm`` costs every
command that opens the store a tenth of a second to import.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _at(name: str) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=False)


# A problem as solved: ``key`` hashes (dataset, source id, question).
problems = Table(
    "problems",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("dataset", String(255)),
    Column("source_id", Text, nullable=False),
    Column("text_hash", String(64), nullable=False, index=True),
    Column("question", Text, nullable=False),
    Column("answer", Text),
    Column("meta", JSON, nullable=False),
    _at("created_at"),
)

# A (policy, PRM, strategy, params) record keyed by ``RunConfig.key()``.
configs = Table(
    "configs",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("policy", String(255), nullable=False),
    Column("prm", String(255)),
    Column("strategy", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("label", String(512), nullable=False),
    _at("created_at"),
)

# One run of a config on a problem under a budget; unique per (that triple, repeat).
runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "problem_key",
        String(32),
        ForeignKey("problems.key", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("config_key", String(32), ForeignKey("configs.key"), nullable=False),
    Column("budget", String(128), nullable=False),
    Column("repeat", Integer, nullable=False, server_default="0"),
    Column("features", JSON),
    Column("answer", Text),
    Column("correct", Boolean),
    Column("final_reward", Float),
    Column("policy_prompt_tokens", Integer, nullable=False),
    Column("policy_completion_tokens", Integer, nullable=False),
    # prompt tokens served from the policy server's prefix cache (part of the prompt tokens)
    Column("policy_cached_tokens", Integer, nullable=False, server_default="0"),
    Column("prm_tokens", Integer, nullable=False),
    Column("policy_requests", Integer, nullable=False),
    Column("prm_requests", Integer, nullable=False),
    Column("flops", Float, nullable=False),
    Column("dollars", Float, nullable=False),
    Column("request_seconds", Float, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("error", Text),
    Column("router_version", String(64)),
    _at("created_at"),
    UniqueConstraint(
        "problem_key",
        "config_key",
        "budget",
        "repeat",
        name="uq_runs_problem_config_budget_repeat",
    ),
    Index("ix_runs_config_key", "config_key"),
    Index("ix_runs_created_at", "created_at"),
)

# A planned run of a distributed sweep, and the worker leasing it (if any). ``lease_until``
# is epoch seconds (UTC) from the claiming worker's clock; a claim whose lease has passed is
# free again, so a dead worker's runs return to the pool.
run_claims = Table(
    "run_claims",
    metadata,
    Column("problem_key", String(32), primary_key=True),
    Column("config_key", String(32), primary_key=True),
    Column("budget", String(128), primary_key=True),
    Column("repeat", Integer, primary_key=True, autoincrement=False),
    Column("worker", String(255)),
    Column("lease_until", Float),
    Column("attempts", Integer, nullable=False),
    _at("created_at"),
    Index("ix_run_claims_lease_until", "lease_until"),
)

# A trained router: where its artifact lives and how well it did.
router_models = Table(
    "router_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False, unique=True),
    _at("trained_at"),
    Column("rows_used", Integer, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("artifact_path", Text, nullable=False),
    Column("is_current", Boolean, nullable=False),
)
