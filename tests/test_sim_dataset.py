"""`ratts sim dataset`: a JSONL whose gold answers are the simulator's own."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ratts.cli import sim_cmd
from ratts.datasets import load_jsonl
from ratts.sim import world


def test_writes_sim_graded_problems(tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    result = CliRunner().invoke(sim_cmd.app, ["dataset", str(out), "-n", "12", "--seed", "3"])
    assert result.exit_code == 0, result.output
    loaded = load_jsonl(out)
    assert loaded.errors == []
    assert len(loaded.problems) == 12
    for problem in loaded.problems:
        assert problem.answer == world.gold_answer(problem.question, 3)
    # another seed gives other gold answers for the same questions
    first = json.loads(out.read_text().splitlines()[0])
    assert any(world.gold_answer(p.question, 4) != p.answer for p in loaded.problems), first


def test_unwritable_path_is_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        sim_cmd.app, ["dataset", str(tmp_path / "missing" / "x.jsonl")], catch_exceptions=True
    )
    assert result.exit_code != 0
    assert "cannot write" in str(result.exception)
