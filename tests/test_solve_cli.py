"""``ratts solve`` through the real entry point against the simulated server: JSON output,
the router's explanation, logging, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import REPO, count_rows, run_cli, settings_file

from ratts.sim import SimServer, world

QUESTION = "Puzzle 42: follow the hidden chain of operations; give the value."


@pytest.fixture
def toml(tmp_path: Path, sim: SimServer) -> Path:
    return settings_file(tmp_path / "ratts.toml", sim.base_url, tmp_path / "runs.db")


def sim_tokens(sim: SimServer) -> int:
    stats = sim.stats()
    return int(stats["prompt_tokens"] + stats["completion_tokens"] + stats["prm_tokens"])


def test_solve_json_reports_answer_usage_and_logs_the_run(
    capsys: pytest.CaptureFixture[str], toml: Path, sim: SimServer, tmp_path: Path
) -> None:
    gold = world.gold_answer(QUESTION)
    code, out, err = run_cli(
        capsys,
        "solve",
        QUESTION,
        "--strategy",
        "best_of_n",
        "--budget",
        "8",
        "--gold",
        gold,
        "--json",
        "--config",
        str(toml),
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["config"]["strategy"] == "best_of_n" and data["config"]["params"]["n"] == 8
    assert data["reason"] == "forced" and data["partial"] is False
    assert data["answer"] is not None and data["correct"] == (data["answer"] == gold)
    assert data["usage"]["total_tokens"] == sim_tokens(sim) > 0
    assert data["run"]["logged"] is True and len(data["scores"]) == 8
    assert count_rows(tmp_path / "runs.db") == 1


def test_solve_routed_with_explain_prints_the_candidates(
    capsys: pytest.CaptureFixture[str], toml: Path, sim: SimServer
) -> None:
    code, out, err = run_cli(
        capsys, "solve", QUESTION, "--budget", "16", "--policy", "sim-weak", "--explain",
        "--config", str(toml),
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("answer: ")
    config_line = next(line for line in lines if line.startswith("config: "))
    assert "@sim-weak" in config_line and "(cold_start)" in config_line
    usage_line = next(line for line in lines if line.startswith("usage: "))
    assert f"{sim.stats()['prm_tokens']} PRM tokens" in usage_line
    assert "probe:" in usage_line
    assert "router candidates" in out
    chosen = config_line.removeprefix("config: ").split(" (")[0]
    assert any(line.strip().startswith("│ *") and chosen[:20] in line for line in lines)


def test_solve_no_log_writes_nothing(
    capsys: pytest.CaptureFixture[str], toml: Path, tmp_path: Path
) -> None:
    code, _, err = run_cli(
        capsys, "solve", QUESTION, "--strategy", "cot", "--no-log", "--config", str(toml)
    )
    assert code == 0, err
    assert count_rows(tmp_path / "runs.db") == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", ""], "error: the question is empty"),
        (["solve", "   "], "error: the question is empty"),
        (["solve", QUESTION, "--budget-usd", "0"], "error: budget usd must be positive, got 0"),
        (["solve", QUESTION, "--budget", "-3"], "error: budget n must be positive, got -3"),
        (["solve", QUESTION, "--strategy", "tot"], "error: unknown strategy 'tot'"),
        (["solve", QUESTION, "--prm", "nope", "--strategy", "best_of_n"], "unknown PRM 'nope'"),
        (["solve", QUESTION, "--config", "/nonexistent/ratts.toml"], "config file not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str],
    toml: Path,
    sim: SimServer,
    args: list[str],
    message: str,
) -> None:
    if "--config" not in args:
        args = [*args, "--config", str(toml)]
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err
    assert sim.stats()["requests"] == {}  # nothing was sent to a model


def test_empty_question_fails_fast_in_a_real_process() -> None:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ratts.cli", "solve", ""],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr == "error: the question is empty\n"
    # no orchestrator, router or HTTP stack was imported to say so
    assert time.perf_counter() - start < 30
