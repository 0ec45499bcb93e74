"""Helpers shared by the sweep and report tests: sim-graded datasets, settings, the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ratts.sim import world

REPO = Path(__file__).resolve().parents[1]


def sim_dataset(path: Path, count: int, *, prefix: str = "Puzzle") -> Path:
    """A JSONL file whose gold answers are the simulator's own (so accuracy means something)."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            question = f"{prefix} {i}: follow the hidden chain of operations; give the value."
            record = {
                "id": f"{prefix.lower()}-{i}",
                "problem": question,
                "answer": world.gold_answer(question),
                "difficulty": round(world.difficulty(question), 3),
            }
            fh.write(json.dumps(record) + "\n")
    return path


def settings_file(path: Path, base_url: str, db: Path | str, *, max_retries: int = 3) -> Path:
    """A ratts.toml pointing every model at the sim at ``base_url`` and the log at ``db``
    (a SQLite file, or any database URL given as a string)."""
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    path.write_text(
        f"""
db_url = "{url}"

[[policies]]
name = "sim-weak"
base_url = "{base_url}/v1"
model = "sim-weak"
params = 1e9
usd_per_mtok_prompt = 0.1
usd_per_mtok_completion = 0.4
max_retries = {max_retries}
timeout_s = 20

[[policies]]
name = "sim-strong"
base_url = "{base_url}/v1"
model = "sim-strong"
params = 7e10
max_retries = {max_retries}

[[prms]]
name = "sim-prm"
kind = "vllm_pooling"
base_url = "{base_url}"
model = "sim-prm"
params = 7e9
max_retries = {max_retries}
""",
        encoding="utf-8",
    )
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``ratts ARGS`` in this process through the real entry point; (code, out, err)."""
    from ratts.cli import main

    argv = sys.argv
    sys.argv = ["ratts", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def spawn_cli(*args: str) -> subprocess.Popen[str]:
    """``python -m ratts.cli ARGS`` as a child process (stdout/stderr piped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATTS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "ratts.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def count_rows(db: Path) -> int:
    """Rows in ``runs`` read with plain sqlite3 (0 before the schema exists)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def run_rows(db: Path) -> list[tuple[object, ...]]:
    """(id, problem_key, config_key, budget, answer, correct, tokens, error) per run."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute(
            "SELECT id, problem_key, config_key, budget, answer, correct, "
            "policy_prompt_tokens + policy_completion_tokens + prm_tokens, error FROM runs "
            "ORDER BY id"
        ).fetchall()


def duplicate_keys(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM (SELECT problem_key, config_key, budget, count(*) AS c "
                "FROM runs GROUP BY problem_key, config_key, budget HAVING c > 1)"
            ).fetchone()[0]
        )
