"""Issue 12's router loop on the simulator and a real SQLite log: propensities, the
decision log of a routed run with the probe charged once, text-hash splits, the cold
start's probe answer, adaptive consistency, and artifacts this deployment cannot serve."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from test_router_support import log_to_store, synthetic_log

from ratts import Orchestrator
from ratts.endpoints.factory import build_policy
from ratts.router import Router
from ratts.router.candidates import CandidateConfig, Cost, pick
from ratts.router.coldstart import ColdStartRouter
from ratts.router.features import ROUTING, is_input
from ratts.router.registry import register
from ratts.router.splits import dedupe, split_by_text, text_key
from ratts.router.train import (
    ROUTED,
    SWEEP,
    records_from_store,
    split_problems,
    train_router,
    weight_of,
)
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimServer
from ratts.store import open_store
from ratts.strategies import get_strategy
from ratts.strategies.adaptive import majority_posterior, settled
from ratts.types import Budget, Problem, RunConfig, StrategyParams

FAST = {"max_iter": 40, "min_samples_leaf": 5}


def _cands(n: int) -> list[CandidateConfig]:
    out = []
    for i in range(n):
        config = RunConfig(
            policy=f"p{i}", prm=None, strategy="majority", params=StrategyParams(n=4)
        )
        out.append(
            CandidateConfig(config, Cost(n=4, tokens=100.0 * (i + 1), flops=0.0, usd=0.0), True)
        )
    return out


def test_exploration_rows_carry_propensities_in_0_1_that_match_the_draw() -> None:
    cands = _cands(4)
    acc = [0.9, 0.5, 0.4, 0.1]
    rng = random.Random(3)
    seen = []
    for _ in range(400):
        choice = pick(cands, acc, Budget(tokens=1000), epsilon=0.4, rng=rng)
        assert 0.0 < choice.propensity <= 1.0
        if choice.config.policy == "p0":
            assert choice.propensity == pytest.approx(0.6 + 0.1)
        else:
            assert choice.explored and choice.propensity == pytest.approx(0.1)
        seen.append(choice.config.policy)
    # the propensities are the real frequencies of the draw
    assert seen.count("p0") / len(seen) == pytest.approx(0.7, abs=0.07)
    greedy = pick(cands, acc, Budget(tokens=1000))
    assert greedy.propensity == 1.0 and not greedy.explored


def test_split_never_puts_one_text_on_both_sides() -> None:
    base = [
        Problem(id=f"q{i}", question=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(40)
    ]
    # the same questions again under fresh ids (as the API logs them), re-spaced and re-cased
    again = [
        Problem(id=f"api-{i}", question="  " + p.question.upper() + " ", answer=p.answer)
        for i, p in enumerate(base)
    ]
    train, test = split_by_text(base + again, 0.3, seed=1)
    assert {text_key(p.question) for p in train}.isdisjoint(text_key(p.question) for p in test)
    assert len(train) + len(test) == 40 == len(dedupe(base + again))
    texts = {p.id: p.question for p in base + again}
    tr, te = split_problems(texts, 0.5, 7, texts)
    for i in range(40):
        assert (f"q{i}" in te) == (f"api-{i}" in te), i
    assert tr and te and tr.isdisjoint(te)


def test_posterior_stops_when_the_leader_is_the_majority() -> None:
    assert majority_posterior(4, 0) == pytest.approx(31 / 32)
    assert majority_posterior(3, 0) == pytest.approx(15 / 16)
    assert majority_posterior(0, 0) == pytest.approx(0.5)
    assert settled(["7", "7", "7", "7"]) and not settled(["7", "7", "7"])
    assert not settled(["7", "7", "7", "8"]) and not settled([None, None, None, None])


async def test_adaptive_consistency_stops_early_and_never_exceeds_n(
    sim: SimServer, weak_policy_spec: PolicySpec
) -> None:
    policy = build_policy(weak_policy_spec)
    strategy = get_strategy("adaptive")
    try:
        easy = Problem(id="e", question="Puzzle easy: give the value. [difficulty=0.0]")
        hard = Problem(id="h", question="Puzzle hard: give the value. [difficulty=1.0]")
        params = StrategyParams(n=16, seed=0)
        out_easy = await strategy.run(easy, policy, None, params)
        out_hard = await strategy.run(hard, policy, None, params)
    finally:
        await policy.aclose()
    assert 4 <= len(out_easy.candidates) < 16  # settled after a few agreeing rounds
    assert settled([c.answer for c in out_easy.candidates])
    assert len(out_hard.candidates) <= 16
    assert out_easy.usage.policy_requests == len(out_easy.candidates) // 2


def test_cold_start_answers_from_a_unanimous_probe() -> None:
    rule = ColdStartRouter({"p": 1e8})
    free = RunConfig(policy="p", prm=None, strategy="majority", params=StrategyParams(n=4))
    beam = RunConfig(policy="p", prm="r", strategy="beam_search", params=StrategyParams(n=16))
    bon = RunConfig(policy="p", prm="r", strategy="best_of_n", params=StrategyParams(n=16))
    cands = [
        CandidateConfig(free, Cost(n=4, tokens=0.0, flops=0.0, usd=0.0), True),
        CandidateConfig(beam, Cost(n=16, tokens=900.0, flops=0.0, usd=0.0), True),
        CandidateConfig(bon, Cost(n=16, tokens=500.0, flops=0.0, usd=0.0), True),
    ]
    agree = {"probe_k": 4.0, "probe_agreement": 1.0, "probe_answered": 1.0}
    choice = rule.choose(agree, cands, Budget(tokens=2000))
    assert choice.config == free and "probe" in choice.reason
    split = {"probe_k": 4.0, "probe_agreement": 0.75, "probe_answered": 1.0}
    assert rule.choose(split, cands, Budget(tokens=2000)).config == bon  # small, not hard


async def test_routed_run_logs_its_decision_and_charges_the_probe_once(
    sim_settings: Settings, sim: SimServer
) -> None:
    async with Orchestrator(sim_settings, epsilon=0.5, seed=1) as orch:
        result = await orch.solve(
            "Puzzle 5: follow the hidden chain; give the value. [difficulty=0.6]",
            budget=Budget(n=16),
        )
        store = orch.store
        assert store is not None
        rows = store.runs()
        records = records_from_store(store)
    stats = sim.stats()
    assert len(rows) == 1
    row = rows[0]
    total = row["policy_prompt_tokens"] + row["policy_completion_tokens"] + row["prm_tokens"]
    # the row's usage is everything really spent, the probe counted once
    assert total == stats["prompt_tokens"] + stats["completion_tokens"] + stats["prm_tokens"]
    log = row["features"][ROUTING]
    assert not is_input(ROUTING)
    assert log["probe_usage"]["tokens"] == result.probe_usage.total_tokens > 0
    assert log["probe_usage"]["tokens"] + log["strategy_usage"]["tokens"] == total
    assert 0.0 < log["propensity"] <= 1.0 and isinstance(log["explored"], bool)
    assert log["chosen"] == result.config.label()
    assert any(c["chosen"] for c in log["candidates"]) and len(log["candidates"]) >= 2
    # training sees the strategy's share only, so the budget's probe subtraction is the
    # probe's one charge
    assert records[0]["tokens"] == total - log["probe_usage"]["tokens"]
    assert records[0]["source"] in (ROUTED, "routed_probe")
    assert records[0]["propensity"] == log["propensity"]


def test_served_and_evaluated_decisions_are_one_objects_output(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        log_to_store(store, synthetic_log(80))
        settings = Settings(
            db_url=f"sqlite:///{tmp_path / 'runs.db'}",
            data_dir=tmp_path / "data",
            policies=[
                PolicySpec(name="weak", base_url="http://127.0.0.1:9/v1", model="w", params=1e9),
                PolicySpec(name="strong", base_url="http://127.0.0.1:9/v1", model="s", params=7e10),
            ],
            prms=[PRMSpec(name="prm", kind="arithmetic")],
        )
        trained = train_router(records_from_store(store), model_params=FAST, holdout=0)
        register(store, trained.router, tmp_path / "routers", trained.metrics)
        router = Router(settings, store)
        features = {"probe_agreement": 0.5, "probe_prm_mean": 0.4}
        for tokens in (10**11, 10**12, 10**13):
            budget = Budget(flops=float(tokens))
            served = router.decide(features, budget)
            evaluated = router.choose(features, budget)
            assert served.config == evaluated.config
            assert served.propensity == evaluated.propensity
            assert served.router_version == evaluated.router_version == "v1"
    finally:
        store.close()


def test_router_for_unconfigured_policies_is_refused_and_the_cold_start_decides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        trained = train_router(synthetic_log(80), model_params=FAST, holdout=0)
        register(store, trained.router, tmp_path / "routers", trained.metrics)
        other = Settings(
            db_url=f"sqlite:///{tmp_path / 'runs.db'}",
            data_dir=tmp_path / "data",
            policies=[PolicySpec(name="elsewhere", base_url="http://127.0.0.1:9/v1", model="e")],
            prms=[PRMSpec(name="prm", kind="arithmetic")],
        )
        router = Router(other, store)
        with caplog.at_level("WARNING"):
            now = router.current()
        assert now.trained is None and "refused" in now.note and "weak" in now.note
        assert any(
            "refused" in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records
        )
        decision = router.decide({}, Budget(n=4), current=now)
        assert decision.reason == "cold_start" and "refused" in decision.explanation
    finally:
        store.close()


def test_routed_rows_are_reweighted_by_inverse_propensity() -> None:
    assert weight_of({"source": SWEEP, "propensity": 0.1}) == 1
    assert weight_of({"source": ROUTED, "propensity": 0.25}) == 4
    assert weight_of({"source": ROUTED, "propensity": 1e-6}) == 20


async def test_metadata_features_only_when_the_caller_gives_them(
    sim_settings: Settings, sim: SimServer
) -> None:
    problem = Problem(
        id="m1",
        question="Puzzle 9: follow the hidden chain; give the value.",
        meta={"level": 5, "subject": "Algebra", "dataset": "MATH"},
    )
    async with Orchestrator(sim_settings, log_runs=False) as orch:
        bare = await orch.solve(problem, budget=Budget(n=4))
        given = await orch.solve(problem, budget=Budget(n=4), meta={"level": 2, "subject": "Alg"})
    assert bare.features["text_subject"] == "none"
    level = bare.features["text_level"]
    assert level is None or math.isnan(level)  # unknown (NaN, logged as null)
    assert given.features["text_level"] == 2.0 and given.features["text_subject"] == "alg"


def test_training_leaves_metadata_features_out_by_default() -> None:
    records = synthetic_log(40)
    for rec in records:
        rec["meta"] = {"level": 3, "subject": "leak"}
    runs = [r for r in records if r["strategy"] != "probe"]
    from ratts.router.train import with_features

    plain = with_features(runs, [], None)
    assert all(r["features"]["text_subject"] == "none" for r in plain)
    kept = with_features(runs, [], None, use_meta=True)
    assert all(r["features"]["text_subject"] == "leak" for r in kept)


def test_off_policy_estimates_reweight_matching_rows_by_inverse_propensity() -> None:
    from ratts.router.offpolicy import estimate

    def row(chosen: str, p: float, correct: bool, source: str = ROUTED) -> dict[str, object]:
        log = {
            "chosen": chosen,
            "propensity": p,
            "candidates": [
                {"config": "A", "fits_budget": True, "predicted_cost": {"tokens": 1.0}},
                {"config": "B", "fits_budget": True, "predicted_cost": {"tokens": 2.0}},
            ],
        }
        return {"features": {ROUTING: log}, "correct": correct, "source": source}

    records = [
        row("A", 0.5, True),
        row("A", 0.5, False),
        row("B", 0.25, True),
        row("A", 1.0, True, source="routed_probe"),  # answered by the probe: left out
        {"features": {}, "correct": True, "source": SWEEP},  # not routed
    ]
    off = estimate(records, lambda features, fitting: "A")
    assert off.routed_rows == 3 and off.matched == 2
    assert off.ips == pytest.approx((1 / 0.5) / 3)  # (2*1 + 2*0 + 0) / 3
    assert off.snips == pytest.approx(0.5)  # (2*1) / (2 + 2)
    assert off.logged_accuracy == pytest.approx(2 / 3)
    assert estimate([], lambda f, c: "A").ips is None


def test_shipped_router_is_installed_only_when_its_checksum_and_problems_allow(
    tmp_path: Path,
) -> None:
    import json

    from ratts.errors import RouterError
    from ratts.router.registry import SHA_KEY, install_shipped, save_artifact

    trained = train_router(synthetic_log(80), model_params=FAST, holdout=0).router
    folder = tmp_path / "shipped"
    folder.mkdir()
    sha = save_artifact(trained, folder / "r.skops")
    meta = {SHA_KEY: sha, "training": {"problems": 80}, "train_text_hashes": [text_key("Q1")]}
    (folder / "r.json").write_text(json.dumps(meta))
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        with pytest.raises(RouterError, match="trained on 1 of these"):
            install_shipped(store, "r", folder, disjoint_from=["  q1 ", "Q2"])
        assert store.current_router_model() is None
        version, got = install_shipped(store, "r", folder, disjoint_from=["Q2"])
        assert version == "v1" and got["training"]["problems"] == 80
        assert Router(Settings(policies=[], prms=[]), store).registry is not None
        (folder / "r.json").write_text(json.dumps({**meta, SHA_KEY: "0" * 64}))
        with pytest.raises(RouterError, match="does not match its recorded sha256") as err:
            install_shipped(store, "r", folder)
        assert "\n" not in str(err.value)
    finally:
        store.close()
