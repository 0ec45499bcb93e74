"""The run log on real SQLite files and a real PostgreSQL server (the ``db_url`` fixture runs
each test on both): migrations, idempotent writes, concurrency, refusals."""

from __future__ import annotations

import io
import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.dialects import postgresql

from ratts.endpoints.usage import Usage
from ratts.errors import StoreError
from ratts.store import RunKey, budget_label, make_engine, migrate, open_store, problem_key
from ratts.store.models import metadata, runs
from ratts.types import Budget, Problem, RunConfig, StrategyParams

TABLES = {"problems", "configs", "runs", "run_claims", "router_models"}


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return migrate.current_revision(conn)
    finally:
        engine.dispose()


PROBLEM = Problem("p1", "What is 6 x 7?", "42", {"dataset": "toy", "difficulty": 0.3})
CONFIG = RunConfig(
    policy="sim-weak", prm="sim-prm", strategy="best_of_n", params=StrategyParams(n=4)
)


def test_open_store_upgrades_an_empty_database(db_url: str) -> None:
    with open_store(db_url) as store:
        assert store.count_runs() == 0
    assert _tables(db_url) == TABLES
    assert _revision(db_url) == migrate.head_revision()


def test_sqlite_connections_get_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "dir" / "runs.db"
    with open_store(_url(db)) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_a_plain_postgresql_url_uses_psycopg_3(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with open_store(plain) as store:
        assert store.engine.dialect.driver == "psycopg"
        assert store.engine.dialect.name == "postgresql"


def test_migrations_create_exactly_the_models(db_url: str) -> None:
    open_store(db_url).close()
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_then_upgrade_round_trips(db_url: str) -> None:
    engine = make_engine(db_url)
    assert migrate.upgrade(engine, "test") == migrate.head_revision()
    assert _tables(db_url) == TABLES
    assert migrate.downgrade(engine, "test", "base") is None
    assert _tables(db_url) == set()
    assert migrate.upgrade(engine, "test") == migrate.head_revision()
    assert _tables(db_url) == TABLES
    engine.dispose()
    with open_store(db_url) as store:  # and the schema is usable after the round trip
        assert store.record_run(PROBLEM, CONFIG, "n=4", answer="42", correct=True)
        assert store.count_runs() == 1


def test_a_newer_database_is_refused(db_url: str) -> None:
    open_store(db_url).close()
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this ratts") as info:
        open_store(db_url)
    assert "\n" not in str(info.value)
    assert _revision(db_url) == "9999_future"  # untouched


@pytest.mark.parametrize(
    "make_url",
    [
        lambda tmp: f"sqlite:///{tmp}",  # a directory, not a file
        lambda tmp: f"sqlite:///{tmp / 'file.txt' / 'runs.db'}",  # parent is a regular file
        lambda tmp: "nosuchdialect://user:secret@host/db",
        lambda tmp: "not a url at all",
    ],
    ids=["directory", "parent-is-file", "unknown-dialect", "garbage"],
)
def test_unopenable_urls_are_one_line_store_errors(tmp_path: Path, make_url: object) -> None:
    (tmp_path / "file.txt").write_text("x")
    url = make_url(tmp_path)  # type: ignore[operator]
    with pytest.raises(StoreError) as info:
        open_store(url)
    message = str(info.value)
    assert "\n" not in message
    assert "secret" not in message  # passwords are never printed


def test_record_run_is_idempotent_and_keeps_usage(db_url: str) -> None:
    usage = Usage(
        policy_prompt_tokens=120,
        policy_completion_tokens=480,
        prm_tokens=600,
        policy_requests=1,
        prm_requests=1,
        flops=1.2e12,
        dollars=0.0003,
        request_seconds=0.8,
        wall_seconds=0.9,
    )
    with open_store(db_url) as store:
        first = store.record_run(
            PROBLEM,
            CONFIG,
            "n=4",
            dataset="toy",
            answer="42",
            correct=True,
            final_reward=0.91,
            usage=usage,
            features={"len": 14},
        )
        again = store.record_run(PROBLEM, CONFIG, "n=4", dataset="toy", answer="41", correct=False)
        assert (first, again) == (True, False)
        (row,) = store.runs()
    assert row["answer"] == "42" and row["correct"] is True and row["final_reward"] == 0.91
    assert row["policy_prompt_tokens"] == 120 and row["policy_completion_tokens"] == 480
    assert row["prm_tokens"] == 600 and row["flops"] == 1.2e12 and row["seconds"] == 0.9
    assert row["problem_id"] == "p1" and row["dataset"] == "toy" and row["gold"] == "42"
    assert row["problem_meta"] == {"dataset": "toy", "difficulty": 0.3}
    assert row["features"] == {"len": 14}
    assert row["config_key"] == CONFIG.key() and row["params"]["n"] == 4
    assert row["label"] == CONFIG.label()


def test_failures_are_kept_until_replaced_by_a_retry(db_url: str) -> None:
    with open_store(db_url) as store:
        assert store.record_run(PROBLEM, CONFIG, "n=4", error="ServerError: 500\nretries exhausted")
        key = RunKey(problem_key(PROBLEM), CONFIG.key(), "n=4")
        assert store.done_keys() == {key}
        assert store.done_keys(include_failed=False) == set()
        # without replace_failed the failure stands
        assert not store.record_run(PROBLEM, CONFIG, "n=4", answer="42", correct=True)
        assert store.runs()[0]["error"] == "ServerError: 500 retries exhausted"
        assert store.record_run(
            PROBLEM, CONFIG, "n=4", answer="42", correct=True, replace_failed=True
        )
        # a recorded success is never replaced, even when asked to replace failures
        assert not store.record_run(PROBLEM, CONFIG, "n=4", answer="1", replace_failed=True)
        (row,) = store.runs()
        assert row["error"] is None and row["answer"] == "42"
        assert store.done_keys(include_failed=False) == {key}


def test_same_problem_under_two_datasets_and_budgets_are_distinct(db_url: str) -> None:
    with open_store(db_url) as store:
        for dataset in ("a", "b"):
            for budget in (4, 16):
                assert store.record_run(PROBLEM, CONFIG, budget_label(budget), dataset=dataset)
        assert store.count_runs() == 4
        assert len(store.runs(dataset="a")) == 2


def test_budget_labels() -> None:
    assert budget_label(16) == "n=16"
    assert budget_label(Budget(n=4, usd=0.01)) == "n=4,usd=0.01"
    assert budget_label(Budget()) == budget_label(None) == "unbounded"


def test_router_models_have_one_current(db_url: str) -> None:
    with open_store(db_url) as store:
        assert store.current_router_model() is None
        store.save_router_model("r1", rows_used=10, metrics={"acc": 0.5}, artifact_path="/a")
        store.save_router_model("r2", rows_used=20, metrics={"acc": 0.6}, artifact_path="/b")
        current = store.current_router_model()
        assert current is not None and current["version"] == "r2"
        assert [m["is_current"] for m in store.router_models()] == [False, True]
        with pytest.raises(StoreError, match="already registered"):
            store.save_router_model("r1", rows_used=1, metrics={}, artifact_path="/c")


def _write_many(url: str, worker: int, count: int) -> None:
    with open_store(url) as store:  # every process also races on the first-use upgrade
        for i in range(count):
            problem = Problem(f"q{i}", f"question {i}", str(i))
            store.record_run(problem, CONFIG, "n=4", answer=str(worker))


def test_concurrent_processes_write_each_key_once(db_url: str) -> None:
    url = db_url
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(url, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with open_store(url) as store:
        assert store.count_runs() == 40
        keys = [(r["problem_key"], r["config_key"], r["budget"]) for r in store.runs()]
    assert len(set(keys)) == 40


def _open_at_once(url: str, start: Barrier) -> None:
    start.wait(30)
    with open_store(url) as store:
        store.count_runs()


def test_processes_opening_one_fresh_sqlite_file_at_once_all_get_it(tmp_path: Path) -> None:
    """The race two `ratts sweep`s on a new file run: who creates the schema. The loser
    used to see "database is locked" where the busy timeout does not wait (2 failures in 10
    trials of six processes, before the open retried)."""
    ctx = multiprocessing.get_context("fork")
    for trial in range(8):
        url = f"sqlite:///{tmp_path / f'fresh{trial}.db'}"
        start = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_at_once, args=(url, start)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6, f"trial {trial}"
        with open_store(url) as store:
            assert store.count_runs() == 0


def test_insert_or_ignore_is_portable_sql() -> None:
    stmt = postgresql.insert(runs).values(problem_key="p", config_key="c", budget="n=1")
    sql = str(
        stmt.on_conflict_do_nothing(index_elements=["problem_key", "config_key", "budget"]).compile(
            dialect=postgresql.dialect()
        )
    )
    assert "ON CONFLICT (problem_key, config_key, budget) DO NOTHING" in sql


def test_migrations_render_for_postgresql() -> None:
    """The migration has no SQLite-only SQL: render it offline for PostgreSQL."""
    cfg = Config(output_buffer=io.StringIO())
    cfg.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", "postgresql://")
    command.upgrade(cfg, "head", sql=True)
    sql = cfg.output_buffer.getvalue()  # type: ignore[union-attr]
    for table in TABLES:
        assert f"CREATE TABLE {table}" in sql
    assert (
        "CONSTRAINT uq_runs_problem_config_budget UNIQUE (problem_key, config_key, budget)" in sql
    )
    assert "ADD CONSTRAINT uq_runs_problem_config_budget_repeat UNIQUE " in sql
    assert "(problem_key, config_key, budget, repeat)" in sql
    assert "FOR UPDATE" not in sql  # claims lock rows at run time, not in the schema
    assert "PRAGMA" not in sql and "AUTOINCREMENT" not in sql


def test_inspected_schema_has_the_unique_run_key(db_url: str) -> None:
    with open_store(db_url) as store:
        uniques = inspect(store.engine).get_unique_constraints("runs")
    assert {"problem_key", "config_key", "budget", "repeat"} == set(uniques[0]["column_names"])


def test_repeats_are_distinct_runs_of_one_key(db_url: str) -> None:
    with open_store(db_url) as store:
        assert store.record_run(PROBLEM, CONFIG, "n=4", answer="42")
        assert store.record_run(PROBLEM, CONFIG, "n=4", answer="41", repeat=1)
        assert not store.record_run(PROBLEM, CONFIG, "n=4", answer="40", repeat=1)
        key = RunKey(problem_key(PROBLEM), CONFIG.key(), "n=4")
        assert store.done_keys() == {key, key._replace(repeat=1)}
        assert [(r["repeat"], r["answer"]) for r in store.runs()] == [(0, "42"), (1, "41")]


def test_upgrade_from_0001_keeps_rows_as_repeat_zero(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine, "test", "0001")
    with engine.begin() as conn:
        now = "2026-01-01 00:00:00+00:00"
        conn.execute(
            text(
                "INSERT INTO problems (key, source_id, text_hash, question, meta, created_at) "
                "VALUES ('p', 'p', 'h', 'q', '{}', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO configs (key, policy, strategy, params, label, created_at) "
                "VALUES ('c', 'pol', 'cot', '{}', 'cot', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO runs (problem_key, config_key, budget, policy_prompt_tokens, "
                "policy_completion_tokens, prm_tokens, policy_requests, prm_requests, flops, "
                "dollars, request_seconds, seconds, created_at) "
                "VALUES ('p', 'c', 'n=1', 1, 2, 0, 1, 0, 0, 0, 0, 0, :now)"
            ),
            {"now": now},
        )
    assert migrate.upgrade(engine, "test") == migrate.head_revision()
    engine.dispose()
    with open_store(db_url) as store:
        assert store.done_keys() == {RunKey("p", "c", "n=1", 0)}


def test_shipped_head_read_without_alembic_matches_alembic() -> None:
    """The start-up fast path reads the head from the migration files; it must agree."""
    from ratts.store import migrate

    assert migrate.shipped_head() == migrate.head_revision()
