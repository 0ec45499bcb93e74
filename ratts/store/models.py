"""The run-log schema: problems, configs, one row per run, sweep claims, router versions.

Migrations in ``ratts/store/migrations`` create exactly these tables; a test compares the two.
Only portable column types are used, so any SQLAlchemy backend works unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ProblemRow(Base):
    """A problem as solved: ``key`` hashes (dataset, source id, question)."""

    __tablename__ = "problems"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    dataset: Mapped[str | None] = mapped_column(String(255))
    source_id: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64), index=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConfigRow(Base):
    """A (policy, PRM, strategy, params) record keyed by ``RunConfig.key()``."""

    __tablename__ = "configs"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    policy: Mapped[str] = mapped_column(String(255))
    prm: Mapped[str | None] = mapped_column(String(255))
    strategy: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunRow(Base):
    """One run of a config on a problem under a budget; unique per (that triple, repeat)."""

    __tablename__ = "runs"
    __table_args__ = (
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

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    problem_key: Mapped[str] = mapped_column(
        String(32), ForeignKey("problems.key", ondelete="CASCADE")
    )
    config_key: Mapped[str] = mapped_column(String(32), ForeignKey("configs.key"))
    budget: Mapped[str] = mapped_column(String(128))
    repeat: Mapped[int] = mapped_column(Integer, server_default="0")
    features: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    answer: Mapped[str | None] = mapped_column(Text)
    correct: Mapped[bool | None] = mapped_column(Boolean)
    final_reward: Mapped[float | None] = mapped_column(Float)
    policy_prompt_tokens: Mapped[int] = mapped_column(Integer)
    policy_completion_tokens: Mapped[int] = mapped_column(Integer)
    # prompt tokens served from the policy server's prefix cache (part of the prompt tokens)
    policy_cached_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    prm_tokens: Mapped[int] = mapped_column(Integer)
    policy_requests: Mapped[int] = mapped_column(Integer)
    prm_requests: Mapped[int] = mapped_column(Integer)
    flops: Mapped[float] = mapped_column(Float)
    dollars: Mapped[float] = mapped_column(Float)
    request_seconds: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    router_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunClaimRow(Base):
    """A planned run of a distributed sweep, and the worker leasing it (if any).

    ``lease_until`` is epoch seconds (UTC) from the claiming worker's clock; a claim whose
    lease has passed is free again, so a dead worker's runs return to the pool.
    """

    __tablename__ = "run_claims"
    __table_args__ = (Index("ix_run_claims_lease_until", "lease_until"),)

    problem_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    config_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    budget: Mapped[str] = mapped_column(String(128), primary_key=True)
    repeat: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    worker: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RouterModelRow(Base):
    """A trained router: where its artifact lives and how well it did."""

    __tablename__ = "router_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    trained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows_used: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact_path: Mapped[str] = mapped_column(Text)
    is_current: Mapped[bool] = mapped_column(Boolean)


problems = Base.metadata.tables["problems"]
configs = Base.metadata.tables["configs"]
runs = Base.metadata.tables["runs"]
run_claims = Base.metadata.tables["run_claims"]
router_models = Base.metadata.tables["router_models"]
