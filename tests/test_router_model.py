"""The router model: learns who wins, routes by difficulty, fails clearly on useless logs."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from test_router_support import PRM, STRONG, WEAK, WORLD, config_record, synthetic_log

from ratts.errors import RouterError
from ratts.router.candidates import CostModel, record_config
from ratts.router.model import RouterModel, config_inputs, design_row
from ratts.router.train import design, train_router, with_features
from ratts.types import Budget, RunConfig, StrategyParams

FAST = {"max_iter": 60, "min_samples_leaf": 5}


def test_design_row_holds_config_fields_and_log_n() -> None:
    config = RunConfig(policy="a", prm="b", strategy="beam_search", params=StrategyParams(n=16))
    row = design_row({"probe_agreement": 0.5, "policy": "spoofed"}, config)
    assert row["policy"] == "a" and row["prm"] == "b" and row["strategy"] == "beam_search"
    assert row["n"] == 16.0 and row["log2_n"] == 4.0 and row["beam_width"] == 4.0
    assert row["probe_agreement"] == 0.5
    cot = config_inputs(RunConfig(policy="a", prm=None, strategy="cot"))
    assert cot["prm"] == "none" and cot["n"] == 1.0 and cot["beam_width"] == 0.0


def test_one_config_that_always_wins_is_picked() -> None:
    rng = random.Random(1)
    winner = RunConfig(policy=STRONG, prm=PRM, strategy="best_of_n", params=StrategyParams(n=4))
    losers = [c for c, _, _ in WORLD]
    records = []
    for i in range(80):
        features = {"probe_agreement": rng.random(), "probe_prm_mean": rng.random()}
        records.append(config_record(f"p{i}", 0.5, winner, 5e10, True, features))
        for config in losers:
            records.append(config_record(f"p{i}", 0.5, config, 1e9, rng.random() < 0.3, features))
    result = train_router(records, model_params=FAST, holdout=0)
    router = result.router
    for _ in range(10):
        features = {"probe_agreement": rng.random(), "probe_prm_mean": rng.random()}
        choice = router.choose(features, Budget())
        assert choice.config.key() == winner.key()
        assert choice.within_budget
        assert choice.predicted_accuracy is not None and choice.predicted_accuracy > 0.8


def test_router_routes_by_difficulty_and_respects_budget() -> None:
    records = synthetic_log(150)
    router = train_router(records, model_params=FAST, holdout=0).router
    weak_cot, weak_bon, strong_cot = (c.key() for c, _, _ in WORLD)
    easy = {"probe_agreement": 0.95, "probe_prm_mean": 0.95, "text_dataset": "synthetic"}
    medium = {"probe_agreement": 0.55, "probe_prm_mean": 0.55, "text_dataset": "synthetic"}
    hard = {"probe_agreement": 0.2, "probe_prm_mean": 0.2, "text_dataset": "synthetic"}
    # With a price on compute the router spends only where it pays off.
    lam = 1e-11  # accuracy per FLOP
    assert router.choose(easy, Budget(), lam).config.key() == weak_cot
    assert router.choose(medium, Budget(), lam).config.key() == weak_bon
    assert router.choose(hard, Budget(), lam).config.key() == strong_cot
    # A FLOP budget below the strong model's cost keeps it out, hard or not.
    capped = router.choose(hard, Budget(flops=2e10))
    assert capped.config.key() in (weak_cot, weak_bon) and capped.predicted_cost.flops <= 2e10


def test_predicted_probabilities_are_calibrated_probabilities() -> None:
    records = with_features(
        [r for r in synthetic_log(120) if r["strategy"] != "probe"],
        [r for r in synthetic_log(120) if r["strategy"] == "probe"],
        None,
    )
    rows, labels, groups = design(records)
    model = RouterModel(**FAST).fit(rows, labels, groups)
    proba = model.predict_proba(rows)
    assert proba.shape == (len(rows), 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    # calibrated: mean prediction close to the base rate
    assert abs(proba[:, 1].mean() - np.mean(labels)) < 0.05
    assert list(model.classes_) == [False, True]


def test_single_class_log_is_a_clear_error() -> None:
    records = synthetic_log(60)
    for r in records:
        r["correct"] = True
    with pytest.raises(RouterError, match=r"all .* graded runs are correct"):
        train_router(records, model_params=FAST)


def test_too_few_rows_is_a_clear_error() -> None:
    records = synthetic_log(5)
    with pytest.raises(RouterError, match="need at least 50 graded runs") as info:
        train_router(records, model_params=FAST)
    assert "\n" not in str(info.value)


def test_too_few_problems_to_calibrate_is_a_clear_error() -> None:
    config = WORLD[0][0]
    records = [config_record("only", 0.5, config, 1e9, i % 2 == 0, {}) for i in range(60)]
    with pytest.raises(RouterError, match="too little variety"):
        RouterModel(**FAST).fit(*design(records)[:2], groups=["only"] * 60)


def test_ungraded_runs_are_ignored_and_an_untrained_model_refuses() -> None:
    records = synthetic_log(60)
    for r in records[:30]:
        r["correct"] = None
    result = train_router(records, model_params=FAST, holdout=0)
    assert result.metrics["rows"] == sum(
        1 for r in records if r["strategy"] != "probe" and r["correct"] is not None
    )
    with pytest.raises(RouterError, match="not trained"):
        RouterModel().predict_proba([{}])


def test_costs_come_from_the_log_and_settings_reprice_them() -> None:
    from ratts.settings import PolicySpec, Settings

    records = [r for r in synthetic_log(30) if r["strategy"] != "probe"]
    model = CostModel.from_records(records)
    weak_cot = WORLD[0][0]
    predicted = model.predict(weak_cot)
    assert predicted.from_log and math.isclose(predicted.cost.flops, WORLD[0][1])
    settings = Settings(
        policies=[PolicySpec(name=WEAK, base_url="http://x/v1", model=WEAK, params=2e9)],
        prms=[],
    )
    tokens = predicted.cost.tokens
    repriced = model.with_settings(settings).predict(weak_cot)
    assert math.isclose(repriced.cost.flops, 2 * 2e9 * tokens)
    unseen = RunConfig(policy=WEAK, prm=None, strategy="majority", params=StrategyParams(n=8))
    prior = model.predict(unseen)
    assert not prior.from_log and prior.cost.n == 8 and prior.cost.tokens > 0
    assert record_config(records[0]).key() == weak_cot.key()
