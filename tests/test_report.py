"""Reports: per-config and per-difficulty tables, the accuracy-vs-compute PNG, the CLI."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from sweep_helpers import run_cli, settings_file, sim_dataset

from ratts.endpoints.usage import Usage
from ratts.report import difficulty_bins, plot_accuracy_vs_compute, summarize
from ratts.sim import SimServer
from ratts.store import open_store
from ratts.types import Problem, RunConfig, StrategyParams

BON4 = RunConfig(policy="w", prm="p", strategy="best_of_n", params=StrategyParams(n=4))
BON16 = RunConfig(policy="w", prm="p", strategy="best_of_n", params=StrategyParams(n=16))


def _log_known_runs(url: str) -> None:
    """BoN-4 right on 1 of 4 problems, BoN-16 on 3 of 4 (one more failed), known usage."""
    with open_store(url) as store:
        for i in range(4):
            problem = Problem(f"q{i}", f"question {i}", "1", {"difficulty": i})
            store.record_run(
                problem, BON4, "n=4", answer="1", correct=i == 0, usage=Usage(100, 300, 400)
            )
            store.record_run(
                problem, BON16, "n=16", answer="1", correct=i < 3, usage=Usage(100, 1200, 1300)
            )
        store.record_run(Problem("q9", "question 9", "1"), BON16, "n=16", error="Timeout: x")


def test_summaries_and_bins_from_logged_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    _log_known_runs(url)
    with open_store(url) as store:
        rows = store.runs()
    by_label = {s.label: s for s in summarize(rows)}
    small, large = by_label[BON4.label()], by_label[BON16.label()]
    assert (small.runs, small.failed, small.graded, small.correct) == (4, 0, 4, 1)
    assert (large.runs, large.failed, large.graded, large.correct) == (5, 1, 4, 3)
    assert small.accuracy == 0.25 and large.accuracy == 0.75
    assert small.mean_tokens == 800 and large.mean_tokens == 2600  # failures not averaged
    bins = difficulty_bins(rows, "difficulty", n_bins=5)
    assert bins is not None
    assert bins.bins == ["difficulty=0", "difficulty=1", "difficulty=2", "difficulty=3"]
    assert bins.cells[BON16.label()]["difficulty=2"] == (1, 1)
    assert bins.cells[BON4.label()]["difficulty=1"] == (0, 1)
    quantiles = difficulty_bins(rows, "difficulty", n_bins=2)
    assert quantiles is not None and quantiles.bins == ["q1", "q2"]
    assert difficulty_bins(rows, "no_such_feature") is None


def test_plot_is_a_real_png(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    _log_known_runs(url)
    with open_store(url) as store:
        path = plot_accuracy_vs_compute(summarize(store.runs()), tmp_path / "out" / "p.png")
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert float(np.std(image)) > 0.05  # not a blank canvas


def test_ratts_report_prints_tables_and_writes_png(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    toml = settings_file(tmp_path / "ratts.toml", sim.base_url, db)
    data = sim_dataset(tmp_path / "sim.jsonl", 12)
    code, _, err = run_cli(
        capsys,
        "sweep",
        str(data),
        *("-s", "cot", "-s", "majority", "-s", "best_of_n", "--n", "4", "--n", "16"),
        *("--settings", str(toml), "--no-progress"),
    )
    assert code == 0, err
    png = tmp_path / "report.png"
    code, out, err = run_cli(capsys, "report", "--settings", str(toml), "--out", str(png))
    assert code == 0, err

    with open_store(f"sqlite:///{db}") as store:
        rows = store.runs()
    assert len(rows) == 12 * 5
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        tally[row["label"]][0] += int(bool(row["correct"]))
        tally[row["label"]][1] += 1
    lines = out.splitlines()
    for label, (correct, total) in tally.items():
        (line,) = [ln for ln in lines if label in ln and "%" in ln and f"/{total})" in ln]
        assert f"({correct}/{total})" in line
    assert "Accuracy by difficulty" in out
    assert f"plot written to {png}" in out
    assert png.stat().st_size > 20_000
    image = imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 500


def test_ratts_runs_lists_newest_and_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    _log_known_runs(url)
    code, out, _ = run_cli(capsys, "runs", "--db", url, "--limit", "3")
    assert code == 0 and "3 of 9 runs" in out
    code, out, _ = run_cli(capsys, "runs", "--db", url, "--failed")
    assert code == 0 and "1 of 9 runs" in out and "Timeout: x" in out


def test_report_on_an_empty_log_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    code, _, err = run_cli(capsys, "report", "--db", url, "--out", str(tmp_path / "r.png"))
    assert code == 2 and "no runs logged yet" in err
    assert not (tmp_path / "r.png").exists()
