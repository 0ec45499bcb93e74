"""Offline evaluation on a synthetic log where the best config depends on difficulty."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_router_support import WORLD, synthetic_log

from ratts.errors import RouterError
from ratts.router.candidates import record_config
from ratts.router.evaluate import EvalConfig, Point, evaluate, frontier_at, pareto
from ratts.router.report import format_table, plot_curves
from ratts.router.train import question_texts, split_problems

FAST = {"max_iter": 60, "min_samples_leaf": 5}


def test_split_is_by_problem_and_seeded() -> None:
    ids = [f"p{i}" for i in range(50)]
    train, test = split_problems(ids * 3, 0.3, seed=1)
    assert train.isdisjoint(test) and train | test == set(ids) and len(test) == 15
    assert split_problems(ids, 0.3, seed=1) == (train, test)
    assert split_problems(ids, 0.3, seed=2) != (train, test)


def test_frontier_reads_the_best_point_within_compute() -> None:
    points = [Point(1, 0.5), Point(2, 0.4), Point(3, 0.8), Point(3, 0.7)]
    assert pareto(points) == [Point(1, 0.5), Point(3, 0.8)]
    assert frontier_at(points, 2.5) == Point(1, 0.5)
    assert frontier_at(points, 0.5) is None


def test_router_beats_best_fixed_and_oracle_bounds_everyone(tmp_path: Path) -> None:
    log = synthetic_log(300, seed=4)
    # one test problem misses a config: it must be left out of the test set
    dropped = next(r for r in log if r["strategy"] == "cot" and r["policy"] == "strong")
    log.remove(dropped)
    report = evaluate(log, EvalConfig(seed=0, model_params=FAST))
    c = report.counts
    assert c["candidate_configs"] == len(WORLD)
    assert c["train_problems"] + c["test_problems"] + c["test_problems_incomplete"] == 300
    assert c["test_problems"] >= 85
    assert sum(c["test_bins"].values()) == c["test_problems"]
    assert "Pass@1 of weak" in report.pass1_source
    assert report.table, "the comparison table is empty"
    for row in report.table:
        oracle = row["per-problem oracle"]
        assert oracle is not None
        for name in ("router", "best fixed", "oracle bins (paper rule)"):
            if row[name] is not None:
                assert row[name] <= oracle + 1e-9, (name, row)
    s = report.summary
    assert s["router_beats_best_fixed_at"] >= 1
    assert s["mean_gain_vs_best_fixed"] > 0.05
    text = format_table(report)
    assert "| mean compute (flops) |" in text and "best fixed config" in text
    png = plot_curves(report, tmp_path / "curves.png")
    assert png.stat().st_size > 20_000
    data = report.to_dict()
    assert set(data["curves"]) >= {"router", "best fixed", "per-problem oracle"}


def test_evaluation_needs_probes_and_complete_problems() -> None:
    with pytest.raises(RouterError, match="no probe rows"):
        evaluate(synthetic_log(40, with_probes=False), EvalConfig(model_params=FAST))
    log = synthetic_log(60)
    strong_cot = WORLD[2][0].key()

    # the strong config logged on the training problems only
    _, test_ids = split_problems(
        {r["problem_id"] for r in log}, 0.3, seed=5, texts=question_texts(log)
    )  # the evaluator's split: grouped by question text
    kept = [
        r
        for r in log
        if not (
            r["strategy"] != "probe"
            and record_config(r).key() == strong_cot
            and r["problem_id"] in test_ids
        )
    ]
    with pytest.raises(RouterError, match="every candidate config"):
        evaluate(kept, EvalConfig(model_params=FAST, test_fraction=0.3, seed=5))
