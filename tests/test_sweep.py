"""The sweep against the simulated server: row counts, resume, SIGKILL, concurrent writers,
real usage, failures and bad input."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sweep_helpers import (
    count_rows,
    duplicate_keys,
    run_cli,
    run_rows,
    settings_file,
    sim_dataset,
    spawn_cli,
)

from ratts.errors import ConfigError
from ratts.orchestrator.sweep import load_problems, run_sweep
from ratts.orchestrator.sweep_config import configs_from_flags, load_sweep_file
from ratts.settings import load_settings
from ratts.sim import SimServer
from ratts.store import migrate, open_store
from ratts.types import RunConfig, StrategyParams

THREE_CONFIGS = [
    RunConfig(policy="sim-weak", prm=None, strategy="cot"),
    RunConfig(policy="sim-weak", prm=None, strategy="majority", params=StrategyParams(n=4)),
    RunConfig(policy="sim-weak", prm="sim-prm", strategy="best_of_n", params=StrategyParams(n=4)),
]


def _done(summary: str) -> int:
    match = re.search(r"(\d+) done, (\d+) failed, (\d+) already logged", summary)
    assert match, summary
    return int(match.group(1))


# ---------------------------------------------------------------- in process


async def test_fifty_problems_by_three_configs_write_150_rows_then_none(
    sim: SimServer, tmp_path: Path, db_url: str
) -> None:
    db = db_url  # SQLite and PostgreSQL
    settings = load_settings(settings_file(tmp_path / "ratts.toml", sim.base_url, db))
    problems = load_problems(str(sim_dataset(tmp_path / "sim.jsonl", 50))).problems
    with open_store(settings.db_url) as store:
        stats = await run_sweep(problems, THREE_CONFIGS, store, settings)
        assert (stats.planned, stats.done, stats.failed, stats.skipped) == (150, 150, 0, 0)
        assert store.count_runs() == 150
        rows = store.runs()
        assert len({(r["problem_key"], r["config_key"], r["budget"]) for r in rows}) == 150
        assert {r["budget"] for r in rows} == {"n=1", "n=4"}
        assert all(r["correct"] is not None and r["error"] is None for r in rows)
        graded_correct = sum(1 for r in rows if r["correct"])
        assert stats.correct == graded_correct and 0 < graded_correct < 150
        requests_first = sim.stats()["requests"]

        sim.reset()
        again = await run_sweep(problems, THREE_CONFIGS, store, settings)
        assert (again.done, again.failed, again.skipped) == (0, 0, 150)
        assert store.count_runs() == 150
        assert sim.stats()["requests"] == {}  # nothing was re-run
    assert requests_first.get("completions", 0) >= 150


async def test_row_usage_equals_the_sims_counters(
    sim: SimServer, tmp_path: Path, db_url: str
) -> None:
    db = db_url  # SQLite and PostgreSQL
    settings = load_settings(settings_file(tmp_path / "ratts.toml", sim.base_url, db))
    problems = load_problems(str(sim_dataset(tmp_path / "sim.jsonl", 1))).problems
    configs = [
        RunConfig(
            policy="sim-weak", prm="sim-prm", strategy="best_of_n", params=StrategyParams(n=8)
        ),
        RunConfig(
            policy="sim-strong",
            prm="sim-prm",
            strategy="beam_search",
            params=StrategyParams(n=8, beam_width=4),
        ),
    ]
    with open_store(settings.db_url) as store:
        for config in configs:
            sim.reset()
            await run_sweep(problems, [config], store, settings)
            counters = sim.stats()
            (row,) = store.runs(config_keys=[config.key()])
            assert row["policy_prompt_tokens"] == counters["prompt_tokens"] > 0
            assert row["policy_completion_tokens"] == counters["completion_tokens"] > 0
            assert row["prm_tokens"] == counters["prm_tokens"] > 0
            assert row["policy_requests"] == counters["requests"]["completions"]
            assert row["prm_requests"] == counters["requests"]["pooling"]
            tokens = row["policy_prompt_tokens"] + row["policy_completion_tokens"]
            params = 1e9 if config.policy == "sim-weak" else 7e10
            assert row["flops"] == pytest.approx(2 * params * tokens + 2 * 7e9 * row["prm_tokens"])
            assert row["seconds"] > 0


async def test_failures_are_logged_and_retried_only_when_asked(
    make_sim: Callable[..., SimServer], sim: SimServer, tmp_path: Path, db_url: str
) -> None:
    db = db_url  # SQLite and PostgreSQL
    broken = make_sim(faults={"error_500": 1.0})
    bad = load_settings(settings_file(tmp_path / "bad.toml", broken.base_url, db, max_retries=0))
    good = load_settings(settings_file(tmp_path / "good.toml", sim.base_url, db))
    problems = load_problems(str(sim_dataset(tmp_path / "sim.jsonl", 4))).problems
    configs = THREE_CONFIGS[:2]
    with open_store(good.db_url) as store:
        first = await run_sweep(problems, configs, store, bad)
        assert (first.done, first.failed) == (0, 8)
        rows = store.runs()
        assert len(rows) == 8 and all(r["error"] and "\n" not in r["error"] for r in rows)
        assert all("ServerError" in r["error"] for r in rows)

        sim.reset()
        second = await run_sweep(problems, configs, store, good)
        assert (second.done, second.failed, second.skipped) == (0, 0, 8)
        assert sim.stats()["requests"] == {}  # failures are not retried unless asked

        third = await run_sweep(problems, configs, store, good, retry_failed=True)
        assert (third.done, third.failed) == (8, 0)
        rows = store.runs()
        assert len(rows) == 8 and all(r["error"] is None for r in rows)


def test_sweep_file_expands_lists_and_budgets(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(
        """
budgets = [4, 16]
[[configs]]
policy = "sim-weak"
prm = "sim-prm"
strategy = ["best_of_n", "beam_search"]
beam_width = 4
[[configs]]
policy = ["sim-weak", "sim-strong"]
strategy = "majority"
n = 8
""",
        encoding="utf-8",
    )
    configs = load_sweep_file(path)
    labels = sorted(c.label() for c in configs)
    assert labels == sorted(
        [
            "best_of_n(N=4)@sim-weak+sim-prm",
            "best_of_n(N=16)@sim-weak+sim-prm",
            "beam_search(N=4,M=4)@sim-weak+sim-prm",
            "beam_search(N=16,M=4)@sim-weak+sim-prm",
            "majority(N=8)@sim-weak",
            "majority(N=8)@sim-strong",
        ]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[configs]]\npolicy = "p"\nstrategy = "cot"\nbeam_widht = 2\n',
            "unknown key 'beam_widht'",
        ),
        ('budget = [4]\n[[configs]]\npolicy = "p"\nstrategy = "cot"\n', "unknown key 'budget'"),
        ('[[configs]]\npolicy = "p"\n', "'strategy' is required"),
        ('[[configs]]\npolicy = "p"\nstrategy = "cot"\nn = "x"\n', "configs[0]: n"),
        ("[[configs]\n", "not valid TOML"),
        ("budgets = [4]\n", "needs at least one [[configs]]"),
    ],
)
def test_bad_sweep_files_are_one_line_config_errors(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_sweep_file(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_flags_build_the_product(sim: SimServer, tmp_path: Path) -> None:
    settings = load_settings(settings_file(tmp_path / "r.toml", sim.base_url, tmp_path / "x.db"))
    configs = configs_from_flags(
        settings, strategies=["cot", "majority", "best_of_n"], ns=[4, 16], params={}
    )
    assert sorted(c.label() for c in configs) == sorted(
        [
            "cot(N=1)@sim-weak",
            "majority(N=4)@sim-weak",
            "majority(N=16)@sim-weak",
            "best_of_n(N=4)@sim-weak+sim-prm",
            "best_of_n(N=16)@sim-weak+sim-prm",
        ]
    )


# ---------------------------------------------------------------- bad input through the CLI


@pytest.fixture
def logged(sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A settings file whose database already holds a few runs."""
    db = tmp_path / "runs.db"
    toml = settings_file(tmp_path / "ratts.toml", sim.base_url, db)
    data = sim_dataset(tmp_path / "seed.jsonl", 3, prefix="Seed")
    code, out, _ = run_cli(
        capsys, "sweep", str(data), "-s", "cot", "--settings", str(toml), "--no-progress"
    )
    assert code == 0 and _done(out) == 3
    return toml


def _assert_one_line_error(err: str, fragment: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert fragment in errors[0], err


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("missing-dataset", "dataset file not found"),
        ("unknown-key", "unknown key 'temprature'"),
        ("bad-db", "cannot open database"),
        ("unknown-strategy", "unknown strategy 'beam'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_loses_nothing(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, fragment: str
) -> None:
    db = tmp_path / "runs.db"
    before = run_rows(db)
    data = sim_dataset(tmp_path / "more.jsonl", 2)
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(
        '[[configs]]\npolicy = "sim-weak"\nstrategy = "majority"\ntemprature = 0.5\n',
        encoding="utf-8",
    )
    (tmp_path / "file.txt").write_text("not a directory")
    args = {
        "missing-dataset": [str(tmp_path / "nope.jsonl"), "-s", "cot"],
        "unknown-key": [str(data), "--configs", str(sweep_file)],
        "bad-db": [str(data), "-s", "cot", "--db", f"sqlite:///{tmp_path}/file.txt/runs.db"],
        "unknown-strategy": [str(data), "-s", "beam"],
    }[case]
    code, _, err = run_cli(capsys, "sweep", *args, "--settings", str(logged), "--no-progress")
    assert code == 2
    _assert_one_line_error(err, fragment)
    assert run_rows(db) == before


def test_malformed_jsonl_line_is_reported_and_good_lines_still_run(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    before = run_rows(db)
    good = sim_dataset(tmp_path / "good.jsonl", 4, prefix="Mixed").read_text().splitlines()
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([*good[:2], '{"id": "x", "problem": ', *good[2:]]) + "\n")
    code, out, err = run_cli(
        capsys, "sweep", str(mixed), "-s", "cot", "--settings", str(logged), "--no-progress"
    )
    assert code == 2
    _assert_one_line_error(err, "line 3")
    assert "warning:" in err and "line 3: invalid JSON" in err
    assert _done(out) == 4
    after = run_rows(db)
    assert after[: len(before)] == before and len(after) == len(before) + 4


def test_db_commands_upgrade_current_downgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out, _ = run_cli(capsys, "db", "current", "--url", url)
    assert code == 0 and "empty" in out
    code, out, _ = run_cli(capsys, "db", "upgrade", "--url", url)
    assert code == 0 and f"at revision {migrate.head_revision()}" in out
    code, out, _ = run_cli(capsys, "db", "current", "--url", url)
    assert code == 0 and "up to date" in out
    code, _, err = run_cli(capsys, "db", "downgrade", "base", "--url", url)  # not a terminal
    assert code == 2 and "deletes data: run again with --yes" in err
    code, out, _ = run_cli(capsys, "db", "current", "--url", url)
    assert code == 0 and "up to date" in out  # nothing was dropped
    code, out, _ = run_cli(capsys, "db", "downgrade", "base", "--url", url, "--yes")
    assert code == 0 and "base" in out
    code, _, err = run_cli(capsys, "db", "upgrade", "nosuchrev", "--url", url)
    assert code == 2
    _assert_one_line_error(err, "nosuchrev")


# ---------------------------------------------------------------- real processes


def _sweep_args(data: Path, toml: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        str(data),
        "-s",
        "cot",
        "-s",
        "majority",
        "--n",
        "4",
        "--settings",
        str(toml),
        "--no-progress",
        *extra,
    ]


def test_sigkill_midway_then_rerun_completes_without_duplicates_or_losses(
    make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    slow = make_sim(capacity={"base_latency_s": 0.2})
    db = tmp_path / "runs.db"
    toml = settings_file(tmp_path / "ratts.toml", slow.base_url, db)
    data = sim_dataset(tmp_path / "sim.jsonl", 30)
    total = 60

    proc = spawn_cli(*_sweep_args(data, toml, "--concurrency", "2"))
    deadline = time.monotonic() + 90
    while count_rows(db) < 12:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "sweep made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    committed = run_rows(db)
    assert 12 <= len(committed) < total  # killed half-way

    rerun = spawn_cli(*_sweep_args(data, toml, "--concurrency", "16"))
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert _done(out) == total - len(committed)
    final = run_rows(db)
    assert len(final) == total and duplicate_keys(db) == 0
    assert final[: len(committed)] == committed  # every committed row kept, unchanged
    assert all(row[7] is None for row in final)


def test_two_concurrent_sweeps_on_one_file(
    make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    slow = make_sim(capacity={"base_latency_s": 0.3})
    db = tmp_path / "runs.db"  # fresh: both processes also race to create the schema
    toml = settings_file(tmp_path / "ratts.toml", slow.base_url, db)
    data = sim_dataset(tmp_path / "sim.jsonl", 40)
    total = 80
    procs = [spawn_cli(*_sweep_args(data, toml, "--concurrency", "4")) for _ in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err.lower()
    assert sum(_done(out) for out, _ in results) == total  # each row written exactly once
    assert count_rows(db) == total and duplicate_keys(db) == 0
    assert slow.stats()["max_in_flight"] > 4  # the two really ran at the same time
