"""Sweep figures a user can trust: failures counted, completion tokens apart, flags."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from sweep_helpers import run_cli, settings_file, sim_dataset

from ratts.orchestrator.sweep import SweepStats
from ratts.sim import SimServer
from ratts.store import open_store


def test_summary_counts_failed_runs_as_wrong_and_splits_tokens() -> None:
    stats = SweepStats(
        planned=20,
        done=18,
        failed=2,
        failed_gradable=2,
        graded=18,
        correct=3,
        tokens=5000,
        prompt_tokens=3000,
        completion_tokens=1500,
        started=time.perf_counter() - 10.0,  # long enough that two clock reads agree to 1%
    )
    assert stats.accuracy == pytest.approx(3 / 20)
    assert stats.accuracy_finished == pytest.approx(3 / 18)
    line = stats.summary()
    assert (
        "accuracy 15.0% (3 of 20; 2 failed, counted wrong; 16.7% of the 18 that finished)" in line
    )
    assert "1500 completion + 3000 prompt tokens" in line
    assert re.search(r"\(\d+ completion tok/s, \d+ prompt tok/s\)", line)
    assert stats.tokens_per_second == pytest.approx(1500 / stats.elapsed, rel=0.01)
    clean = SweepStats(planned=4, done=4, graded=4, correct=1)
    assert "accuracy 25.0% (1 of 4)" in clean.summary()


def test_sweep_flags_set_the_token_and_step_limits(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    toml = settings_file(tmp_path / "ratts.toml", sim.base_url, db)
    data = sim_dataset(tmp_path / "d.jsonl", 2)
    code, out, err = run_cli(
        capsys,
        "sweep",
        str(data),
        "-s",
        "majority",
        "-s",
        "beam_search",
        "--n",
        "4",
        "--beam-width",
        "2",
        "--temperature",
        "0.5",
        "--max-tokens",
        "64",
        "--max-step-tokens",
        "16",
        "--max-steps",
        "3",
        "--settings",
        str(toml),
        "--no-progress",
    )
    assert code == 0, err
    assert "4 done, 0 failed" in out and "completion tok/s" in out
    with open_store(f"sqlite:///{db}") as store:
        rows = store.runs()
    params = [
        r["params"] if isinstance(r["params"], dict) else json.loads(r["params"]) for r in rows
    ]
    assert len(params) == 4
    for p in params:
        assert (p["max_tokens"], p["max_step_tokens"], p["max_steps"]) == (64, 16, 3)
        assert p["temperature"] == 0.5
    code, _, err = run_cli(
        capsys,
        "sweep",
        str(data),
        "-s",
        "cot",
        "--max-tokens",
        "0",
        "--settings",
        str(toml),
    )
    assert code != 0 and "max-tokens" in err and "Traceback" not in err
