"""Budgeted choice: never over budget, ties to the cheaper, lambda trade-off, exploration,
and the paper's rule at cold start."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratts.errors import ConfigError
from ratts.router import Router
from ratts.router.candidates import CandidateConfig, Cost, candidate_configs, pick
from ratts.router.coldstart import ColdStartRouter
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.types import Budget, RunConfig, StrategyParams


def cand(i: int, cost: Cost, strategy: str = "best_of_n", policy: str = "p") -> CandidateConfig:
    config = RunConfig(policy=policy, prm="r", strategy=strategy, params=StrategyParams(n=cost.n))
    return CandidateConfig(config.model_copy(update={"policy": f"{policy}{i}"}), cost, True)


costs = st.builds(
    Cost,
    n=st.sampled_from([1, 4, 16, 64, 256]),
    tokens=st.floats(0, 1e6),
    flops=st.floats(0, 1e16),
    usd=st.floats(0, 10),
)
budgets = st.builds(
    Budget,
    n=st.none() | st.integers(1, 300),
    tokens=st.none() | st.integers(0, 1_000_000),
    flops=st.none() | st.floats(0, 1e16),
    usd=st.none() | st.floats(0, 10),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.tuples(costs, st.none() | st.floats(0, 1)), min_size=1, max_size=12),
    budget=budgets,
    lam=st.none() | st.floats(0, 1e3),
    epsilon=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 10),
)
def test_choose_never_returns_a_config_over_budget(
    items: list[tuple[Cost, float | None]],
    budget: Budget,
    lam: float | None,
    epsilon: float,
    seed: int,
) -> None:
    candidates = [cand(i, c) for i, (c, _) in enumerate(items)]
    accuracies = [a for _, a in items]
    choice = pick(candidates, accuracies, budget, lam=lam, epsilon=epsilon, rng=random.Random(seed))
    fitting = [c for c in candidates if c.cost.fits(budget)]
    if fitting:
        assert choice.within_budget
        assert choice.predicted_cost.fits(budget)
    else:
        assert not choice.within_budget
        unit = (
            "usd"
            if budget.usd is not None
            else "flops"
            if budget.flops is not None
            else ("tokens" if budget.tokens is not None else "n")
        )
        assert choice.predicted_cost.value(unit) == min(c.cost.value(unit) for c in candidates)
        assert "no candidate fits" in choice.reason
    assert len(choice.ranking) == len(candidates)


def test_highest_accuracy_within_budget_wins_and_ties_go_to_the_cheaper() -> None:
    cheap = cand(0, Cost(4, 100, 1e9, 0.001))
    dear = cand(1, Cost(16, 400, 4e9, 0.004))
    dearest = cand(2, Cost(64, 1600, 1.6e10, 0.016))
    all3 = [dearest, dear, cheap]
    assert pick(all3, [0.9, 0.8, 0.5], Budget()).config == dearest.config
    assert pick(all3, [0.9, 0.8, 0.5], Budget(flops=5e9)).config == dear.config
    tie = pick(all3, [0.8, 0.8, 0.8], Budget())
    assert tie.config == cheap.config
    assert [r.config for r in tie.ranking] == [cheap.config, dear.config, dearest.config]
    # lambda: 0.1 accuracy is not worth 1.5e10 more FLOPs at 1e-11 per FLOP
    assert pick(all3, [0.9, 0.8, 0.5], Budget(), lam=1e-11, unit="flops").config == dear.config
    over = pick(all3, [0.9, 0.8, 0.5], Budget(n=2))
    assert over.config == cheap.config and not over.within_budget


def test_exploration_is_seeded_off_by_default_and_stays_in_budget() -> None:
    options = [cand(i, Cost(4 * (i + 1), 100.0 * i, 1e9 * i, 0.0)) for i in range(6)]
    acc = [0.1 * i for i in range(6)]
    assert all(not pick(options, acc, Budget()).explored for _ in range(20))
    runs = [
        [pick(options, acc, Budget(n=16), epsilon=1.0, rng=random.Random(7)).config for _ in "x"]
        for _ in range(3)
    ]
    assert runs[0] == runs[1] == runs[2]
    rng = random.Random(3)
    seen = {pick(options, acc, Budget(n=16), epsilon=1.0, rng=rng).config.policy for _ in range(60)}
    assert seen == {"p0", "p1", "p2", "p3"}  # every in-budget option, none over it
    with pytest.raises(ConfigError, match="epsilon"):
        pick(options, acc, Budget(), epsilon=2.0)


def deployment() -> Settings:
    return Settings(
        policies=[
            PolicySpec(name="small", base_url="http://s/v1", model="s", params=1.5e9),
            PolicySpec(name="large", base_url="http://l/v1", model="l", params=7e10),
        ],
        prms=[PRMSpec(name="prm", kind="arithmetic")],
    )


def test_cold_start_is_the_papers_rule() -> None:
    cfg = deployment()
    rule = ColdStartRouter.from_settings(cfg)
    router = Router(cfg)  # no store: nothing trained, so the rule decides
    easy = {"probe_agreement": 1.0, "probe_prm_mean": 0.9}
    hard = {"probe_agreement": 0.25, "probe_prm_mean": 0.2}
    # issue 12's rule: < 7B Best-of-N easy, beam hard; 7B-72B DVTS easy, beam hard
    small = router.choose(easy, Budget(n=16), policy="small")
    assert (small.config.strategy, small.config.params.n) == ("best_of_n", 16)
    small_hard = router.choose(hard, Budget(n=16), policy="small")
    assert (small_hard.config.strategy, small_hard.config.params.n) == ("beam_search", 16)
    large = router.choose(easy, Budget(n=16), policy="large")
    assert (large.config.strategy, large.config.params.n) == ("dvts", 16)
    large_hard = router.choose(hard, Budget(n=64), policy="large")
    assert (large_hard.config.strategy, large_hard.config.params.n) == ("beam_search", 64)
    assert "cold start" in large_hard.reason and large_hard.predicted_accuracy is None
    assert rule.strategy_for("huge", "hard") == "beam_search"  # unknown size counts as small
    assert ColdStartRouter({"huge": 7.2e10}).strategy_for("huge", "hard") == "best_of_n"
    assert rule.difficulty(hard) == "hard" and rule.difficulty(easy) == "not hard"
    assert rule.difficulty({}) == "unknown"
    # the largest N within budget, whatever the unit
    capped = router.choose(easy, Budget(n=20), policy="small")
    assert capped.config.params.n == 16 and capped.within_budget


def test_cold_start_without_probe_features_and_with_nothing_in_budget() -> None:
    cfg = deployment()
    router = Router(cfg)
    unknown = router.choose({}, Budget(n=4), policy="large")
    assert unknown.config.strategy == "dvts" and unknown.config.params.n == 4  # 70B: 7B-72B
    none_fit = router.choose({}, Budget(tokens=1), policy="small")
    assert not none_fit.within_budget and "no candidate fits" in none_fit.reason
    assert router.probe_spec().policy == "small" and router.probe_spec().k == 4


def test_candidate_configs_cover_the_deployment() -> None:
    configs = candidate_configs(deployment(), ns=(4, 16))
    labels = {c.label() for c in configs}
    assert "cot(N=1)@small" in labels and "majority(N=16)@large" in labels
    assert "beam_search(N=4,M=4)@small+prm" in labels and "best_of_n(N=16)@large+prm" in labels
    assert "dvts(N=16,M=4)@large+prm" in labels  # issue 11: DVTS is a default candidate
    assert "adaptive(N=16)@large" in labels
    assert len(configs) == 2 * (1 + 2 + 2 + 2 + 2 + 2)
    with pytest.raises(ConfigError, match="unknown policy"):
        candidate_configs(deployment(), policies=["nope"])
