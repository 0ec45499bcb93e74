"""The operations the rest of ratts needs on the run log, as plain data in and out.

Writes are short transactions, each committed on return, and idempotent: problems and
configs are inserted once by key, and a run is inserted at most once per
(problem, config, budget, repeat) by a UNIQUE constraint with insert-or-ignore (on SQLite and
PostgreSQL through their dialects' ``ON CONFLICT DO NOTHING``; elsewhere by a savepoint).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Table, delete, func, insert, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ratts.endpoints.usage import Usage
from ratts.errors import StoreError
from ratts.redact import redact
from ratts.settings import default_db_url
from ratts.store import migrate
from ratts.store.engine import begin_read, begin_write, describe, make_engine, retry_locked
from ratts.store.models import configs, problems, router_models, runs
from ratts.types import Budget, Problem, RunConfig

T = TypeVar("T")

USAGE_COLUMNS = (
    "policy_prompt_tokens",
    "policy_completion_tokens",
    "policy_cached_tokens",
    "prm_tokens",
    "policy_requests",
    "prm_requests",
    "flops",
    "dollars",
    "request_seconds",
)


class RunKey(NamedTuple):
    """What makes a run unique in the log (``repeat`` numbers deliberate re-runs)."""

    problem_key: str
    config_key: str
    budget: str
    repeat: int = 0


RUN_KEY_COLUMNS = list(RunKey._fields)


def problem_key(problem: Problem, dataset: str | None = None) -> str:
    """Stable key of a problem: its dataset, its id there and its text."""
    payload = json.dumps([dataset or "", problem.id, problem.question])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def budget_label(budget: Budget | int | None) -> str:
    """The budget column: ``n=16`` for a sweep's N; ``n=16,usd=0.01`` for a full Budget."""
    if budget is None:
        return "unbounded"
    if isinstance(budget, int):
        return f"n={budget}"
    parts = [
        f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in budget.model_dump().items()
        if value is not None
    ]
    return ",".join(parts) or "unbounded"


def _jsonable(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    out: dict[str, Any] = json.loads(json.dumps(dict(value), default=str))
    return out


def _now() -> datetime:
    return datetime.now(UTC)


def _insert_ignore(conn: Connection, table: Table, values: dict[str, Any], keys: list[str]) -> bool:
    """Insert unless a row with the same ``keys`` exists; True if a row was written."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        ins = sqlite.insert(table) if dialect == "sqlite" else postgresql.insert(table)
        stmt = ins.values(**values).on_conflict_do_nothing(index_elements=keys)
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT SQLAlchemy adds
        # RETURNING to on its own, so only a returned row says the insert happened.
        return conn.execute(stmt.returning(*table.primary_key.columns)).first() is not None
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(**values))
        return True
    except IntegrityError:
        return False


class Store:
    """The run log behind one engine. Thread-safe; one per process is plenty."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.where = describe(engine.url)

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, exc: SQLAlchemyError) -> StoreError:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return StoreError(f"database {self.where}: {detail}")

    def write(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one write transaction (retried while locked); errors as StoreError."""

        def attempt() -> T:
            with begin_write(self.engine) as conn:
                return fn(conn)

        try:
            return retry_locked(attempt)
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None

    def read(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one read transaction; errors as StoreError."""

        def attempt() -> T:
            with begin_read(self.engine) as conn:
                return fn(conn)

        try:
            return retry_locked(attempt)
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None

    # -- problems and configs -------------------------------------------------------------

    @staticmethod
    def _problem_values(problem: Problem, dataset: str | None) -> dict[str, Any]:
        return {
            "key": problem_key(problem, dataset),
            "dataset": dataset,
            "source_id": problem.id,
            "text_hash": hashlib.sha256(problem.question.encode()).hexdigest(),
            "question": problem.question,
            "answer": problem.answer,
            "meta": _jsonable(problem.meta) or {},
            "created_at": _now(),
        }

    @staticmethod
    def _config_values(config: RunConfig) -> dict[str, Any]:
        return {
            "key": config.key(),
            "policy": config.policy,
            "prm": config.prm,
            "strategy": config.strategy,
            "params": config.params.model_dump(mode="json"),
            "label": config.label(),
            "created_at": _now(),
        }

    def upsert_problem(self, problem: Problem, dataset: str | None = None) -> str:
        """Insert the problem once; returns its key."""
        values = self._problem_values(problem, dataset)
        self.write(lambda c: _insert_ignore(c, problems, values, ["key"]))
        return str(values["key"])

    def upsert_config(self, config: RunConfig) -> str:
        """Insert the config once; returns ``config.key()``."""
        values = self._config_values(config)
        self.write(lambda c: _insert_ignore(c, configs, values, ["key"]))
        return str(values["key"])

    # -- runs -----------------------------------------------------------------------------

    def record_run(
        self,
        problem: Problem,
        config: RunConfig,
        budget: str,
        *,
        dataset: str | None = None,
        answer: str | None = None,
        correct: bool | None = None,
        final_reward: float | None = None,
        usage: Usage | None = None,
        features: Mapping[str, Any] | None = None,
        error: str | None = None,
        router_version: str | None = None,
        replace_failed: bool = False,
        repeat: int = 0,
    ) -> bool:
        """Log one run in one transaction; False if that (problem, config, budget, repeat)
        exists.

        ``replace_failed`` first deletes a recorded failure for the same key, so a retry
        can take its place (a recorded success is never replaced).
        """
        usage = usage or Usage()
        p_values = self._problem_values(problem, dataset)
        c_values = self._config_values(config)
        run_values: dict[str, Any] = {
            "problem_key": p_values["key"],
            "config_key": c_values["key"],
            "budget": budget,
            "repeat": repeat,
            "features": _jsonable(features),
            "answer": answer,
            "correct": correct,
            "final_reward": final_reward,
            **{name: getattr(usage, name) for name in USAGE_COLUMNS},
            "seconds": usage.wall_seconds,
            "error": redact(" ".join(error.split())) if error is not None else None,
            "router_version": router_version,
            "created_at": _now(),
        }

        def write(conn: Connection) -> bool:
            _insert_ignore(conn, problems, p_values, ["key"])
            _insert_ignore(conn, configs, c_values, ["key"])
            if replace_failed:
                conn.execute(
                    delete(runs).where(
                        runs.c.problem_key == p_values["key"],
                        runs.c.config_key == c_values["key"],
                        runs.c.budget == budget,
                        runs.c.repeat == repeat,
                        runs.c.error.is_not(None),
                    )
                )
            return _insert_ignore(conn, runs, run_values, RUN_KEY_COLUMNS)

        return self.write(write)

    def done_keys(
        self, *, include_failed: bool = True, config_keys: Iterable[str] | None = None
    ) -> set[RunKey]:
        """Keys already recorded (failures too unless ``include_failed`` is False)."""
        query = select(*(runs.c[name] for name in RUN_KEY_COLUMNS))
        if not include_failed:
            query = query.where(runs.c.error.is_(None))
        if config_keys is not None:
            query = query.where(runs.c.config_key.in_(list(config_keys)))
        return self.read(lambda c: {RunKey(*row) for row in c.execute(query)})

    def has_run(self, key: RunKey, *, include_failed: bool = True) -> bool:
        query = select(runs.c.id).where(
            runs.c.problem_key == key.problem_key,
            runs.c.config_key == key.config_key,
            runs.c.budget == key.budget,
            runs.c.repeat == key.repeat,
        )
        if not include_failed:
            query = query.where(runs.c.error.is_(None))
        return self.read(lambda c: c.execute(query.limit(1)).first() is not None)

    def count_runs(self, *, failed: bool | None = None) -> int:
        query = select(func.count()).select_from(runs)
        if failed is not None:
            query = query.where(runs.c.error.is_not(None) if failed else runs.c.error.is_(None))
        return self.read(lambda c: int(c.execute(query).scalar_one()))

    def runs(
        self,
        *,
        dataset: str | None = None,
        config_keys: Iterable[str] | None = None,
        include_failed: bool = True,
        only_failed: bool = False,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Runs joined with their problem and config, one plain dict per run.

        Keys: run_id, problem_key, dataset, problem_id, question, gold, problem_meta,
        config_key, policy, prm, strategy, params, label, budget, repeat, features, answer,
        correct,
        final_reward, the usage columns, seconds, error, router_version, created_at.
        """
        query = (
            select(
                runs.c.id.label("run_id"),
                runs.c.problem_key,
                problems.c.dataset,
                problems.c.source_id.label("problem_id"),
                problems.c.question,
                problems.c.answer.label("gold"),
                problems.c.meta.label("problem_meta"),
                runs.c.config_key,
                configs.c.policy,
                configs.c.prm,
                configs.c.strategy,
                configs.c.params,
                configs.c.label,
                runs.c.budget,
                runs.c.repeat,
                runs.c.features,
                runs.c.answer,
                runs.c.correct,
                runs.c.final_reward,
                *(runs.c[name] for name in USAGE_COLUMNS),
                runs.c.seconds,
                runs.c.error,
                runs.c.router_version,
                runs.c.created_at,
            )
            .join(problems, problems.c.key == runs.c.problem_key)
            .join(configs, configs.c.key == runs.c.config_key)
            .order_by(runs.c.id.desc() if newest_first else runs.c.id)
        )
        if dataset is not None:
            query = query.where(problems.c.dataset == dataset)
        if config_keys is not None:
            query = query.where(runs.c.config_key.in_(list(config_keys)))
        if not include_failed:
            query = query.where(runs.c.error.is_(None))
        if only_failed:
            query = query.where(runs.c.error.is_not(None))
        if limit is not None:
            query = query.limit(limit)
        return self.read(lambda c: [dict(row._mapping) for row in c.execute(query)])

    # -- router models --------------------------------------------------------------------

    def save_router_model(
        self,
        version: str,
        *,
        rows_used: int,
        metrics: Mapping[str, Any],
        artifact_path: str,
        make_current: bool = True,
        trained_at: datetime | None = None,
    ) -> None:
        """Register a trained router; with ``make_current`` it becomes the only current one."""
        values = {
            "version": version,
            "trained_at": trained_at or _now(),
            "rows_used": rows_used,
            "metrics": _jsonable(metrics) or {},
            "artifact_path": artifact_path,
            "is_current": make_current,
        }

        def write(conn: Connection) -> None:
            if make_current:
                conn.execute(update(router_models).values(is_current=False))
            try:
                with conn.begin_nested():
                    conn.execute(insert(router_models).values(**values))
            except IntegrityError:
                raise StoreError(f"router version {version!r} is already registered") from None

        self.write(write)

    def router_models(self) -> list[dict[str, Any]]:
        """Every registered router, oldest first."""
        query = select(router_models).order_by(router_models.c.id)
        return self.read(lambda c: [dict(r._mapping) for r in c.execute(query)])

    def current_router_model(self) -> dict[str, Any] | None:
        query = (
            select(router_models)
            .where(router_models.c.is_current.is_(true()))
            .order_by(router_models.c.id.desc())
            .limit(1)
        )

        def read(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(query).first()
            return dict(row._mapping) if row is not None else None

        return self.read(read)


def open_store(url: str | None = None, *, upgrade: bool = True) -> Store:
    """Open the run log at ``url`` (default: settings' SQLite file in the data directory).

    A fresh or older database is upgraded to this code's schema; a database migrated by a
    newer ratts is refused. Every failure is a one-line StoreError.
    """
    engine = make_engine(url or default_db_url())
    where = describe(engine.url)
    try:
        if upgrade:
            # two processes opening one fresh file race to create it; the loser can see
            # "locked" where the busy timeout does not wait (a WAL switch, a stale snapshot)
            retry_locked(lambda: migrate.ensure_current(engine, where))
        else:
            with engine.connect() as conn:
                migrate.check_not_newer(migrate.current_revision(conn), where)
    except SQLAlchemyError as exc:
        engine.dispose()
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StoreError(f"cannot open database {where}: {detail}") from None
    except StoreError:
        engine.dispose()
        raise
    return Store(engine)
